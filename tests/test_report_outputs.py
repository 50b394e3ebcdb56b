"""The report says what ran and its figure shows what matters (issue 34, items 1 and 2).

Figures are checked from the Figure's data (series labels, texts, titles), not from pixels.
Run:  .venv/bin/python -m pytest -q tests/test_report_outputs.py   (a few seconds)
"""

from __future__ import annotations

from bench.report import report
from bench.report.caserows import case_rows
from bench.report.facts import shown_run, title_line
from bench.report.plot import figure
from bench.results import compare as cmp
from tests.results_factory import CPU, baseline_of, records, result as _result

ONE_CORE = {**CPU, "cpu_count": 2, "cpus_usable": 1}  # a run pinned to 1 of the node's 2 cores


def result(case: str, samples: list[float], devices: int = 1, run: int = 0, **kw) -> dict:
    return _result(case, samples, devices=devices, env=ONE_CORE, run_id=f"{case}-{devices}-{run}",
                   accelerator="cpu", preset="smoke", model="simple_cnn", epochs=1, global_batch_size=64, **kw)


def facts(markdown: str) -> dict[str, str]:
    section = markdown.split("## What ran")[1].split("\n## ")[0]
    return dict(line[2:].split(": ", 1) for line in section.splitlines() if line.startswith("- "))


def test_report_states_what_ran_as_the_results_recorded_it():
    runs = records(result("baseline", [10.0]), result("ddp", [6.0], devices=2))
    got = facts(report.build_report(runs, None, None))
    assert got["Preset"] == "smoke" and got["Model"] == "simple_cnn" and got["Epochs"] == "1"
    assert got["Global batch (images per step)"] == "64"
    assert got["Per-device batch"] == "64 (1 process (baseline)); 32 (DDP, 2 processes on 1 node)"
    assert got["Precision"] == "32-true" and got["Data path (host to device)"] == "uint8"
    assert got["Data"].startswith("/data/cifar10 (official)")
    assert got["Devices x nodes"] == "1 x 1 (cpu) (1 process (baseline)); 2 x 1 (cpu) (DDP, 2 processes on 1 node)"
    assert got["CPU cores per node"] == "1 usable of 2"  # the run's affinity, not the machine's count
    assert got["Versions"] == "torch 2.14.1+cu130, lightning 2.6.6, python 3.11.7"
    assert got["Repeats (valid runs per row)"] == "1 process (baseline): 1; DDP, 2 processes on 1 node: 1"
    assert "medians over its valid repeats" in report.build_report(runs, None, None).split("\n|")[0]  # said above the table


def test_environment_gives_the_recorded_usable_cores_not_the_machines():
    md = report.build_report(records(result("baseline", [10.0])), None, None)
    assert "- GPUs: none (CPU: AMD EPYC, 1 usable of 2 cores)" in md


def test_per_run_breakdown_names_the_median_run_of_the_repeats():
    rows = case_rows(records(*[result("baseline", [s], run=i) for i, s in enumerate((12.0, 10.0, 11.0))]))[0]
    run, words = shown_run(rows[0])
    assert run.run_id == "baseline-1-2" and "the median of its 3 repeats" in words and "baseline-1-2" in words
    rows = case_rows(records(result("baseline", [12.0])))[0]
    assert shown_run(rows[0])[1] == "run `baseline-1-0` (its only run)"


def test_figure_shows_the_baseline_file_beside_the_runs_with_verdicts_and_labelled_error_bars():
    base = baseline_of(*[result("baseline", [s], run=i) for i, s in enumerate((10.0, 10.1, 9.9))], name="mine")
    now = records(*[result("baseline", [s], run=i) for i, s in enumerate((13.0, 13.1, 12.9))])
    rows = case_rows(now)[0]
    fig = figure(rows, cmp.compare(now, base), "mine", title_line(rows))
    ax_t = fig.axes[0]
    labels = ax_t.get_legend_handles_labels()[1]
    assert "baseline mine: median fit_s" in labels and "these runs: median fit_s (n=3)" in labels
    assert "error bar: min-max of the repeats" in labels
    verdicts = [t.get_text() for t in ax_t.texts if t.get_gid() == "verdict"]
    assert verdicts == ["regression, +30.0%"]
    assert fig.get_suptitle() == "preset smoke - simple_cnn - 1 epoch(s) - global batch 64 - CPU AMD EPYC, 1 usable of 2 cores"


def test_figure_without_baseline_has_no_baseline_series_and_one_run_no_error_bar():
    rows = case_rows(records(result("baseline", [10.0])))[0]
    labels = figure(rows).axes[0].get_legend_handles_labels()[1]
    assert labels == ["these runs: median fit_s (n=1)"]
