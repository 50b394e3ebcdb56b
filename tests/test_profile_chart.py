"""Top operators by self time from a Chrome trace (bench.measure.profile_chart), with literal events.

Run:  .venv/bin/python -m pytest -q tests/test_profile_chart.py   (about a second)
"""

from __future__ import annotations

import json

from bench.measure.profile_chart import figure, rank_top_ops, self_times, short_name, write_chart
from bench.measure.profiling import window_line


def op(name: str, ts: float, dur: float, tid: int = 1, cat: str = "cpu_op") -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


EVENTS = [op("ProfilerStep#7", 0, 1000, cat="user_annotation"), op("ProfilerStep#8", 1000, 1000, cat="user_annotation"),
          # step 7: a region (100 us) holding a conv (60, holding an inner op of 20) and an add (10)
          op("DistributedDataParallel.forward", 0, 100, cat="user_annotation"), op("aten::conv2d", 10, 60),
          op("aten::mkldnn_convolution", 20, 20), op("aten::add", 80, 10),
          op("gloo:all_reduce", 5, 300, tid=2),  # the collective on gloo's own thread: not nested in forward
          op("aten::conv2d", 1010, 40),  # step 8
          op("void sgemm_kernel", 30, 50, tid=7, cat="kernel"), op("ignored", 0, 5, cat="python_function")]


def test_self_time_subtracts_nested_operators_on_the_same_thread_only():
    host = self_times(EVENTS, ("cpu_op", "user_annotation"))
    assert host == {"DistributedDataParallel.forward": 30.0, "aten::conv2d": 80.0, "aten::mkldnn_convolution": 20.0,
                    "aten::add": 10.0, "gloo:all_reduce": 300.0}  # no ProfilerStep#, no python_function
    assert self_times(EVENTS, ("kernel",)) == {"void sgemm_kernel": 50.0}


def test_rank_top_ops_gives_ms_per_recorded_step_largest_first(tmp_path):
    trace = tmp_path / "rank0.1.pt.trace.json"
    trace.write_text(json.dumps({"traceEvents": EVENTS}))
    top = rank_top_ops(trace, top=2)
    assert top["steps"] == 2
    assert top["host"] == [("gloo:all_reduce", 0.15), ("aten::conv2d", 0.04)]
    assert top["device"] == [("void sgemm_kernel", 0.025)]
    png = write_chart([(0, trace), (1, trace)], tmp_path / "top_ops.png", "run-x")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_picture_has_one_panel_per_rank_and_kind_with_whole_or_middle_cut_names():
    top = {"steps": 3, "host": [("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", 5.0),
                                ("gloo:all_reduce", 2.0)], "device": []}
    fig = figure([(0, top), (1, top)], "run-x")
    assert [ax.get_title() for ax in fig.axes] == ["rank 0: host operators by self time",
                                                   "rank 1: host operators by self time"]
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names == ["gloo:all_reduce", "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"]
    bars = fig.axes[0].patches
    assert [b.get_facecolor()[:3] for b in bars][0] != bars[1].get_facecolor()[:3]  # the collective in its own colour
    assert "mean of 3 recorded steps" in fig.axes[0].get_xlabel()
    assert short_name("a" * 40 + "b" * 40, 21) == "a" * 9 + "..." + "b" * 9


def test_top_ops_text_says_which_steps_its_totals_cover():
    line = window_line(1, {"wait": 5, "warmup": 2, "active": 3, "total_steps": 20})
    assert line == ("rank 1: totals over the 3 recorded training step(s) 7..9 of 20 (skipped 5, warm-up 2); "
                    "per step = total / 3\n")
