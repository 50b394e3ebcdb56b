"""Bad input given to `make bench` reaches the user as the run's own one-line error and exit status.

Run:  .venv/bin/python -m pytest -q tests/test_make_bench_errors.py
      (6 `make bench` calls that stop before training and one suite run of a few seconds of
      training: 20-50 s each on the shared 2-core machine, about 3-5 minutes in all)

Each bad value goes the way a user gives it (make variables), through pytest and the suite to
`cifar-bench run`, which refuses it. Checked: exit status 2 (bad input), the run's message said
exactly once, no traceback (pytest-benchmark's `min() arg is an empty sequence` among them), and
no file left in the run folder that could pass for a result (no result JSON, no suite.json).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

CASES = {  # name: (make variables, the run's own message)
    "empty folder": (lambda t: {"BENCH_DATA": str(t / "empty")},
                     lambda t: f"data folder {t / 'empty'} holds neither cifar-10-batches-py/ nor train/ and test/"),
    "unknown preset": (lambda t: {"PRESET": "tiny"},
                       lambda t: "argument --preset: invalid choice: 'tiny' (choose from 'smoke', 'cpu', 'full')"),
    "missing path": (lambda t: {"BENCH_DATA": str(t / "no" / "such.tar.gz")},
                     lambda t: f"data path {t / 'no' / 'such.tar.gz'} does not exist"),
    "foreign archive": (lambda t: {"BENCH_DATA": str(t / "foreign.tar.gz")},
                        lambda t: f"{t / 'foreign.tar.gz'} holds no images under train/<class>/ and test/<class>/"),
    "bad batch size": (lambda t: {"BENCH_DATA": "synthetic", "BENCH_ARGS": "--global-batch-size 0"},
                       lambda t: "--global-batch-size must be >= 1, got 0"),
    # an option the suite sets per case: it ran ddp as "baseline" and wrote where the suite never read
    "suite-owned option": (lambda t: {"BENCH_DATA": "synthetic", "BENCH_ARGS": "--case ddp --out=elsewhere"},
                           lambda t: "--bench-arg (BENCH_ARGS) cannot set --case, --out: the suite sets it per case"),
}


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not CIFAR-10\n")
    with tarfile.open(tmp_path / "foreign.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "notes", arcname="notes")
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_make_bench_reports_the_runs_own_error_once(name: str, bad_inputs: Path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        pytest.skip("`make setup` is not up to date: this test would install the virtual environment first")
    variables, message = CASES[name]
    runs = bad_inputs / "runs"
    runs.mkdir()  # an existing folder (RUNS may name one): still no "latest" link to it, nothing new is there
    make_vars = {"RUNS": str(runs), "BENCH_CACHE": str(bad_inputs / "cache"), **variables(bad_inputs)}
    proc = subprocess.run(["make", "-s", "bench", *(f"{k}={v}" for k, v in make_vars.items())], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.count(message(bad_inputs)) == 1, out
    assert "exit status 2 (bad input)" in out
    assert "not written" not in out, out  # nothing ran: no word of a suite.json withheld
    assert "Traceback" not in out and "min() arg" not in out, out
    left = sorted(str(p) for p in runs.rglob("*.json")) if runs.exists() else []
    assert left == [], f"a failed suite left result files: {left}"
    assert not (bad_inputs / "latest").is_symlink()


def _make_bench(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        pytest.skip("`make setup` is not up to date: this test would install the virtual environment first")
    return subprocess.run(["make", "-s", "bench", f"BENCH_CACHE={tmp_path / 'cache'}",
                           *(f"{k}={v}" for k, v in variables.items())], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_latest_names_the_newest_folder_with_results_and_an_empty_runs_is_refused(tmp_path: Path):
    small = "--train-samples 640 --test-samples 100"
    proc = _make_bench(tmp_path, RUNS=f"{tmp_path / 'runs' / 'first'}/", BENCH_DATA="synthetic", BENCH_ARGS=small)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and latest.resolve() == (tmp_path / "runs" / "first").resolve()
    assert f"results: {tmp_path / 'runs' / 'first'}/ = {tmp_path / 'runs'}/latest/" in proc.stdout
    assert len(list(latest.glob("*.json"))) >= 3
    proc = _make_bench(tmp_path, RUNS=str(latest), BENCH_DATA="synthetic")  # into the link: mixes two runs
    assert proc.returncode == 2 and "is the link to the newest results" in proc.stderr, proc.stderr
    (tmp_path / "runs" / "second").mkdir()  # refused input: nothing new there, latest stays
    proc = _make_bench(tmp_path, RUNS=str(tmp_path / "runs" / "second"), BENCH_DATA="synthetic", PRESET="tiny")
    assert proc.returncode == 2 and latest.resolve() == (tmp_path / "runs" / "first").resolve()
    proc = _make_bench(tmp_path, RUNS="", BENCH_DATA="synthetic")
    assert proc.returncode == 2 and "make bench: RUNS is empty" in proc.stderr, proc.stderr


def test_the_suite_refuses_an_empty_results_folder(tmp_path: Path):
    import os
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suite"), "-p", "no:cacheprovider", "-q",
                           "--bench-data", "synthetic", "--bench-out", ""], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "--bench-out (make bench: RUNS) is empty" in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_a_case_that_fails_its_sanity_check_fails_once_with_its_status(tmp_path: Path):
    """Not bad input: the run trains, fails its sanity check (exit 3) and the suite fails that case
    with the status, without pytest-benchmark's traceback and without writing suite.json."""
    import os
    import sys

    from tests.conftest import write_image_tree

    tree = write_image_tree(tmp_path / "tree")  # real images: accuracy is judged (not on synthetic data)
    out = tmp_path / "runs"
    # -rN as make bench: pytest's short summary would repeat the case's message (in full where CI is set)
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-rN", "-k", "test_baseline",
                           "--bench-preset", "smoke", "--bench-data", str(tree), "--bench-out", str(out),
                           "--benchmark-json", str(out / "suite.json"), "--bench-arg=--train-samples=0",
                           "--bench-arg=--test-samples=0", "--bench-arg=--global-batch-size=20",
                           "--bench-arg=--accuracy-floor=1.0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BENCH_CACHE": str(tmp_path / "cache")})
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text  # the case's own status, as docs/exit-codes.md says of the suite
    assert text.count("baseline: `cifar-bench run` exit status 3 (sanity)") == 1, text
    assert "[baseline] baseline: epoch 1/1 done" in text  # the child's lines were relayed
    assert "Traceback" not in text and "min() arg" not in text, text
    assert not (out / "suite.json").exists()
