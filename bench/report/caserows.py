"""The report's rows: a set of run records grouped into one row per configuration, with speedups.

Pure functions over :class:`bench.results.records.Record` lists (no files, no formatting): rows are grouped by
(case, devices, nodes, scaling) in the order of the published reference table (baseline, ddp, dp,
then others); each row has the median ``fit_s`` of its valid runs, the speedup against the
``baseline`` case (fit_s(baseline) / fit_s(case)) and the scaling efficiency (speedup / devices).
:mod:`bench.report.report` renders them; :mod:`bench.report.plot` draws them.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.results.baselines import work_differences
from bench.results.records import Record, by_group, group_label
from bench.results.stats import summary_stats
from bench.results.system_groups import mixed_systems_note, split_by_system

REPORT_CASE_ORDER = ("baseline", "ddp", "dp")
CASE_LABELS = {"baseline": "Baseline", "ddp": "DDP", "dp": "DP"}


def _case_key(group: tuple) -> tuple:
    case = group[0]
    return (REPORT_CASE_ORDER.index(case) if case in REPORT_CASE_ORDER else len(REPORT_CASE_ORDER), *group)


def _accelerator(record: Record) -> str | None:
    """Return "gpu", "cpu", or None when neither the config nor the environment says."""
    config, env = record.config or {}, record.environment or {}
    if config.get("accelerator") in ("gpu", "cpu"):
        return config["accelerator"]
    if record.case == "dp":
        return "gpu"  # DataParallel runs only on GPUs
    if env.get("gpu_count") or env.get("gpu_names"):
        return "gpu"
    if "gpu_count" in env:
        return "cpu"
    return None


def configuration(case: str, devices: int, nodes: int, accelerator: str | None) -> str:
    """The row label, e.g. "1 GPU (baseline)", "DDP, 2 nodes x 2 GPUs", "DP, 2 GPUs on 1 node".

    On CPU the devices are processes ("DDP, 2 processes on 1 node"); an unknown accelerator is
    taken as GPU (the reference figures do not record it).
    """
    unit = ("process", "processes") if accelerator == "cpu" else ("GPU", "GPUs")
    count = lambda n: f"{n} {unit[0] if n == 1 else unit[1]}"  # noqa: E731
    if case == "baseline":
        return f"{count(devices)} (baseline)"
    label = CASE_LABELS.get(case, case)
    if nodes > 1:
        return f"{label}, {nodes} nodes x {count(devices // nodes)}"
    return f"{label}, {count(devices)} on 1 node"


def _median_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def case_rows(records: list[Record]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Group records by (case, devices, nodes, scaling): (rows of groups with valid runs, runs that
    are not figures, notes).

    A row: ``case, group, configuration, devices, nodes, accelerator, samples, stats`` (of
    :func:`bench.results.stats.summary_stats`), ``fit_s`` (median, seconds), ``speedup``,
    ``efficiency`` (fractions; None when not available), ``throughput_img_s``, ``test_accuracy``,
    ``accuracy_meaningful``, ``runs`` (the valid records), ``config``. A not-run entry:
    ``case, status, reason`` - one per skipped group, one per invalid run with why.

    Raises:
        ValueError: no records, or valid runs of one group that did different work.
    """
    if not records:
        raise ValueError("no results to report: pass per-run result JSON files, a pytest-benchmark "
                         "--benchmark-json file, or a baseline file")
    # one system's runs at a time (bench.results.system_groups): two machines are never pooled into a row,
    # nor is one's baseline the other's speedup reference; each row of a mixed set names its system
    rows, not_run, notes = [], [], [note] if (note := mixed_systems_note(records)) else []
    for same, system in split_by_system(records):
        more = _system_rows(same)
        for row in more[0]:
            row["configuration"] = " ".join(filter(None, (row["configuration"], system)))
        for entry in more[1]:
            entry["case"] = " ".join(filter(None, (entry["case"], system)))
        rows, not_run, notes = rows + more[0], not_run + more[1], notes + [" ".join(filter(None, (system, n))) for n in more[2]]
    return rows, not_run, notes


def _system_rows(records: list[Record]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """:func:`case_rows` of the records of one system."""
    rows, not_run, notes = [], [], []
    for group, runs in sorted(by_group(records).items(), key=lambda item: _case_key(item[0])):
        case, valid = group[0], [r for r in runs if r.valid]
        skipped = [r for r in runs if r.status == "skipped"]
        if skipped:
            not_run.append({"case": group_label(group), "status": "skipped", "reason": skipped[0].reason or "no reason given"})
        not_run += [{"case": group_label(group), "status": f"not a figure ({r.run_id})", "reason": r.problem}
                    for r in runs if not r.valid and r.status != "skipped"]
        if not valid:
            continue
        for other in valid[1:]:
            diff = work_differences(valid[0].config, other.config)
            if diff:
                raise ValueError(f"runs of {group_label(group)} did different work ({', '.join(diff)} differ): "
                                 "a row describes one configuration - report them separately")
        stats = summary_stats([r.fit_s for r in valid])
        accel = _accelerator(valid[0])
        rows.append({"case": case, "group": group, "configuration": configuration(case, group[1], group[2], accel),
                     "devices": group[1], "nodes": group[2], "accelerator": accel,
                     "samples": [r.fit_s for r in valid], "stats": stats, "fit_s": stats["median"],
                     "speedup": None, "efficiency": None,
                     "throughput_img_s": _median_of([r.throughput_img_s for r in valid]),
                     "test_accuracy": _median_of([r.test_accuracy for r in valid]),
                     "accuracy_meaningful": all(r.accuracy_meaningful for r in valid), "runs": valid,
                     "config": valid[0].config})
    _speedups(rows, notes)
    if any(r["accelerator"] is None for r in rows):
        notes.append("device type not recorded for some results (no config or environment): taken as GPU")
    return rows, not_run, notes


def _speedups(rows: list[dict[str, Any]], notes: list[str]) -> None:
    base = next((row for row in rows if row["case"] == "baseline"), None)
    if rows and base is None:
        notes.append("no valid 'baseline' case among the results: speedup and scaling efficiency need one")
        return
    for row in rows:
        diff = work_differences(row["config"], base["config"])
        if diff:
            notes.append(f"{row['case']}: did different work than the baseline case ({', '.join(diff)} "
                         "differ): no speedup")
            continue
        row["speedup"] = base["fit_s"] / row["fit_s"]
        row["efficiency"] = row["speedup"] / row["devices"]
