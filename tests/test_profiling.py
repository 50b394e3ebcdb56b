"""--profile: the window arithmetic, and real 2-rank CPU runs with one trace per global rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.measure.profiling import fit_window
from tests.conftest import REPO, run_cli, run_result


@pytest.mark.parametrize("total, expected", [
    (100, (5, 2, 3)),  # fits: unchanged
    (7, (2, 2, 3)),  # wait shrinks first
    (4, (0, 1, 3)),  # then warm-up, to 1 (Lightning's PyTorchProfiler would replace the schedule here)
    (3, (0, 1, 2)),  # then the active steps
    (2, (0, 1, 1)),
])
def test_fit_window_shrinks_wait_then_warmup_then_active(total, expected):
    assert fit_window(total, wait=5, warmup=2, active=3) == expected


@pytest.mark.parametrize("total, warmup, message", [(1, 2, "at least 2"), (0, 2, "at least 2"),
                                                    (100, 0, "warmup >= 1")])
def test_fit_window_refuses_what_cannot_give_a_trace(total, warmup, message):
    with pytest.raises(ValueError, match=message):
        fit_window(total, 5, warmup, 3)


def _profiled_run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "runs"
    proc = run_cli("run", "--data", "synthetic", "--preset", "smoke", "--test-samples", "200", "--profile",
                   "--out", str(out), *args)
    result = run_result(proc)[1]
    assert "profile: " in proc.stdout
    return result


def _check_rank_files(entry: dict, rank: int) -> list[str]:
    trace = Path(entry["trace"])
    assert trace.parent.name == f"rank{rank}" and trace.name.startswith(f"rank{rank}.")
    assert trace.name.endswith(".pt.trace.json")  # the name TensorBoard's profile plugin looks for
    assert list(trace.parent.glob("*.pt.trace.json")) == [trace]  # one trace per rank, nothing overwritten
    events = json.loads(trace.read_text())["traceEvents"]  # Chrome trace JSON (Perfetto opens it)
    assert len(events) > 100 and entry["trace_bytes"] == trace.stat().st_size < 8_000_000
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == entry["schedule"]["active"], steps  # every recorded step is in the trace
    table = json.loads(Path(entry["tables"]["json"]).read_text())
    assert table["rank"] == rank and table["time_unit"] == "us"
    assert "Self CPU" in Path(entry["tables"]["txt"]).read_text()
    return [row["name"] for row in table["self_cpu"]]


def test_two_rank_profile_writes_one_trace_per_global_rank(tmp_path):
    from tbparse import SummaryReader

    r = _profiled_run(tmp_path, "--case", "ddp", "--devices", "2", "--train-samples", "1280")
    assert r["profiled"] is True and r["status"] == "ok"
    per_rank = r["profile"]["per_rank"]
    assert [e["rank"] for e in per_rank] == [0, 1]
    assert all(e["schedule"] == {"wait": 5, "warmup": 2, "active": 3, "total_steps": 20} for e in per_rank)
    for rank, entry in enumerate(per_rank):
        names = _check_rank_files(entry, rank)
        assert any("convolution" in n for n in names), names  # conv layers
        assert any(n in ("aten::addmm", "aten::linear", "aten::mm") for n in names), names  # fully connected
    text = Path(per_rank[0]["tables"]["txt"]).read_text()
    assert text.startswith("rank 0: totals over the 3 recorded training step(s) 7..9 of 20")
    assert "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__" in text  # whole names, not cut at 55
    chart = Path(per_rank[0]["chart"])  # top operators by self time per rank, drawn by rank 0 from both traces
    assert chart == tmp_path / "runs" / "profiles" / r["run_id"] / "top_ops.png" and chart.read_bytes()[:4] == b"\x89PNG"
    texts = SummaryReader(str(tmp_path / "runs" / "tensorboard" / r["run_id"])).text
    assert sorted(texts.tag) == ["profiler/rank0", "profiler/rank1"]
    assert all("Self CPU" in value for value in texts.value)


def test_short_run_keeps_a_window_and_compare_refuses_profiled_times(tmp_path):
    r = _profiled_run(tmp_path, "--train-samples", "192")  # 3 steps < wait 5 + warm-up 2 + active 3
    entry = r["profile"]["per_rank"][0]
    assert entry["requested"] == {"wait": 5, "warmup": 2, "active": 3}
    assert entry["schedule"] == {"wait": 0, "warmup": 1, "active": 2, "total_steps": 3}
    names = _check_rank_files(entry, 0)
    assert any("convolution" in n for n in names), names  # the recorded steps are really in the trace
    proc = run_cli("compare", r["path"] if "path" in r else str(tmp_path / "runs" / f"{r['run_id']}.json"),
                   "--baseline", str(REPO / "baselines" / "cpu-2core-smoke.json"))
    assert proc.returncode == 5, proc.stdout + proc.stderr  # no valid run of the case: nothing judged
    assert "invalid" in proc.stdout and "profiled" in proc.stdout and "regression" not in proc.stdout
    proc = run_cli("baseline", "record", str(tmp_path / "runs" / f"{r['run_id']}.json"), "--name",
                   "never-written")
    assert proc.returncode == 2 and "profiled" in proc.stderr
    assert not (REPO / "baselines" / "never-written.json").exists()


def test_profile_window_is_validated():
    proc = run_cli("run", "--data", "synthetic", "--profile", "--profile-active", "0")
    assert proc.returncode == 2 and "--profile-active >= 1" in proc.stderr
    proc = run_cli("run", "--data", "synthetic", "--profile", "--profile-warmup", "0")
    assert proc.returncode == 2 and "--profile-warmup >= 1" in proc.stderr
    proc = run_cli("run", "--data", "synthetic", "--profile", "--train-samples", "64")  # 1 step of 64
    assert proc.returncode == 2 and "at least 2 training steps" in proc.stderr and "Traceback" not in proc.stderr
