"""Tests of bench.report: the publishable table (markdown and terminal), the figure, atomic writing, bad input."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from bench import files, report
from bench.baselines import record_baseline, write_baseline
from bench.compare import load_results

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "baselines" / "a100-2node.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CONFIG = {"preset": "smoke", "model": "simple_cnn", "data": "synthetic", "data_kind": "synthetic",
          "epochs": 1, "global_batch_size": 64, "train_samples": 2048, "test_samples": 500,
          "precision": "32-true", "num_workers": 0, "pin_memory": False, "persistent_workers": False,
          "accelerator": "cpu"}
ENV = {"gpu_names": [], "gpu_count": 0, "cpu_model": "AMD EPYC", "cpu_count": 2, "torch": "2.14.1+cu130",
       "lightning": "2.6.6", "python": "3.11.7", "cuda_driver": None, "container_image": None,
       "container_runtime": None, "git_commit": "0123456789abcdef0123", "git_dirty": True}


def result(case: str, samples: list[float], status: str = "ok", devices: int = 1, nodes: int = 1,
           reason: str | None = None, run: int = 0, knobs: dict | None = None, **config: object) -> dict:
    return {"schema": "cifar-bench/result", "schema_version": 1, "run_id": f"{case}-{run}", "case": case,
            "status": status, "reason": reason, "profiled": False, "test_knobs": knobs or {},
            "config": {**CONFIG, "case": case, "devices": devices, "num_nodes": nodes, **config},
            "metrics": ({"fit_s": samples[0], "fit_s_samples": samples, "throughput_img_s": 2048 / samples[0],
                         "test_accuracy": 0.1, "accuracy_meaningful": False} if status == "ok" else {}),
            "world": {"world_size": devices * nodes if case == "ddp" else 1, "num_nodes": nodes,
                      "devices_per_node": devices, "hostnames": ["vm"] * (devices * nodes)},
            "environment": ENV, "ended_utc": "2026-01-01T00:00:00+00:00"}


def write(folder: Path, *results: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, r in enumerate(results):
        path = folder / f"{r['run_id']}-{i}.json"
        path.write_text(json.dumps(r))
        paths.append(path)
    return paths


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the first markdown table, as lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


def column(markdown: str, name: str) -> list[str]:
    i = header(markdown).index(name)
    return [row[i] for row in table_rows(markdown)]


def only_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the reference baseline ---------------------------------------------------------------------

def test_reference_baseline_gives_the_three_row_published_table(tmp_path):
    md_path, png_path = report.write_report([REFERENCE], tmp_path / "out")
    md = md_path.read_text()
    rows = table_rows(md)
    assert len(rows) == 3
    assert header(md)[:3] == ["Configuration", "Training Time", "Speedup"]
    assert column(md, "Configuration") == ["1 GPU (baseline)", "DDP, 2 nodes x 2 GPUs", "DP, 2 GPUs on 1 node"]
    assert column(md, "Training Time") == ["120 s", "65 s", "141 s"]
    assert column(md, "Speedup") == ["1.00x", "1.85x", "0.85x"]
    assert column(md, "Scaling efficiency") == ["100.0%", "46.2%", "42.6%"]  # as bench.compare formats it
    assert column(md, "Devices") == ["1", "4", "2"] and column(md, "Nodes") == ["1", "2", "1"]
    assert "CV of fit_s" not in header(md)  # one sample per case
    assert not any(h.startswith("vs ") for h in header(md))  # no --baseline
    env = md.split("## Environment", 1)[1]
    for label in ("GPUs", "Driver", "torch", "lightning", "Image", "Git commit"):
        assert f"- {label}: unknown" in env
    assert "- Nodes: 2" in env


def test_reference_png_is_a_real_figure(tmp_path):
    _, png_path = report.write_report([REFERENCE], tmp_path)
    data = png_path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 15_000  # two panels of bars, labels and a legend, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 200
    assert only_outputs(tmp_path) == ["report.md", "report.png"]  # no temp files left


def test_terminal_table_has_the_same_rows():
    results = load_results([REFERENCE])
    text = report.format_terminal_table(results)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Configuration", "Training", "Time", "Speedup"]
    for config, secs, speed in (("1 GPU (baseline)", "120 s", "1.00x"), ("DDP, 2 nodes x 2 GPUs", "65 s", "1.85x"),
                                ("DP, 2 GPUs on 1 node", "141 s", "0.85x")):
        (line,) = [line for line in lines if line.startswith(config)]
        assert re.search(rf"\s{secs}\s+{re.escape(speed)}\s", line), line


def test_cli_prints_table_then_paths(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    report.add_report_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["report", str(REFERENCE), "--out", str(tmp_path / "r")])
    assert args.func is report.cmd_report
    assert report.cmd_report(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Configuration") and "65 s" in "\n".join(out[:5])
    assert out[-2:] == [f"report: {tmp_path / 'r' / 'report.md'}", f"figure: {tmp_path / 'r' / 'report.png'}"]


# --- current runs: CPU labels, repeats, skipped cases, comparison column --------------------------

def test_cpu_runs_repeats_show_cv_and_skipped_case_is_listed(tmp_path):
    paths = write(tmp_path / "runs",
                  *[result("baseline", [s], run=i) for i, s in enumerate((10.0, 11.0, 12.0))],
                  *[result("ddp", [s], devices=2, run=i) for i, s in enumerate((6.0, 6.0, 6.0))],
                  result("dp", [], status="skipped", reason="DataParallel needs 2 or more CUDA devices"))
    md_path, _ = report.write_report(paths, tmp_path / "out")
    md = md_path.read_text()
    assert column(md, "Configuration") == ["1 process (baseline)", "DDP, 2 processes on 1 node"]
    assert column(md, "Training Time") == ["11 s", "6.0 s"]
    assert column(md, "Speedup") == ["1.00x", "1.83x"]
    assert column(md, "Scaling efficiency") == ["100.0%", "91.7%"]
    assert column(md, "CV of fit_s") == ["9.1% (n=3)", "0.0% (n=3)"]  # stdev 1 / mean 11
    assert column(md, "Test accuracy") == ["10.0% (synthetic)"] * 2
    assert "- dp: skipped - DataParallel needs 2 or more CUDA devices" in md
    assert "- GPUs: none (CPU: AMD EPYC, 2 cores)" in md
    assert "- torch: 2.14.1+cu130" in md and "- lightning: 2.6.6" in md
    assert "- Git commit: 0123456789ab (dirty)" in md
    assert "- Nodes: 1 (hosts: vm)" in md
    terminal = report.format_terminal_table(load_results(paths))
    assert "not run: dp: skipped - DataParallel needs 2 or more CUDA devices" in terminal
    assert "9.1% (n=3)" in terminal


def test_pytest_benchmark_file_with_skipped_entry(tmp_path):
    suite = {"benchmarks": [{"name": "test_baseline", "extra_info": {"result": result("baseline", [5.0])}}],
             "skipped": [{"case": "dp", "reason": "needs 2 GPUs"}]}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    md = report.build_report(load_results([path]), None, None)
    assert column(md, "Training Time") == ["5.0 s"]
    assert "- dp: skipped - needs 2 GPUs" in md


def test_baseline_column_gives_change_and_verdict(tmp_path):
    before = [result("baseline", [s], run=i) for i, s in enumerate((10.0, 10.1, 9.9))]
    base_path = write_baseline(record_baseline(before, name="mine", source="test"), tmp_path / "mine.json")
    now = write(tmp_path / "now", *[result("baseline", [s], run=i) for i, s in enumerate((13.0, 13.1, 12.9))])
    md_path, _ = report.write_report(now, tmp_path / "out", baseline=str(base_path))
    md = md_path.read_text()
    assert column(md, "vs mine") == ["+30.0% (regression)"]
    same = write(tmp_path / "same", *before)
    md = report.write_report(same, tmp_path / "out2", baseline=base_path, tolerance=5)[0].read_text()
    assert column(md, "vs mine") == ["+0.0% (unchanged)"]


def test_test_knobs_are_flagged(tmp_path):
    paths = write(tmp_path, result("baseline", [5.0], knobs={"BENCH_TEST_STEP_SLEEP_S": 0.01}))
    md = report.build_report(load_results(paths), None, None)
    assert "NOT A REAL BENCHMARK" in md and "BENCH_TEST_STEP_SLEEP_S=0.01" in md


def test_case_without_baseline_case_has_no_speedup(tmp_path):
    paths = write(tmp_path, result("ddp", [5.0], devices=2))
    md = report.build_report(load_results(paths), None, None)
    assert column(md, "Speedup") == ["-"] and column(md, "Scaling efficiency") == ["-"]
    assert "no ok 'baseline' case" in md


# --- atomic writing -----------------------------------------------------------------------------

def test_failed_write_keeps_old_report_and_leaves_no_temp_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.write_report([REFERENCE], out)
    old_md, old_png = (out / "report.md").read_bytes(), (out / "report.png").read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(write(tmp_path / "runs", result("baseline", [3.0])), out)
    assert (out / "report.md").read_bytes() == old_md and (out / "report.png").read_bytes() == old_png
    assert only_outputs(out) == ["report.md", "report.png"]


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        report.write_report([tmp_path / "missing.json"], out)
    assert not out.exists()


# --- bad input ----------------------------------------------------------------------------------

def test_not_json_is_a_helpful_value_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON.*pass per-run result JSON files"):
        report.write_report([bad], tmp_path / "out")


def test_unknown_schema_and_missing_file(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ValueError, match=r"unknown input \(schema 'something-else'\).*baseline file"):
        report.write_report([other], tmp_path / "out")
    with pytest.raises(ValueError, match=r"no such file"):
        report.write_report([tmp_path / "nope.json"], tmp_path / "out")


def test_no_inputs_and_unknown_baseline(tmp_path):
    with pytest.raises(ValueError, match="no input files"):
        report.write_report([], tmp_path / "out")
    with pytest.raises(ValueError, match=r"baseline 'no-such-baseline' not found.*available.*a100-2node"):
        report.write_report([REFERENCE], tmp_path / "out", baseline="no-such-baseline")
    with pytest.raises(ValueError, match="no results to report"):
        report.build_report([], None, None)


def test_runs_of_one_case_with_different_devices_are_refused(tmp_path):
    paths = write(tmp_path, result("ddp", [5.0], devices=2), result("ddp", [3.0], devices=4, run=1))
    with pytest.raises(ValueError, match=r"case 'ddp' used different devices/nodes.*report them separately"):
        report.write_report(paths, tmp_path / "out")


def test_runs_of_one_case_with_different_work_are_refused(tmp_path):
    paths = write(tmp_path, result("baseline", [5.0]), result("baseline", [9.0], run=1, epochs=2))
    with pytest.raises(ValueError, match=r"case 'baseline' did different work \(epochs differ\)"):
        report.write_report(paths, tmp_path / "out")


def test_cli_bad_input_raises_value_error_for_the_cli_to_map(tmp_path):
    ap = argparse.ArgumentParser()
    report.add_report_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["report", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no such file"):
        report.cmd_report(args)
    assert not (tmp_path / "o").exists()
    assert os.path.exists(REFERENCE)


def test_report_shows_where_the_time_goes_per_case():
    def part(ms: float) -> dict:
        return {"median": ms / 1000, "p90": 0.0, "mean": 0.0, "sum": 0.0}

    epoch = {"step_s": part(40), "data_wait_s": part(10), "compute_s": part(20), "allreduce_s": part(6),
             "loop_overhead_s": part(4)}
    ddp = result("ddp", [10.0], devices=2)
    ddp["metrics"]["step_breakdown"] = {"per_rank": [{"rank": 0, "epochs": [epoch]},
                                                     {"rank": 1, "epochs": [{**epoch, "step_s": part(60)}]}]}
    text = report.build_report([result("baseline", [20.0]), ddp], None, None)
    section = text.split("## Where the time goes")[1].split("## Environment")[0]
    # step: mean of the ranks' medians (40, 60) = 50 ms; parts in % of it
    assert "| ddp | 2 | 50.00 | 10.00 (20 %) | 20.00 (40 %) | 6.00 (12 %) | 4.00 (8 %) |" in section
    assert "| baseline" not in section  # no breakdown recorded: no row, nothing invented
    assert "Where the time goes" not in report.build_report([result("baseline", [20.0])], None, None)
