"""Tests of bench.report.report: the publishable table (markdown and terminal), the figure, atomic writing, bad input."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from bench.core import files
from bench.report import report
from bench.results.baselines import write_baseline
from bench.results.reading import read_records
from tests.results_factory import CPU, REFERENCE, baseline_of, records, result as _result, write

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(case: str, samples: list[float], status: str = "ok", devices: int = 1, run: int = 0,
           **kw) -> dict:
    """A CPU run on the 2-core machine (hosts "vm")."""
    r = _result(case, samples, status=status, devices=devices, env=CPU, run_id=f"{case}-{devices}-{run}",
                accelerator="cpu", **kw)
    r["world"]["hostnames"] = ["vm"] * r["world"]["world_size"]
    return r


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
    assert column(md, "Scaling efficiency") == ["100.0%", "46.2%", "42.6%"]  # as bench.results.compare formats it
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
    results = read_records([REFERENCE])
    text = report.format_terminal_table(results)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Configuration", "Training", "Time", "Speedup"]
    for config, secs, speed in (("1 GPU (baseline)", "120 s", "1.00x"), ("DDP, 2 nodes x 2 GPUs", "65 s", "1.85x"),
                                ("DP, 2 GPUs on 1 node", "141 s", "0.85x")):
        (line,) = [line for line in lines if line.startswith(config)]
        assert re.search(rf"\s{secs}\s+{re.escape(speed)}\s", line), line


def test_cli_prints_table_then_paths(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    report.add_parser(ap.add_subparsers(dest="command"))
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
    assert column(md, "Test accuracy") == ["50.0%"] * 2
    assert "- dp (1 device): skipped - DataParallel needs 2 or more CUDA devices" in md
    assert "- GPUs: none (CPU: AMD EPYC, 2 cores)" in md
    assert "- torch: 2.14.1+cu130" in md and "- lightning: 2.6.6" in md
    assert "- Git commit: 0123456789ab (dirty)" in md
    assert "- Nodes: 1 (hosts: vm)" in md
    terminal = report.format_terminal_table(read_records(paths))
    assert "not run: dp (1 device): skipped - DataParallel needs 2 or more CUDA devices" in terminal
    assert "9.1% (n=3)" in terminal


def test_pytest_benchmark_file_with_skipped_entry(tmp_path):
    suite = {"benchmarks": [{"name": "test_baseline", "extra_info": {"result": result("baseline", [5.0])}}],
             "skipped": [{"case": "dp", "reason": "needs 2 GPUs"}]}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    md = report.build_report(read_records([path]), None, None)
    assert column(md, "Training Time") == ["5.0 s"]
    assert "- dp (1 device): skipped - needs 2 GPUs" in md


def test_baseline_column_gives_change_and_verdict(tmp_path):
    before = [result("baseline", [s], run=i) for i, s in enumerate((10.0, 10.1, 9.9))]
    base_path = write_baseline(baseline_of(*before, name="mine"), tmp_path / "mine.json")
    now = write(tmp_path / "now", *[result("baseline", [s], run=i) for i, s in enumerate((13.0, 13.1, 12.9))])
    md_path, _ = report.write_report(now, tmp_path / "out", baseline=str(base_path))
    md = md_path.read_text()
    # detectable change: pooled sd of log times ~0.0089, (2.1318 + 0.9410) * 0.0089 * sqrt(2/3) -> 2.3 %
    assert column(md, "vs mine") == ["+30.0% (regression; detectable 2.3%)"]
    same = write(tmp_path / "same", *before)
    md = report.write_report(same, tmp_path / "out2", baseline=base_path, tolerance=5)[0].read_text()
    assert column(md, "vs mine") == ["+0.0% (unchanged; detectable 2.5%)"]  # sd of log times 0.0100


def test_runs_that_are_not_figures_are_listed_with_why_and_never_timed(tmp_path):
    paths = write(tmp_path, result("baseline", [5.0], knobs={"BENCH_TEST_STEP_SLEEP_S": 0.01}),
                  result("baseline", [4.0], run=1, sanity={"loss_finite": False, "passed": False}),
                  result("baseline", [6.0], run=2))
    md = report.build_report(read_records(paths), None, None)
    assert column(md, "Training Time") == ["6.0 s"]
    assert "- baseline (1 device): not a figure (baseline-1-0) - test knobs active (BENCH_TEST_STEP_SLEEP_S=0.01)" in md
    assert "not a figure (baseline-1-1) - sanity check failed" in md


def test_case_without_baseline_case_has_no_speedup(tmp_path):
    paths = write(tmp_path, result("ddp", [5.0], devices=2))
    md = report.build_report(read_records(paths), None, None)
    assert column(md, "Speedup") == ["-"] and column(md, "Scaling efficiency") == ["-"]
    assert "no valid 'baseline' case" in md


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


def test_runs_of_one_case_with_different_devices_are_two_rows(tmp_path):
    paths = write(tmp_path, result("baseline", [6.0]), result("ddp", [5.0], devices=2),
                  result("ddp", [3.0], devices=4, run=1))
    md = report.build_report(read_records(paths), None, None)
    assert column(md, "Configuration") == ["1 process (baseline)", "DDP, 2 processes on 1 node",
                                           "DDP, 4 processes on 1 node"]
    assert column(md, "Speedup") == ["1.00x", "1.20x", "2.00x"]


def test_runs_of_one_case_with_different_work_are_refused(tmp_path):
    paths = write(tmp_path, result("baseline", [5.0]), result("baseline", [9.0], run=1, epochs=2))
    with pytest.raises(ValueError, match=r"runs of baseline \(1 device\) did different work \(epochs differ\)"):
        report.write_report(paths, tmp_path / "out")


def test_cli_bad_input_raises_value_error_for_the_cli_to_map(tmp_path):
    ap = argparse.ArgumentParser()
    report.add_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["report", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no such file"):
        report.cmd_report(args)
    assert not (tmp_path / "o").exists()


def test_report_shows_where_the_time_goes_per_case():
    def part(ms: float) -> dict:
        return {"median": ms / 1000, "p90": 0.0, "mean": 0.0, "sum": 0.0}

    epoch = {"step_s": part(40), "data_wait_s": part(10), "compute_s": part(20), "allreduce_s": part(6),
             "loop_overhead_s": part(4)}
    ddp = result("ddp", [10.0], devices=2)
    ddp["metrics"]["step_breakdown"] = {"per_rank": [{"rank": 0, "epochs": [epoch]},
                                                     {"rank": 1, "epochs": [{**epoch, "step_s": part(60)}]}]}
    text = report.build_report(records(result("baseline", [20.0]), ddp), None, None)
    section = text.split("## Where the time goes")[1].split("## Environment")[0]
    # step: mean of the ranks' medians (40, 60) = 50 ms; parts in % of it
    (row,) = [r for r in table_rows(section) if r[0] == "ddp"]
    assert row == ["ddp", "2", "50.00", "10.00 (20 %)", "20.00 (40 %)", "6.00 (12 %)", "4.00 (8 %)"]
    assert "| baseline" not in section  # no breakdown recorded: no row, nothing invented
    assert "Where the time goes" not in report.build_report(records(result("baseline", [20.0])), None, None)


def test_a_tainted_run_is_listed_as_not_a_figure_not_as_not_run():
    from tests.results_factory import CPU, records, result

    runs = [result("baseline", [10.0], env=CPU) for _ in range(3)]
    runs[1]["contention"] = {"classification": {"state": "tainted", "reasons": ["other processes kept 1.2 cores busy"]}}
    terminal = report.format_terminal_table(records(*runs))
    assert f"not a figure ({runs[1]['run_id']}): baseline (1 device) - tainted: other processes kept 1.2 cores busy" \
        in terminal
    assert "not run:" not in terminal
