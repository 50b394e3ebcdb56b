"""The publishable report of a set of runs: a markdown table, the same table for the terminal, a figure.

    cifar-bench report RESULTS... [--baseline NAME|PATH] [--tolerance PCT] --out DIR

writes ``DIR/report.md`` and ``DIR/report.png`` (each atomically: temp file in DIR, then
``os.replace``). Inputs are whatever :func:`bench.results.reading.read_records` reads: per-run result JSON,
pytest-benchmark JSON, or a baseline file (``cifar-bench report baselines/a100-2node.json --out DIR``
gives the reference table).

The table, one row per case (:func:`bench.report.caserows.case_rows`; order baseline, ddp, dp, then others -
the order of the published reference table), in the form users publish::

    Configuration | Training Time | Speedup | Devices | Nodes | Throughput (img/s) | Test accuracy
        | Scaling efficiency [| CV of fit_s] [| vs BASELINE]

* Training Time: median ``fit_s`` of the case's ok runs (all their samples), seconds.
* Speedup: fit_s(``baseline`` case) / fit_s(case), e.g. ``1.85x``; ``-`` without a baseline case
  or when the two did different work (:data:`bench.results.baselines.WORK_FIELDS`).
* Scaling efficiency: speedup / devices (ddp: world size, dp: GPUs, baseline: 1), as
  :mod:`bench.results.compare` computes it.
* Throughput and test accuracy: medians over the case's runs.
* CV of fit_s: sample stdev / mean of the fit_s samples, shown when a case has >= 2 samples.
* vs BASELINE (with ``--baseline``): the change of the median fit_s against the baseline file and
  :func:`bench.results.compare.compare`'s verdict, with its notes below the table.

Skipped, failed and interrupted cases are listed with their reasons below the table, then an
environment summary (GPUs, driver, nodes, versions, image, git commit; ``unknown`` where the
results do not say), and where runs have a per-step breakdown, "Where the time goes": each case's
median step split into data wait, compute, all-reduce and loop overhead
(:func:`bench.measure.breakdown.markdown_breakdown`) of one real run per row, the median one, named below
the table (:func:`bench.report.facts.shown_run`). "What ran" (:func:`bench.report.facts.what_ran`) gives preset,
model, data, epochs, global and per-device batch, precision, data path, devices x nodes, usable cores,
image and versions as the results recorded them. The figure (:mod:`bench.report.plot`) has two panels:
training time per case (min-max error bars; with ``--baseline`` the baseline file's time beside it and
the verdict above), and speedup per case with the ideal speedup (= devices) marked. Where a
case ran at several world sizes, a "Scaling" section adds the sweep's table and ``scaling.png``
(:func:`bench.scaling.sweep.report_section`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from bench.core.files import FolderIsAFile, atomic_write_bytes, folder_argument, writable_folder
from bench.core.options import tolerance_percent
from bench.core.tables import fmt as _fmt, fmt_seconds, render
from bench.report.caserows import case_rows
from bench.report.facts import cores, not_a_figure_lines, title_line, what_ran_section, where_the_time_goes
from bench.report.plot import render_png
from bench.results import compare as cmp
from bench.results.baselines import load_baseline
from bench.results.interconnect_lines import record_lines
from bench.results.reading import read_records
from bench.results.records import Record, group_label

UNKNOWN = "unknown"  # an environment fact the results do not record


# --- table --------------------------------------------------------------------------------------

def _table(results: list[Record], comparisons: list | None,
           baseline: dict | None) -> tuple[list[str], list[list[str]], list[str], list[dict[str, Any]], list[str]]:
    """(headers, cells, alignments 'l'/'r', not-run cases, notes)."""
    rows, not_run, notes = case_rows(results)
    show_cv = any(row["stats"]["n"] >= 2 for row in rows)
    by_group_label = {c.label: c for c in comparisons or []}
    show_vs = comparisons is not None
    headers = ["Configuration", "Training Time", "Speedup", "Devices", "Nodes", "Throughput (img/s)",
               "Test accuracy", "Scaling efficiency"]
    align = ["l", "r", "r", "r", "r", "r", "r", "r"]
    if show_cv:
        headers.append("CV of fit_s")
        align.append("r")
    if show_vs:
        headers.append(f"vs {(baseline or {}).get('name') or 'baseline'}")
        align.append("l")
    cells = []
    for row in rows:
        acc = row["test_accuracy"]
        acc_text = "-" if acc is None else f"{acc:.1%}" + ("" if row["accuracy_meaningful"] else " (synthetic)")
        line = [row["configuration"], fmt_seconds(row["fit_s"]), _fmt(row["speedup"], ".2f") +
                ("x" if row["speedup"] is not None else ""), str(row["devices"]), str(row["nodes"]),
                _fmt(row["throughput_img_s"], ",.0f"), acc_text, _fmt(row["efficiency"], ".1%")]
        if show_cv:
            st = row["stats"]
            line.append(f"{st['cv']:.1%} (n={st['n']})" if st["cv"] is not None else f"- (n={st['n']})")
        if show_vs:
            c = by_group_label.get(group_label(row["group"]))
            line.append(_vs_cell(c))
        cells.append(line)
    for c in comparisons or []:
        if c.verdict in ("skipped", "invalid", "tainted"):
            continue  # listed under "not run"
        notes.extend(f"vs baseline, {c.label} ({c.verdict}): {note}" for note in c.notes)
        if c.verdict == "missing":
            notes.append(f"vs baseline, {c.case}: in the baseline file ({fmt_seconds(c.fit_s_baseline)}) "
                         "but not among the results")
    notes.extend(f"interconnect check of {line.strip()}" for line in record_lines(results))  # beside the efficiency
    return headers, cells, align, not_run, notes


def _vs_cell(c: Any) -> str:
    """The change against the baseline file: "+5.2% (regression; detectable 3.1%)" (the detectable change,
    :mod:`bench.results.power`); on ratios only the verdict."""
    if c is None:
        return "-"
    if c.basis != "time" or c.diff_pct is None:
        return c.verdict
    detectable = f"; detectable {c.detectable_pct:.1f}%" if c.detectable_pct is not None else ""
    return f"{c.diff_pct:+.1f}% ({c.verdict}{detectable})"


def _environment(records: list[Record]) -> list[tuple[str, str]]:
    """(label, value) pairs summarising the environments; distinct values joined, 'unknown' where missing."""
    used = [r for r in records if r.valid] or records

    def values(get) -> str:
        seen: list[str] = []
        for r in used:
            value = get(r.environment or {}, r)
            text = UNKNOWN if value in (None, "", []) else str(value)
            if text not in seen:
                seen.append(text)
        known = [v for v in seen if v != UNKNOWN]
        return ", ".join(known + ([f"{UNKNOWN} for some results"] if known and UNKNOWN in seen else [])) or UNKNOWN

    def gpus(env: dict, _r: dict) -> str | None:
        names = env.get("gpu_names")
        if names:
            counts: dict[str, int] = {}
            for n in names:
                counts[n] = counts.get(n, 0) + 1
            return ", ".join(f"{c} x {n}" for n, c in counts.items()) + " per node"
        if env.get("gpu_count") == 0:
            return "none (CPU: " + (env.get("cpu_model") or "model unknown") + f", {cores(env) or '?'} cores)"
        return None

    def commit(env: dict, _r: dict) -> str | None:
        c = env.get("git_commit")
        return None if not c else c[:12] + (" (dirty)" if env.get("git_dirty") else "")

    def image(env: dict, _r: dict) -> str | None:
        img, rt = env.get("container_image"), env.get("container_runtime")
        return img if img and not rt else f"{img or 'image unknown'} ({rt})" if rt else None

    nodes = max((r.nodes for r in used), default=1)
    hosts = sorted({h for r in used for h in (r.world.get("hostnames") or [])})
    return [("GPUs", values(gpus)), ("Driver", values(lambda e, r: e.get("cuda_driver") or ("none (no GPU)" if e.get("gpu_count") == 0
                                                                      else None))),
            ("CUDA (torch build)", values(lambda e, r: e.get("torch_cuda_build"))),
            ("Nodes", f"{nodes} (hosts: {', '.join(hosts) if hosts else UNKNOWN})"),
            ("torch", values(lambda e, r: e.get("torch"))), ("lightning", values(lambda e, r: e.get("lightning"))),
            ("Python", values(lambda e, r: e.get("python"))), ("Image", values(image)),
            ("Git commit", values(commit))]


def build_report(results: list[Record], comparisons: list | None, baseline: dict | None) -> str:
    """The markdown report (see the module docstring) of records from :func:`bench.results.reading.read_records`.

    Args:
        results: the records (each sample once).
        comparisons: :func:`bench.results.compare.compare` output against ``baseline``, or None (no column).
        baseline: the baseline dict the comparisons were made against (its name heads the column).

    Raises:
        ValueError: see :func:`case_rows`.
    """
    headers, cells, align, not_run, notes = _table(results, comparisons, baseline)
    out = ["# cifar-bench report", "",
           f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from "
           f"{len(results)} result(s). Training time = median `fit_s` (Lightning's training loop, seconds); "
           "speedup = training time of the baseline case / training time of the case; scaling efficiency = "
           "speedup / devices. Each row is one configuration: its training time, throughput and test accuracy "
           "are medians over its valid repeats (how many: \"Repeats\" under What ran).", ""]
    if cells:
        out += render(headers, cells, fmt="pipe", align=_align(align)).splitlines()
    else:
        out.append("No case has a valid run: there is nothing to time.")
    if not_run:
        out += ["", "**Not run or not a figure:**", ""]
        out += [f"- {n['case']}: {n['status']} - {n['reason']}" for n in not_run]
    if notes:
        out += ["", "**Notes:**", ""] + [f"- {n}" for n in notes]
    if cells:
        out += ["", "![Training time and speedup per case](report.png)"]
    rows = case_rows(results)[0]
    out += what_ran_section(rows)
    out += where_the_time_goes(rows)
    out += not_a_figure_lines(results)  # a tainted run's phases and straggler still hold
    out += ["", "## Environment", ""] + [f"- {label}: {value}" for label, value in _environment(results)]
    return "\n".join(out) + "\n"


def _align(align: list[str]) -> list[str]:
    return ["right" if a == "r" else "left" for a in align]


def format_terminal_table(results: list[Record], comparisons: list | None = None,
                          baseline: dict | None = None) -> str:
    """The report's table as aligned plain text, then the not-run cases and notes."""
    headers, cells, align, not_run, notes = _table(results, comparisons, baseline)
    lines = render(headers, cells, align=_align(align)).splitlines() if cells else ["(no case has a valid run)"]
    lines += [f"not run: {n['case']}: {n['status']} - {n['reason']}" if n["status"] == "skipped"
              else f"{n['status']}: {n['case']} - {n['reason']}" for n in not_run]  # status: "not a figure (RUN)"
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


# --- files --------------------------------------------------------------------------------------


def prepare(paths: list[str | Path], baseline: str | os.PathLike | dict | None = None,
            tolerance: float = 10.0) -> tuple[list[Record], list | None, dict | None]:
    """Load results and the baseline (name, path or dict) and compare: (results, comparisons, baseline).

    Raises:
        ValueError: unreadable inputs or baseline, negative tolerance, no results.
    """
    if not paths:
        raise ValueError("no input files: pass result JSON, pytest-benchmark JSON or baseline files")
    results = read_records(list(paths))
    if baseline is None:
        return results, None, None
    if not isinstance(baseline, dict):
        baseline = load_baseline(baseline)
    return results, cmp.compare(results, baseline, tolerance_pct=tolerance), baseline


def write_report(paths: list[str | Path], out_dir: str | Path, baseline: str | os.PathLike | dict | None = None,
                 tolerance: float = 10.0) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` into ``out_dir`` (created if needed), each atomically.

    Returns:
        (path of report.md, path of report.png).

    Raises:
        ValueError: bad inputs (see :func:`prepare` and :func:`case_rows`); nothing is written then.
        OSError: ``out_dir`` cannot be created or written.
    """
    return _write_files(*prepare(paths, baseline, tolerance), out_dir)


def _write_files(results: list[Record], comparisons: list | None, base: dict | None,
                 out_dir: str | Path) -> tuple[Path, Path]:
    markdown = build_report(results, comparisons, base)  # both built before anything is written
    rows = case_rows(results)[0]
    png = render_png(rows, comparisons, (base or {}).get("name"), title_line(rows))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from bench.scaling.sweep import report_section  # (a case at several world sizes: the sweep's table and chart)

    markdown += "\n".join(report_section([r.result for r in results if r.result], out)) + "\n"
    return (atomic_write_bytes(out / "report.md", markdown.encode("utf-8")),
            atomic_write_bytes(out / "report.png", png))


# --- command line -------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``report RESULTS... [--baseline NAME|PATH] [--tolerance PCT] --out DIR`` to ``subparsers``."""
    p = subparsers.add_parser("report", help="write report.md (publishable table) and report.png from results")
    p.add_argument("results", nargs="+", type=Path, help="result JSON, pytest-benchmark JSON or baseline files")
    p.add_argument("--baseline", help="also compare with this baseline (baselines/NAME.json or a path)")
    p.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="allowed slowdown in percent (default 10)")
    p.add_argument("--out", required=True, type=folder_argument, help="folder for report.md and report.png")
    p.set_defaults(func=cmd_report)
    return p


def check_out_folder(out: Path) -> None:
    """Make ``out`` (a folder, new or existing) and check that report.md can be written there.

    Raises:
        ValueError: ``out`` is a file, or the folder cannot be made or written (read-only, a file on
            its path); the message names ``--out`` and what to do.
    """
    try:
        writable_folder(out)
    except FolderIsAFile as err:
        raise ValueError(f"--out {out} is a file: the report is a folder (report.md, report.png); "
                         "name a folder, new or existing") from err
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write report.md there ({err.strerror}); choose another folder") from err


def cmd_report(args: argparse.Namespace) -> int:
    """Print the table, write the report, print the paths. Returns 0 (bad input raises ValueError)."""
    results, comparisons, base = prepare(args.results, args.baseline, args.tolerance)
    check_out_folder(args.out)  # said before the table is printed
    print(format_terminal_table(results, comparisons, base), end="")
    md, png = _write_files(results, comparisons, base, args.out)
    print(f"report: {md}")
    print(f"figure: {png}")
    return 0
