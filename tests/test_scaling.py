"""Scaling figures from literal numbers (bench.scaling.figures), the weak-scaling config rule and the chart helpers."""

from __future__ import annotations

import pytest

from bench.core.config import ConfigError, make_config
from bench.core.config import weak_overrides
from bench.core.exitcodes import worst
from bench.scaling.figures import LR_RULE, format_table, summarize
from bench.scaling.sweep_plot import ERROR_BAR_LABEL, doubles, plot_sweep, spread, sweep_figure, sweep_title


def _step(data: float, compute: float, allreduce: float, loop: float) -> dict:
    parts = {"data_wait_s": data, "compute_s": compute, "allreduce_s": allreduce, "loop_overhead_s": loop,
             "step_s": data + compute + allreduce + loop}
    return {k: {"median": v, "p90": v, "mean": v, "sum": v} for k, v in parts.items()}


def _result(fit: float, ranks: int, nodes: int = 1, scaling: str = "strong", status: str = "ok",
            throughput: float = 100.0, sanity: bool = True, breakdown=(0.001, 0.008, 0.0, 0.001)) -> dict:
    per_rank = [{"rank": r, "hostname": f"node{1 + r * nodes // ranks}", "epochs": [_step(*breakdown)]}
                for r in range(ranks)]
    return {"case": "ddp", "status": status, "run_id": f"ddp-{ranks}-{nodes}-{fit}", "profiled": False,
            "config": {"case": "ddp", "devices": ranks // nodes, "num_nodes": nodes, "scaling": scaling,
                       "global_batch_size": 64, "train_samples": 1000, "lr": 0.02},
            "world": {"world_size": ranks, "num_nodes": nodes, "hostnames": [p["hostname"] for p in per_rank],
                      "per_device_batch_size": 64 // ranks},
            "metrics": {"fit_s": fit, "throughput_img_s": throughput, "optimizer_steps": 16,
                        "step_breakdown": {"per_rank": per_rank}} if status == "ok" else {},
            "sanity": {"passed": sanity}}


def test_strong_speedup_and_efficiency_from_medians():
    points = summarize([_result(100, 1), _result(120, 1), _result(80, 1),  # T1 = median 100
                        _result(60, 2), _result(40, 2), _result(50, 2),  # T2 = 50
                        _result(40, 4, nodes=2)])
    by = {(p["devices"], p["num_nodes"]): p for p in points}
    assert by[1, 1]["speedup"] == pytest.approx(1.0) and by[1, 1]["efficiency"] == pytest.approx(1.0)
    assert by[2, 1]["speedup"] == pytest.approx(2.0) and by[2, 1]["efficiency"] == pytest.approx(1.0)
    assert by[4, 2]["speedup"] == pytest.approx(2.5) and by[4, 2]["efficiency"] == pytest.approx(0.625)
    assert by[4, 2]["weak_efficiency"] is None and by[4, 2]["label"] == "2x2"
    assert by[1, 1]["fit_s"]["min"] == 80 and by[1, 1]["fit_s"]["max"] == 120 and by[1, 1]["fit_s"]["n"] == 3
    assert by[1, 1]["fit_s"]["cv"] == pytest.approx(20 / 100)  # sample stdev 20 of mean 100
    assert sorted(set(by[4, 2]["hostnames"])) == ["node1", "node2"]


def test_two_geometries_of_one_world_size_are_separate_points():
    points = summarize([_result(100, 1), _result(50, 2, nodes=1), _result(80, 2, nodes=2)])
    by = {(p["devices"], p["num_nodes"]): p for p in points}
    assert len(points) == 3 and by[2, 1]["speedup"] == pytest.approx(2.0)
    assert by[2, 2]["speedup"] == pytest.approx(1.25) and by[2, 2]["label"] == "2x1"


def test_weak_efficiency_and_throughput_per_device():
    points = summarize([_result(10, 1, scaling="weak", throughput=100),
                        _result(12.5, 4, nodes=2, scaling="weak", throughput=320)])
    four = next(p for p in points if p["devices"] == 4)
    assert four["weak_efficiency"] == pytest.approx(0.8)  # T1/TN = 10/12.5
    assert four["speedup"] is None and four["efficiency"] is None  # speedup does not apply
    assert four["per_device_img_s"] == pytest.approx(80.0)


def test_invalid_runs_are_not_figures_and_no_reference_gives_no_speedup():
    points = summarize([_result(100, 1, status="failed"), _result(30, 1, sanity=False), _result(50, 2)])
    one = next(p for p in points if p["devices"] == 1)
    two = next(p for p in points if p["devices"] == 2)
    assert one["fit_s"] is None and one["valid"] == 0 and one["runs"] == 2
    assert two["speedup"] is None and two["efficiency"] is None


def test_strong_and_weak_points_are_never_pooled():
    points = summarize([_result(100, 1), _result(10, 1, scaling="weak"), _result(50, 2), _result(20, 2, scaling="weak")])
    assert {(p["scaling"], p["devices"]): p["fit_s"]["n"] for p in points} == \
        {("strong", 1): 1, ("strong", 2): 1, ("weak", 1): 1, ("weak", 2): 1}
    assert next(p for p in points if p["scaling"] == "weak" and p["devices"] == 2)["weak_efficiency"] == 0.5


def test_breakdown_shares_of_the_median_step():
    points = summarize([_result(100, 2, breakdown=(0.002, 0.005, 0.002, 0.001))])
    b = points[0]["breakdown"]
    assert b["step_s"] == pytest.approx(0.010)
    assert (b["data_wait_share"], b["compute_share"], b["allreduce_share"]) == pytest.approx((0.2, 0.5, 0.2))
    table = format_table(points)
    assert "| ddp" in table and "20 %" in table and "50 %" in table


def test_weak_overrides_scale_batch_images_and_lr_by_devices():
    over = weak_overrides("smoke", {"case": "ddp", "data": "synthetic", "devices": 2, "num_nodes": 2, "scaling": "weak",
                                    "train_samples": 1000, "global_batch_size": 48, "lr": None})
    assert (over["global_batch_size"], over["train_samples"], over["lr"]) == (192, 4000, pytest.approx(0.08))
    config = make_config("smoke", **over)
    assert config.per_device_batch_size == 48 and config.scaling == "weak"
    assert weak_overrides("smoke", {"case": "ddp", "scaling": "strong", "devices": 3}) == \
        {"case": "ddp", "scaling": "strong", "devices": 3}
    assert "lr_1 x N" in LR_RULE


def test_weak_scaling_needs_train_samples_and_scaling_is_validated():
    with pytest.raises(ConfigError, match="--train-samples"):
        weak_overrides("cpu", {"case": "ddp", "data": "synthetic", "devices": 2, "scaling": "weak"})
    with pytest.raises(ConfigError, match="scaling"):
        make_config("smoke", data="synthetic", scaling="diagonal")


def test_log2_axis_when_points_double_and_worst_exit_status():
    assert doubles([1, 2, 2, 4]) and doubles([1, 2]) and not doubles([1, 2, 3]) and not doubles([4])
    assert worst([0, 3, 1]) == 1 and worst([0, 4, 1]) == 4 and worst([0, 2]) == 2 and worst([0, 0]) == 0
    assert worst([0, -9]) == 1


def test_chart_is_written(tmp_path):
    points = summarize([_result(100, 1), _result(50, 2), _result(40, 4, nodes=2)])
    path = plot_sweep(points, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_sweep([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_chart_has_error_bars_from_the_repeats_a_title_of_what_ran_and_legends_off_the_data():
    runs = [_result(100, 1), _result(120, 1), _result(80, 1), _result(60, 2), _result(40, 2), _result(50, 2)]
    for r in runs:
        r["config"]["preset"] = "smoke"
        r["environment"] = {"gpu_names": [], "cpu_model": "AMD EPYC", "cpu_count": 2, "cpus_usable": 1}
    points = summarize(runs)
    two = next(p for p in points if p["devices"] == 2)  # T1 = 100 (median), TN 40..60 around 50: speedup 2
    assert spread(two, "speedup") == (pytest.approx(2 - 100 / 60), pytest.approx(100 / 40 - 2))
    title = sweep_title(points, runs)
    assert title == "Strong scaling of ddp, preset smoke, on CPU AMD EPYC, usable cores: 1 (hosts: node1)"
    fig = sweep_figure(points, title)
    curve, bars = fig.axes
    assert fig.get_suptitle() == title
    assert ERROR_BAR_LABEL in curve.get_legend_handles_labels()[1]
    for ax in (curve, bars):  # legends under the axes: outside the data area, so they cover no bar or point
        anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert anchor.y0 < 0
    labels = [t for t in curve.texts if t.get_gid() == "efficiency"]
    assert [t.get_text() for t in labels] == ["1x1: 100 %", "1x2: 100 %"]
    assert all(t.get_position() == (8, -14) for t in labels)  # offset right and below the rising line
    assert spread(summarize([_result(100, 1)])[0], "speedup") == (0.0, 0.0)  # one run: no bar invented


def test_report_adds_the_scaling_table_and_chart_for_several_world_sizes(tmp_path):
    import json

    from bench.report.report import write_report

    files = []
    for i, r in enumerate([_result(100, 1), _result(50, 2), _result(40, 4, nodes=2)]):
        r["schema"], r["schema_version"] = "cifar-bench/result", 1
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(r))
    md, _ = write_report(files, tmp_path / "out")
    text = md.read_text()
    assert "## Scaling" in text and "![scaling](scaling.png)" in text and (tmp_path / "out" / "scaling.png").is_file()
    assert "| 2.50x " in text and "| 62 % " in text  # the 4-rank point: speedup 100 s / 40 s, efficiency 2.5 / 4
    one = write_report(files[:1], tmp_path / "single")[0].read_text()
    assert "## Scaling" not in one and not (tmp_path / "single" / "scaling.png").exists()
