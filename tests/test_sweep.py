"""`cifar-bench sweep` end to end on CPU (synthetic data, tiny sizes): one result per run, summary, chart.

Each sweep trains a few steps per point in fresh processes (about 1 minute per sweep on 2 cores).
"""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.results.resultfile import load_result
from tests.conftest import run_cli

TINY = ("--data", "synthetic", "--preset", "smoke", "--train-samples", "256", "--test-samples", "100",
        "--global-batch-size", "32")


def _results(folder):
    return [load_result(p) for p in sorted(folder.glob("ddp-*.json"))]


def test_strong_sweep_writes_one_result_per_run_and_the_summary(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--case", "ddp", "--devices", "1,2", "--repeats", "2", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = _results(out)
    assert len(results) == 4 and {r["status"] for r in results} == {"ok"}
    assert sorted(r["world"]["world_size"] for r in results) == [1, 1, 2, 2]
    assert {r["config"]["scaling"] for r in results} == {"strong"}
    assert {r["world"]["global_batch_size"] for r in results} == {32}  # same total work at every point
    order = [line.split("point ")[1].split(",")[0] for line in proc.stdout.splitlines() if line.startswith("sweep: point")]
    assert order == ["1x1", "1x2", "1x1", "1x2"]  # repeats interleaved
    summary = json.loads((out / "sweep.json").read_text())
    points = {p["devices"]: p for p in summary["points"]}
    assert set(points) == {1, 2} and points[2]["fit_s"]["n"] == 2 and points[2]["valid"] == 2
    assert points[1]["speedup"] == 1.0
    t1, t2 = points[1]["fit_s"]["median"], points[2]["fit_s"]["median"]
    assert abs(points[2]["speedup"] - t1 / t2) < 1e-9 and abs(points[2]["efficiency"] - t1 / t2 / 2) < 1e-9
    assert points[2]["breakdown"]["allreduce_share"] > 0 and points[2]["weak_efficiency"] is None
    assert "| ddp" in (out / "sweep.md").read_text() and "![scaling](sweep.png)" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weak_sweep_keeps_per_device_batch_and_steps(tmp_path):
    out = tmp_path / "weak"
    proc = run_cli("sweep", "--case", "ddp", "--devices", "1,2", "--scaling", "weak", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by = {r["world"]["world_size"]: r for r in _results(out)}
    assert by[1]["world"]["per_device_batch_size"] == by[2]["world"]["per_device_batch_size"] == 32
    assert by[2]["world"]["global_batch_size"] == 64 and by[2]["config"]["train_samples"] == 512
    assert by[1]["metrics"]["optimizer_steps"] == by[2]["metrics"]["optimizer_steps"] == 8
    assert by[2]["config"]["lr"] == 2 * by[1]["config"]["lr"] and by[2]["config"]["scaling"] == "weak"
    summary = json.loads((out / "sweep.json").read_text())
    two = next(p for p in summary["points"] if p["devices"] == 2)
    assert two["speedup"] is None and two["weak_efficiency"] > 0 and "lr_1 x N" in summary["lr_rule"]


def test_bad_points_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    out = tmp_path / "bad"
    assert main(["sweep", "--case", "ddp", "--devices", "1,3", "--out", str(out), *TINY]) == 2
    assert "not divisible by the 3" in capsys.readouterr().err and not out.exists()
    assert main(["sweep", "--case", "ddp", "--points", "1x1,2x1", "--out", str(out), *TINY]) == 2
    assert "sbatch slurm/scaling.sh" in capsys.readouterr().err and not out.exists()
    assert main(["sweep", "--case", "ddp", "--devices", "1,2", "--points", "1x1", *TINY]) == 2
    assert "--devices 1,2,4 (one node) or --points" in capsys.readouterr().err
    assert main(["sweep", "--case", "ddp", "--devices", "1,2", "--num-nodes", "2", *TINY]) == 2
    assert "--points NODESxDEVICES" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--case", "ddp", "--devices", "1,x", *TINY])
    assert exc.value.code == 2 and "comma list" in capsys.readouterr().err


def test_marked_interrupted_points_keep_their_geometry_and_are_no_figures(tmp_path, capsys):
    out = tmp_path / "marked"
    assert main(["sweep", "--case", "ddp", "--points", "1x1,2x2", "--scaling", "weak", "--out", str(out),
                 "--mark-interrupted", "stopped by the Slurm time limit (SIGUSR1)", *TINY]) == 0
    marked = _results(out)
    assert {r["status"] for r in marked} == {"interrupted"} and len(marked) == 2
    assert {(r["config"]["num_nodes"], r["config"]["devices"]) for r in marked} == {(1, 1), (2, 2)}
    assert {r["config"]["global_batch_size"] for r in marked} == {32, 128}  # weak: 32 per device
    assert main(["sweep", "--from-results", *map(str, sorted(out.glob("ddp-*.json"))), "--out", str(out)]) == 1
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert {(p["devices"], p["valid"]) for p in points} == {(1, 0), (4, 0)}
    assert all(p["fit_s"] is None and p["weak_efficiency"] is None for p in points)
    # a glob of the folder also matches the sweep's own sweep.json: skipped, not an unknown input
    assert main(["sweep", "--from-results", *map(str, sorted(out.glob("*.json"))), "--out", str(out)]) == 1
    assert len(json.loads((out / "sweep.json").read_text())["points"]) == 2
    (out / "notes.json").write_text('{"schema": "something-else"}')
    assert main(["sweep", "--from-results", str(out / "notes.json"), "--out", str(out)]) == 2  # bad input
    assert "unknown input" in capsys.readouterr().err


def test_every_run_option_reaches_the_runs_once():
    from bench.cli import parser
    from bench.scaling.sweep import run_argv

    args = parser().parse_args(["sweep", "--case", "ddp", "--devices", "1,2", "--no-step-breakdown", "--save-weights",
                                "--lr", "0.1", "--scaling", "weak", "--out", "x", "--repeats", "2", *TINY])
    words = run_argv(args)
    assert words[:2] == ["--case", "ddp"] and "--no-step-breakdown" in words and "--save-weights" in words
    assert words[words.index("--lr") + 1] == "0.1" and words[words.index("--scaling") + 1] == "weak"
    assert not {"--devices", "--num-nodes", "--out", "--repeats", "--profile"} & set(words)  # the sweep sets these
