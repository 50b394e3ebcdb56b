"""Per-step breakdown: the interval arithmetic (literal numbers) and real CPU runs (baseline, 2-rank DDP)."""

from __future__ import annotations

import time

import pytest

from bench.measure.breakdown import DETAIL, PARTS, DataActionClock, format_breakdown, step_parts, summarize
from tests.conftest import run_cli, run_result

# time stamps of one step, seconds
MARKS = {"prev_end": 10.000, "start": 10.030, "before_backward": 10.050, "after_backward": 10.090,
         "before_optimizer": 10.091, "end": 10.100}


def test_step_parts_without_ddp():
    p = step_parts(MARKS, data_s=0.020, last_bucket=None)
    expected = {"data_wait_s": 0.020, "loop_overhead_s": 0.010, "forward_s": 0.020, "backward_s": 0.040,
                "allreduce_s": 0.0, "optimizer_s": 0.009, "step_s": 0.100, "compute_s": 0.069,
                "unattributed_s": 0.001}
    assert p == pytest.approx(expected, abs=1e-9)


def test_exposed_allreduce_is_taken_out_of_backward():
    p = step_parts(MARKS, data_s=0.020, last_bucket=10.075)  # last bucket handed over 15 ms before the end
    assert p["allreduce_s"] == pytest.approx(0.015) and p["backward_s"] == pytest.approx(0.025)
    assert p["compute_s"] == pytest.approx(0.054)
    assert sum(p[k] for k in PARTS) + p["unattributed_s"] == pytest.approx(p["step_s"])


def test_parts_are_clipped_to_their_intervals():
    p = step_parts(MARKS, data_s=0.5, last_bucket=9.0)  # stamps outside the intervals
    assert p["data_wait_s"] == pytest.approx(0.030) and p["loop_overhead_s"] == 0.0
    assert p["allreduce_s"] == pytest.approx(0.040) and p["backward_s"] == pytest.approx(0.0)


def test_summarize_with_literal_steps():
    steps = [dict.fromkeys(PARTS + DETAIL, v) for v in (1.0, 2.0, 3.0, 4.0, 10.0)]
    s = summarize(steps)["step_s"]
    # numpy's linear p90 of 5 values: position 0.9 * 4 = 3.6, i.e. 4 + 0.6 * (10 - 4)
    assert s == pytest.approx({"median": 3.0, "p90": 7.6, "mean": 4.0, "sum": 20.0})
    with pytest.raises(ValueError, match="no training steps"):
        summarize([])


def test_data_action_clock_times_only_data_actions_through_lightnings_profile_context():
    clock = DataActionClock()
    # the names Lightning gives (trainer/call.py, loops/fetchers.py) for a data action and two others
    data, hook, batch = ("[Strategy]SingleDeviceStrategy.batch_to_device", "[Callback]CallbackGroup.on_train_batch_start",
                         "[LightningModule]CifarModule.training_step")
    with clock.profile(hook):
        with clock.profile(batch):
            pass
    assert clock.take() == 0.0 and clock.profile(hook) is clock.profile(batch)  # one shared no-op context
    with clock.profile(data):
        time.sleep(0.01)
    with clock.profile(hook):
        time.sleep(0.2)
    taken = clock.take()
    assert 0.01 <= taken < 0.2 and clock.take() == 0.0  # the hook's 0.2 s is not a data action's


def test_format_breakdown_shows_each_rank_in_milliseconds():
    epoch = {k: {"median": 0.0, "p90": 0.0, "mean": 0.0, "sum": 0.0} for k in PARTS + DETAIL}
    epoch["step_s"] = {"median": 0.050, "p90": 0.080, "mean": 0.05, "sum": 1.0}
    epoch["data_wait_s"] = {"median": 0.010, "p90": 0.02, "mean": 0.01, "sum": 0.2}
    text = format_breakdown([{"rank": 0, "hostname": "node1", "epochs": [epoch]},
                             {"rank": 1, "hostname": "node2", "epochs": [epoch]}])
    lines = text.splitlines()
    assert len(lines) == 4 and "node2" in lines[3] and "50.00" in lines[2] and "10.00 (20.0%)" in lines[2]
    assert "[p90 80.00]" in lines[2]
    assert format_breakdown([{"rank": 0, "hostname": "x", "epochs": []}]) == ""


def _run(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "runs"
    proc = run_cli("run", "--data", "synthetic", "--preset", "smoke", "--train-samples", "3200",
                   "--test-samples", "200", "--out", str(out), *args)
    return run_result(proc)[1], proc.stdout


def _check_sums(epoch: dict) -> None:
    parts = sum(epoch[k]["sum"] for k in PARTS)
    assert parts == pytest.approx(epoch["step_s"]["sum"], rel=0.05)  # the parts cover the step
    assert all(epoch[k]["sum"] >= 0 for k in PARTS + DETAIL)
    assert epoch["data_wait_s"]["sum"] > 0 and epoch["compute_s"]["sum"] > 0


def test_baseline_and_ddp_breakdown_in_json_summary_and_tensorboard(tmp_path):
    from tbparse import SummaryReader

    base, _ = _run(tmp_path, "--case", "baseline", "--epochs", "2")
    ddp, printed = _run(tmp_path, "--case", "ddp", "--devices", "2")
    b_ranks = base["metrics"]["step_breakdown"]["per_rank"]
    assert len(b_ranks) == 1 and [e["epoch"] for e in b_ranks[0]["epochs"]] == [0, 1]
    for epoch, train_s in zip(b_ranks[0]["epochs"], base["metrics"]["epoch_train_s"]):
        _check_sums(epoch)
        assert epoch["steps"] == 50 and epoch["allreduce_s"]["sum"] == 0.0
        assert epoch["step_s"]["sum"] == pytest.approx(train_s, rel=0.10)  # the steps fill the epoch
    d_ranks = ddp["metrics"]["step_breakdown"]["per_rank"]
    assert [r["rank"] for r in d_ranks] == [0, 1]
    for r in d_ranks:
        epoch = r["epochs"][0]
        _check_sums(epoch)
        assert epoch["steps"] == 50 and epoch["allreduce_s"]["sum"] > 0 and epoch["allreduce_s"]["median"] > 0
    assert ddp["world"]["communication"]["allreduce_hook"].startswith("bench.measure.breakdown.timed_allreduce")
    assert ddp["world"]["communication"]["network"] == "TCP (gloo)"
    assert "Where the time goes" in printed and "all-reduce" in printed
    ddp_tb = SummaryReader(str(tmp_path / "runs" / "tensorboard" / ddp["run_id"])).scalars  # rank 0 wrote it
    counts = ddp_tb.groupby("tag")["step"].count().to_dict()
    assert counts["train/loss"] == 50 // 10 and counts["train/accuracy"] == 1 and counts["time/epoch_train_s"] == 1
    assert ddp_tb[ddp_tb.tag == "breakdown/allreduce_ms"].value.iloc[0] > 0
    assert ddp_tb[ddp_tb.tag == "train/accuracy"].value.iloc[0] == pytest.approx(ddp["metrics"]["train_accuracy"])
    scalars = SummaryReader(str(tmp_path / "runs" / "tensorboard" / base["run_id"])).scalars
    steps = scalars.groupby("tag")["step"].count().to_dict()
    assert steps["breakdown/data_wait_ms"] == steps["breakdown/step_ms"] == 2  # one per epoch
    step_ms = scalars[scalars.tag == "breakdown/step_ms"].value.tolist()
    assert step_ms == pytest.approx([1000 * e["step_s"]["median"] for e in b_ranks[0]["epochs"]], rel=1e-5)


def test_breakdown_can_be_switched_off(tmp_path):
    r, printed = _run(tmp_path, "--no-step-breakdown", "--train-samples", "640")
    assert r["config"]["step_breakdown"] is False and r["metrics"]["fit_s"] > 0
    assert r["metrics"]["step_breakdown"] is None  # not measured, not "measured nothing"
    assert "Where the time goes" not in printed


def test_pil_path_data_wait_drops_with_loader_workers(tmp_path):
    """The classic per-image PIL pipeline in the training process (0 workers) makes the step wait
    for data; 2 worker processes prepare the batches ahead."""
    inline, _ = _run(tmp_path, "--data-path", "pil", "--num-workers", "0")
    workers, _ = _run(tmp_path, "--data-path", "pil", "--num-workers", "2")
    wait = [r["metrics"]["step_breakdown"]["per_rank"][0]["epochs"][0]["data_wait_s"]["median"]
            for r in (inline, workers)]
    assert inline["world"]["loader_workers_per_rank"] == 0 and workers["world"]["loader_workers_per_rank"] == 2
    assert wait[0] > 2 * wait[1], wait


class _FakeEvent:
    """Stands in for torch.cuda.Event: ``record()`` takes the next time of a scripted device timeline."""

    def __init__(self, timeline: list[float]) -> None:
        self.timeline, self.t = timeline, None

    def record(self) -> None:
        self.t = self.timeline.pop(0)

    def elapsed_time(self, other: "_FakeEvent") -> float:  # milliseconds, as CUDA reports them
        return 1000.0 * (other.t - self.t)


def test_gpu_breakdown_records_events_and_synchronises_once_per_epoch():
    """On GPU the marks are events read after one synchronisation at the epoch's end, never per step;
    the intervals come out of the device timeline exactly as host stamps would."""
    from bench.measure.breakdown import EventClock, resolve_steps

    step = [MARKS[k] for k in ("prev_end", "start", "before_backward", "after_backward", "before_optimizer", "end")]
    timeline = step + [t + 0.1 for t in step[1:]] + [10.175]  # two steps; a DDP bucket mark in the second
    syncs = []
    clock = EventClock("cuda:0", event=lambda: _FakeEvent(timeline), synchronize=syncs.append)
    prev = clock.mark()
    raw = []
    for bucket in (False, True):
        marks = {"prev_end": prev, **{k: clock.mark() for k in ("start", "before_backward", "after_backward",
                                                                 "before_optimizer", "end")}}
        raw.append((marks, 0.020, clock.mark() if bucket else None))
        prev = marks["end"]
    assert syncs == []  # nothing synchronised while the steps ran
    first, second = resolve_steps(clock, raw)
    assert syncs == ["cuda:0"]  # one synchronisation for the whole epoch
    assert first == pytest.approx(step_parts(MARKS, data_s=0.020, last_bucket=None), abs=1e-9)
    assert second["step_s"] == pytest.approx(0.100) and second["allreduce_s"] == pytest.approx(0.015)
    assert sum(second[k] for k in PARTS) + second["unattributed_s"] == pytest.approx(second["step_s"])
