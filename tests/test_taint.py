"""Contention classification (issue 27, item 5): bench.results.taint with literal counter readings, and
the rule's effect on records, compare and baseline record."""

from __future__ import annotations

import pytest

from bench.results.baselines import record_baseline
from bench.results.compare import compare, exit_code
from bench.results.taint import Thresholds, classify, taint_problem
from tests.results_factory import baseline_of, records, result

CPU0 = {"user": 1000, "nice": 0, "system": 200, "idle": 5000, "iowait": 0, "irq": 0, "softirq": 0, "steal": 0}


def reading(t_s, own_cpu_s, cpu=None, **extra):
    return {"t_s": t_s, "cpu": {**CPU0, **(cpu or {})}, "clk_tck": 100, "own_cpu_s": own_cpu_s, **extra}


def test_a_quiet_machine_is_clean():
    # 10 s fit: node busy 1000 jiffies = 10 s, of which this run's own 9.5 s -> others 0.05 cores
    start, end = reading(100.0, 2.0), reading(110.0, 11.5, cpu={"user": 1900, "system": 300, "idle": 6000})
    c = classify(start, end)
    assert c["state"] == "clean" and c["other_busy_cores"] == pytest.approx(0.05) and c["reasons"] == []
    assert c["steal_fraction"] == 0.0


def test_a_cpu_hog_beside_the_run_taints_it():
    # 10 s fit: node busy 2000 jiffies = 20 s, this run's own 10 s -> another process held 1.0 core
    start, end = reading(100.0, 2.0), reading(110.0, 12.0, cpu={"user": 2800, "system": 400})
    c = classify(start, end)
    assert c["state"] == "tainted" and c["other_busy_cores"] == pytest.approx(1.0)
    assert c["reasons"] == ["other processes kept 1.00 cores busy during the fit (limit 0.5)"]
    assert classify(start, end, Thresholds(other_busy_cores=1.5))["state"] == "clean"


def test_steal_and_cgroup_throttling_taint():
    start = reading(0.0, 0.0, cgroup={"nr_periods": 100, "nr_throttled": 0, "throttled_s": 0.0})
    end = reading(10.0, 10.0, cpu={"user": 2000, "steal": 100, "idle": 5900},
                  cgroup={"nr_periods": 200, "nr_throttled": 30, "throttled_s": 1.5})
    c = classify(start, end)  # steal 100 of 2000 jiffies = 5.0 % (not above 5 %); throttled 30 of 100 periods
    assert c["steal_fraction"] == pytest.approx(0.05) and c["throttled_fraction"] == pytest.approx(0.30)
    assert c["state"] == "tainted" and len(c["reasons"]) == 1 and "throttled 30% of periods" in c["reasons"][0]
    more_steal = reading(10.0, 10.0, cpu={"user": 2000, "steal": 200, "idle": 5800})
    assert any("CPU steal" in r for r in classify(reading(0.0, 0.0), more_steal)["reasons"])


def test_gpu_facts_where_measured():
    gpus = [{"index": 0, "sm_clock_mhz": 1410, "throttle_reasons": 0x4, "other_processes": 0},  # power cap: normal
            {"index": 1, "sm_clock_mhz": 900, "throttle_reasons": 0x40, "other_processes": 2}]
    c = classify(reading(0.0, 0.0), reading(10.0, 10.0, cpu={"user": 2000}, gpu=gpus))
    assert c["reasons"] == ["GPU 1: 2 other process(es) on it", "GPU 1: clocks throttled (NVML reasons 0x40)"]
    assert classify(reading(0.0, 0.0), reading(10.0, 10.0, cpu={"user": 2000}, gpu=None))["state"] == "clean"


def test_missing_counters_are_not_measured_never_a_failure():
    assert classify(None, None)["state"] == "not measured"
    assert classify(reading(0.0, None), reading(1.0, None))["state"] == "not measured"


def _tainted(samples, rule="on", **kw):
    r = result("baseline", samples, **kw)
    r["contention"] = {"classification": {"state": "tainted", "reasons": ["other processes kept 1.00 cores busy"]},
                       "rule": rule}
    return r


def test_tainted_runs_are_never_judged_nor_recorded():
    assert taint_problem(_tainted([1.0])) == "tainted: other processes kept 1.00 cores busy"
    assert taint_problem(_tainted([1.0], rule="off")) is None and taint_problem(result("baseline", [1.0])) is None
    base = baseline_of(result("baseline", [10.0, 10.1, 9.9]))
    (c,) = compare(records(_tainted([30.0, 30.1, 29.9])), base)
    assert c.verdict == "tainted" and c.basis is None and exit_code([c]) == 5
    assert any("not a figure: tainted" in n for n in c.notes)
    with pytest.raises(ValueError, match="nothing valid to record: .*tainted"):
        record_baseline(records(_tainted([10.0])), name="x", source="test")
    # beside clean runs, the tainted one is left out and the clean ones judged
    (c,) = compare(records(_tainted([30.0]), result("baseline", [10.0, 10.1, 9.9])), base)
    assert c.verdict == "unchanged" and c.n_invalid == 1


def test_the_rule_switched_off_is_recorded_and_the_run_judged():
    base = baseline_of(result("baseline", [10.0, 10.1, 9.9]))
    (c,) = compare(records(_tainted([10.0, 10.1, 9.9], rule="off")), base)
    assert c.verdict == "unchanged"
    assert any("3 run(s) tainted by a contended machine but judged" in n and "BENCH_CONTENTION_RULE=off" in n
               for n in c.notes)


def test_compare_of_tainted_runs_alone_lists_no_changes_and_a_closed_pipe_is_no_folder_error(tmp_path):
    """From a trial: with every run tainted, 'what changed' listed ~30 facts as 'x -> ' (nothing now);
    and `compare ... | head` said 'cannot write the output folder: Broken pipe' with exit 2."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO, run_cli
    from tests.results_factory import write

    files = write(tmp_path / "runs", *[_tainted([s]) for s in (30.0, 30.1, 29.9)])
    base = tmp_path / "base.json"
    base.write_text(json.dumps(baseline_of(result("baseline", [10.0, 10.1, 9.9]), name="base")))
    proc = run_cli("compare", *map(str, files), "--baseline", str(base), env={"BENCH_CONTENTION_RULE": "on"})
    assert proc.returncode == 5, proc.stdout + proc.stderr
    changed = proc.stdout.split("what changed (baseline -> now):")[1].strip().splitlines()
    assert changed == ["no valid run now: nothing to compare"]
    reader = subprocess.Popen([sys.executable, "-m", "bench", "compare", *map(str, files), "--baseline", str(base)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "BENCH_CONTENTION_RULE": "on"})
    reader.stdout.close()  # the reader leaves before the first line, as `| head -0` does
    err = reader.stderr.read()
    assert reader.wait(timeout=120) == 141 and "cannot write" not in err, err
