"""A real run beside a CPU hog is tainted, not judged (issue 27, item 5).

One short ``python -m bench run`` (smoke preset, synthetic data, 512 training images) while two
busy-looping processes (one per core of a 2-core machine) hold the CPU; the contention rule is on for
this run (the test suite runs with it off: tests/conftest.py). The readings at the start and end of
the fit must show other processes' CPU time, the result is ``tainted`` with that reason, and
``compare`` does not judge it.
"""

from __future__ import annotations

import subprocess
import sys

from bench.results.baselines import write_baseline
from bench.results.reading import read_records
from bench.results.taint import RULE_ENV
from tests.conftest import run_cli, run_result
from tests.results_factory import baseline_of, result

RUN = ("run", "--case", "baseline", "--data", "synthetic", "--preset", "smoke", "--train-samples", "512",
       "--test-samples", "100")


def test_a_run_beside_a_cpu_hog_is_tainted_and_not_judged(tmp_path):
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        proc = run_cli(*RUN, "--out", str(tmp_path / "runs"), env={RULE_ENV: "on"}, timeout=300)
    finally:
        for hog in hogs:  # only the processes this test started
            hog.kill()
            hog.wait()
    path, res = run_result(proc, tmp_path / "runs")
    c = res["contention"]
    assert c["rule"] == "on" and c["start"]["cpu"] and c["end"]["own_cpu_s"] > c["start"]["own_cpu_s"]
    assert c["classification"]["state"] == "tainted", c["classification"]
    assert c["classification"]["other_busy_cores"] > 0.5
    assert any("other processes kept" in r for r in c["classification"]["reasons"])
    (record,) = read_records([path])
    assert not record.valid and record.problem.startswith("tainted: other processes kept")
    fit = res["metrics"]["fit_s"]
    base = write_baseline(baseline_of(result("baseline", [fit, fit * 1.01, fit * 0.99], preset="smoke")),
                          tmp_path / "b.json")
    compared = run_cli("compare", str(path), "--baseline", str(base))
    assert compared.returncode == 5 and "tainted" in compared.stdout, compared.stdout + compared.stderr
