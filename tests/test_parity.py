"""The parity benchmark (bench.selfcheck.parity): its statistics with literal numbers, and one tiny round end to end.

Only that it runs and that all sides did the same work is checked here; its ratios are a benchmark's
figures (docs/performance.md), never asserted in a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.selfcheck.parity_report import ratio_summary, same_work, summarize, turn_problems
from tests.test_faults import default_sigint

REPO = Path(__file__).resolve().parent.parent


def test_ratio_summary_median_and_bootstrap_interval():
    s = ratio_summary([0.90, 0.95, 1.00, 1.05, 1.10])
    assert s["n"] == 5 and s["median"] == pytest.approx(1.00)
    assert 0.90 <= s["low"] < 1.00 < s["high"] <= 1.10  # a percentile interval lies within the samples
    assert ratio_summary([0.97, 0.97]) == {"n": 2, "median": 0.97, "low": 0.97, "high": 0.97}
    assert ratio_summary([1.2])["low"] is None  # one pair: no interval


def test_same_work_names_steps_and_accuracy_outliers():
    runs = [{"side": s, "round": 0, "optimizer_steps": 782, "test_accuracy": a}
            for s, a in (("hand", 0.50), ("lightning", 0.51), ("product", 0.49))]
    assert same_work(runs, 0.03) == []
    runs[2] = {**runs[2], "optimizer_steps": 781, "test_accuracy": 0.40}
    problems = same_work(runs, 0.03)
    assert any("optimizer steps differ: [781, 782]" in p for p in problems)
    assert any(p.startswith("product (round 0) accuracy 0.4000") for p in problems)


def test_summarize_pairs_ratios_within_rounds():
    runs = [{"side": s, "round": i, "optimizer_steps": 10, "test_accuracy": 0.5, "throughput_img_s": t}
            for i, (h, l, p) in enumerate([(100, 90, 88), (50, 45, 45)]) for s, t in (("hand", h), ("lightning", l),
                                                                                     ("product", p))]
    s = summarize(runs, 0.03)
    assert s["ratios"]["product/hand"]["samples"] == pytest.approx([0.88, 0.90])
    assert s["ratios"]["product/lightning"]["samples"] == pytest.approx([88 / 90, 1.0])
    assert s["ratios"]["product/lightning"]["target"] == 0.97 and s["same_work_problems"] == []


def test_median_step_is_the_median_of_per_epoch_medians():
    from bench.selfcheck.parity_sides import median_step_s

    # epoch 0: start 0, steps end at 1, 3, 4 -> steps 1, 2, 1 (median 1); epoch 1: steps 3, 5 (median 4)
    assert median_step_s([[0.0, 1.0, 3.0, 4.0], [10.0, 13.0, 18.0]]) == pytest.approx(2.5)
    assert median_step_s([[5.0]]) is None


def test_summarize_pairs_median_step_ratios_too():
    runs = [{"side": s, "round": 0, "optimizer_steps": 10, "test_accuracy": 0.5, "throughput_img_s": 100.0,
             "median_step_img_s": m} for s, m in (("hand", 200.0), ("lightning", 190.0), ("product", 180.0))]
    s = summarize(runs, 0.03)
    assert s["step_ratios"]["product/hand"]["samples"] == pytest.approx([0.9])
    assert s["median_step_img_s"] == {"hand": 200.0, "lightning": 190.0, "product": 180.0}
    runs[2]["median_step_img_s"] = None  # the product ran without its breakdown: no step figure, no ratio
    assert "product/hand" not in summarize(runs, 0.03)["step_ratios"]


@pytest.mark.parametrize("slice_s", ["1", "0"])  # the sides in turns (default), one after the other
def test_one_tiny_round_runs_and_all_sides_do_the_same_work(tmp_path, slice_s):
    out = tmp_path / "parity"
    proc = subprocess.run([sys.executable, "-m", "bench.selfcheck.parity", "--data", "synthetic", "--preset", "smoke",
                           "--pairs", "1", "--data-paths", "device", "--train-samples", "640", "--test-samples", "200",
                           "--slice-s", slice_s, "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    report = json.loads((out / "parity.json").read_text())
    # 10 steps are too few for a figure in either mode: said, and exit 3 (no figure)
    assert report["summary"]["device"]["turn_problems"] and "the runs have 10 steps in all" in proc.stdout
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = report["runs"]["device"]
    assert sorted(r["side"] for r in runs) == ["hand", "lightning", "product"]
    assert {r["optimizer_steps"] for r in runs} == {10}  # 640 images / 64 per step, on every side
    # the device path's augmentation is seeded by (seed, epoch) and the weights by the seed:
    # the three sides train exactly the same steps and end with the same test answers
    assert len({(r["test_correct"], r["test_total"]) for r in runs}) == 1
    assert "product/hand" in proc.stdout and "product/lightning" in proc.stdout and "median step" in proc.stdout
    assert all(r["median_step_s"] > 0 for r in runs)  # every side timed its steps
    # in turns, a side's epoch clock also ran through the others' turns: no images/s figure, said so
    images_rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("device") and "over epochs" in ln]
    if slice_s == "0":
        assert all(r["throughput_img_s"] > 0 for r in runs) and len(images_rows) == 2
    else:
        assert all(r["throughput_img_s"] is None for r in runs) and images_rows == []
        assert "images/s at the median step" in proc.stdout and report["slice_s"] == 1.0


@pytest.mark.parametrize("argv, said", [
    (["--slice-s", "-1"], "argument --slice-s: must be a finite number >= 0, got '-1'"),
    (["--slice-s", "nan"], "argument --slice-s: must be a finite number >= 0, got 'nan'"),
    (["--slice-s", "0.01"], "argument --slice-s: must be 0 (one after the other) or >= 0.1 s, got '0.01'"),
    (["--pairs", "0"], "argument --pairs: must be a finite number >= 1, got '0'"),
    (["--epochs", "0"], "argument --epochs: must be a finite number >= 1, got '0'"),
    (["--accuracy-tolerance", "-1"], "argument --accuracy-tolerance: must be a finite number >= 0"),
    (["--data-paths", "device,device"], "error: --data-paths names a data path twice (device,device)"),
    (["--before-tree", "/nonexistent/tree"], "error: --before-tree /nonexistent/tree holds no bench/ package"),
    (["--data-paths", ","], "error: --data-paths names no data path"),
    (["--data-paths", "device,nope"], "error: --data-paths: 'nope' is not one of pil, uint8, device"),
    (["--train-samples", "-5"], "error: --train-samples must be >= 0, got -5"),
    (["--data", "/nonexistent/cifar"], "error: data path /nonexistent/cifar does not exist"),
])
def test_bad_input_is_one_line_and_2_before_anything_runs(tmp_path, capsys, argv, said):
    from bench.selfcheck import parity

    out = tmp_path / "p"
    try:
        code = parity.main(["--data", "synthetic", "--out", str(out), *argv])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code == 2 and said in capsys.readouterr().err
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    from bench.selfcheck import parity

    (tmp_path / "afile").write_text("")
    assert parity.main(["--data", "synthetic", "--out", str(tmp_path / "afile")]) == 2
    assert "error: cannot use --out" in capsys.readouterr().err and (tmp_path / "afile").read_text() == ""


def test_turns_too_short_for_the_median_step_are_no_figure():
    runs = [{"side": "hand", "round": 0, "median_step_s": 0.010}, {"side": "product", "round": 1, "median_step_s": 0.040}]
    assert turn_problems(runs, slice_s=0) == []  # one after the other: no turns
    assert turn_problems(runs, slice_s=2.0) == []  # 50 of the slowest steps a turn
    [problem] = turn_problems(runs, slice_s=1.0)  # 25
    assert problem.startswith("product (round 1): a median step of 40.0 ms fits 25.0 steps in a turn of 1 s, fewer than 50")
    assert problem.endswith("use --slice-s 2.0 or more (make parity SLICE_S=2.0)")
    for r in runs:
        r["optimizer_steps"] = 10  # too few steps for a figure, in turns or one after the other
    for slice_s in (0, 1.0):
        assert turn_problems(runs, slice_s) == [
            "the runs have 10 steps in all, fewer than 50: too few for a figure; train at least 50 steps "
            "(--train-samples of at least 50 x the global batch, or more --epochs)"]


def _processes_naming(text: str) -> list[str]:
    """Command lines of the processes that mention ``text`` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


def test_more_images_than_the_data_set_holds_is_refused_before_anything_runs(tmp_path, capsys, cache):
    from bench.selfcheck import parity
    from tests.conftest import write_image_tree

    data = write_image_tree(tmp_path / "tiny")  # 6 training images a class: 60
    code = parity.main(["--data", str(data), "--train-samples", "640", "--out", str(tmp_path / "p")])
    assert code == 2 and "error: --train-samples 640: this data set's split holds only 60 images" in capsys.readouterr().err
    assert not (tmp_path / "p" / "round0").exists()


@pytest.mark.parametrize("sig, slice_s", [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGTERM, "0")])
def test_a_stopped_parity_run_says_so_exits_4_and_leaves_no_process(tmp_path, sig, slice_s):
    """Ctrl-C (SIGINT to its process group) or SIGTERM to the parity process while the sides run in turns,
    or one after the other (a side's loader workers included)."""
    out = tmp_path / "parity"
    proc = subprocess.Popen([sys.executable, "-m", "bench.selfcheck.parity", "--data", "synthetic", "--preset", "smoke",
                             "--pairs", "1", "--data-paths", "uint8", "--train-samples", "6400", "--test-samples", "200",
                             "--slice-s", slice_s, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True, preexec_fn=default_sigint)  # (see tests.test_faults)
    deadline = time.monotonic() + 120
    while len(_processes_naming(str(out / "round0"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # a side and its loader worker, or (in turns) two sides, one of them stopped
    assert proc.poll() is None, proc.communicate()
    if sig == signal.SIGINT:  # a terminal's Ctrl-C: to the whole foreground group
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "parity: interrupted; no summary" in err, err[-2000:]
    assert not (out / "parity.json").exists()
    deadline = time.monotonic() + 10
    while _processes_naming(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_naming(str(out)) == []


def test_the_before_side_gets_absolute_paths_as_it_runs_in_the_other_tree(tmp_path, monkeypatch):
    from bench.selfcheck.parity import side_command

    monkeypatch.chdir(tmp_path)
    overrides = {"preset": "cpu", "data": "data/cifar.tar.gz", "cache_dir": "cache", "data_path": "device"}
    cmd = side_command("product_before", overrides, Path("runs/p/round0/device/product_before"), "/other/tree")
    assert cmd["cwd"] == "/other/tree" and cmd["env"]["PYTHONPATH"] == "/other/tree"
    args = cmd["args"]
    assert args[args.index("--out") + 1] == str(tmp_path / "runs/p/round0/device/product_before")
    assert args[args.index("--data") + 1] == str(tmp_path / "data/cifar.tar.gz")
    assert args[args.index("--cache-dir") + 1] == str(tmp_path / "cache")
    assert args[args.index("--data-path") + 1] == "device"  # not a path: as given
    synthetic = side_command("product", {"preset": "smoke", "data": "synthetic"}, tmp_path, None)["args"]
    assert synthetic[synthetic.index("--data") + 1] == "synthetic"
