"""Pure rules of issue 33 with literal numbers: a run's wall time split into phases
(bench/measure/phases.py) and the straggler rule (bench/results/straggler.py).
The real runs that check them are in tests/test_stopping.py.
"""

from __future__ import annotations

import pytest

from bench.measure.wallphases import PHASES, phase_line, split
from bench.results import straggler


def test_phases_are_the_windows_between_marks_and_add_up_to_wall():
    spans = [(0.0, "import_s"), (5.0, "data_s"), (6.0, "setup_s"), (7.0, "process_group_s"), (12.0, "setup_s"),
             (12.5, "fit_s"), (30.0, "test_s"), (33.0, "gather_s")]
    p = split(spans, wall_s=33.5, interconnect_s=2.0)
    assert p == {"import_s": 5.0, "data_s": 1.0, "setup_s": 1.5, "process_group_s": 3.0, "interconnect_s": 2.0,
                 "fit_s": 17.5, "test_s": 3.0, "gather_s": 0.5, "remainder_s": 0.0, "wall_s": 33.5}
    assert set(PHASES) | {"remainder_s", "wall_s"} == set(p)
    assert phase_line(p).endswith("gather 0.5 s (remainder 0.0 s of wall 33.5 s)")


def test_an_interconnect_check_longer_than_its_window_shows_in_the_remainder():
    p = split([(0.0, "import_s"), (1.0, "process_group_s"), (2.0, "fit_s")], wall_s=4.0, interconnect_s=1.5)
    assert p["process_group_s"] == 0.0 and p["interconnect_s"] == 1.5 and p["remainder_s"] == pytest.approx(-0.5)


def _ranks(*rows):
    return [{"rank": i, "step_s": s, "allreduce_s": a} for i, (s, a) in enumerate(rows)]


def test_a_slow_rank_of_two_is_named_and_two_alike_are_not():
    # rank 1 busy 0.090 s of a 0.100 s step; rank 0 busy 0.050 s and waits 0.050 s for it
    found = straggler.find(_ranks((0.100, 0.050), (0.100, 0.010)))
    assert found["rank"] == 1
    assert found["excess_busy_s"] == pytest.approx(0.040) and found["held_back_s"] == pytest.approx(0.040)
    assert straggler.find(_ranks((0.100, 0.012), (0.101, 0.010)))["rank"] is None
    assert straggler.find(_ranks((0.100, 0.0)))["rank"] is None  # one rank


def test_one_slow_rank_of_64_is_named_and_mild_spread_is_not():
    rows = [(0.200, 0.090 + 0.001 * (i % 5)) for i in range(64)]
    rows[37] = (0.200, 0.005)  # busy 0.195 s, the others ~0.108 s and waiting ~0.09 s
    assert straggler.find(_ranks(*rows))["rank"] == 37
    spread = [(0.200, 0.010 + 0.0005 * (i % 40)) for i in range(64)]  # waits 10..29.5 ms: within 20 % of a step
    assert straggler.find(_ranks(*spread))["rank"] is None


def test_a_rank_busy_longer_that_nobody_waits_for_is_not_named():
    # rank 1 is busy longer but rank 0 does not wait longer in the all-reduce (e.g. rank 1's step is longer)
    assert straggler.find(_ranks((0.100, 0.010), (0.150, 0.010)))["rank"] is None


def test_the_named_rank_carries_host_device_and_binding():
    epoch = lambda step, wait: {"step_s": {"median": step}, "allreduce_s": {"median": wait}}  # noqa: E731
    result = {"metrics": {"step_breakdown": {"per_rank": [
        {"rank": 0, "hostname": "node1", "epochs": [epoch(0.1, 0.06)]},
        {"rank": 1, "hostname": "node7", "epochs": [epoch(0.1, 0.001)]}]}},
        "world": {"read_back_per_rank": [{"cpus": "0", "device": "cpu"},
                                         {"cpus": "1", "device": "cuda:2 (GPU)", "cpu_max": "30000 100000"}]}}
    found = straggler.of_result(result)
    assert (found["rank"], found["host"], found["device"], found["cpus"]) == (1, "node7", "cuda:2 (GPU)", "1")
    assert straggler.straggler_line(found).startswith(
        "straggler: rank 1 on host node7, device cuda:2 (GPU), CPUs 1 (cgroup cpu.max 30000 100000): rank 1 is busy")
    assert straggler.of_result({"metrics": {}}) is None
