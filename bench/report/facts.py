"""What ran, as the results recorded it: the report's "What ran" and "Where the time goes" sections.

Pure functions over :class:`bench.results.records.Record` lists and :func:`bench.report.caserows.case_rows`
rows. Every fact is read from the results (``config``, ``world``, ``environment``), never from the
machine writing the report: a report written on a laptop about a cluster's runs describes the cluster.
Where runs differ, each distinct value is listed with the rows that have it; ``unknown`` where no
result says.
"""

from __future__ import annotations

from typing import Any, Callable

from bench.measure.steptable import markdown_breakdown
from bench.results.records import Record
from bench.results.runlines import run_lines

UNKNOWN = "unknown"  # a fact the results do not record


def _distinct(rows: list[dict[str, Any]], get: Callable[[Record], Any]) -> str:
    """The values of ``get`` over the rows' runs: one value, or "a (row, row); b (row)" where they differ."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        for r in row["runs"]:
            value = get(r)
            text = UNKNOWN if value in (None, "", []) else str(value)
            names = seen.setdefault(text, [])
            if row["configuration"] not in names:
                names.append(row["configuration"])
    if len(seen) <= 1:
        return next(iter(seen), UNKNOWN)
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in seen.items())


def per_device_batch(r: Record) -> int | None:
    """Images per device per step: the run's read-back ``world.per_device_batch_size``, else global / devices."""
    recorded = r.world.get("per_device_batch_size")
    if recorded:
        return int(recorded)
    global_batch = (r.config or {}).get("global_batch_size")
    return global_batch // r.devices if global_batch and r.devices else None


def cores(env: dict) -> str | None:
    """CPU cores as the run recorded them: usable (its affinity) of the node's, e.g. "1 usable of 2"."""
    usable, total = env.get("cpus_usable"), env.get("cpu_count")
    if usable and total and usable != total:
        return f"{usable} usable of {total}"
    return str(usable or total) if usable or total else None


def _data(config: dict) -> str | None:
    data = config.get("data")
    if not data:
        return None
    sizes = [f"{config[k]} {what}" for k, what in (("train_samples", "training"), ("test_samples", "test"))
             if config.get(k)]
    kind = config.get("data_kind")
    return f"{data}" + (f" ({kind})" if kind else "") + (f", first {' and '.join(sizes)} images" if sizes else "")


def what_ran(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, value) facts of the rows' valid runs (rows of :func:`bench.report.caserows.case_rows`)."""
    cfg = lambda key: (lambda r: (r.config or {}).get(key))  # noqa: E731
    env = lambda key: (lambda r: (r.environment or {}).get(key))  # noqa: E731
    image = lambda r: (r.environment or {}).get("container_image") or (  # noqa: E731
        f"none recorded ({(r.environment or {})['container_runtime']})" if (r.environment or {}).get("container_runtime")
        else None)
    return [("Preset", _distinct(rows, cfg("preset"))), ("Model", _distinct(rows, cfg("model"))),
            ("Data", _distinct(rows, lambda r: _data(r.config or {}))),
            ("Epochs", _distinct(rows, cfg("epochs"))),
            ("Global batch (images per step)", _distinct(rows, cfg("global_batch_size"))),
            ("Per-device batch", _distinct(rows, per_device_batch)),
            ("Precision", _distinct(rows, cfg("precision"))),
            ("Data path (host to device)", _distinct(rows, cfg("data_path"))),
            ("Devices x nodes", _distinct(rows, lambda r: f"{r.devices} x {r.nodes} ({r.config.get('accelerator') or 'device'})"
                                          if r.config else f"{r.devices} x {r.nodes}")),
            ("CPU cores per node", _distinct(rows, lambda r: cores(r.environment or {}))),
            ("Image", _distinct(rows, image)),
            ("Versions", _distinct(rows, lambda r: ", ".join(f"{k} {v}" for k in ("torch", "lightning", "python")
                                                             if (v := (r.environment or {}).get(k))) or None)),
            ("Repeats (valid runs per row)", "; ".join(f"{row['configuration']}: {len(row['runs'])}" for row in rows))]


def shown_run(row: dict[str, Any]) -> tuple[Record, str]:
    """The run a per-run table shows for a row, and the words that say which: the run whose fit_s is
    the median of the repeats (the lower middle one for an even count), so it is a real run, not a mix."""
    runs = sorted(row["runs"], key=lambda r: (r.fit_s, r.run_id))
    if len(runs) == 1:
        return runs[0], f"run `{runs[0].run_id}` (its only run)"
    pick = runs[(len(runs) - 1) // 2]
    return pick, f"run `{pick.run_id}` (fit_s {pick.fit_s:.3g} s, the median of its {len(runs)} repeats)"


def title_line(rows: list[dict[str, Any]]) -> str:
    """One line for a figure's title: preset, model, epochs, global batch, hardware (as recorded)."""
    if not rows:
        return ""
    facts = dict(what_ran(rows))
    first = rows[0]["runs"][0].environment or {}
    gpus = first.get("gpu_names")
    hardware = (f"{len(gpus)} x {gpus[0]} per node" if gpus else
                f"CPU {first.get('cpu_model') or ''}, {facts['CPU cores per node']} cores".replace("CPU ,", "CPU,"))
    return (f"preset {facts['Preset']} - {facts['Model']} - {facts['Epochs']} epoch(s) - global batch "
            f"{facts['Global batch (images per step)']} - {hardware}")


def what_ran_section(rows: list[dict[str, Any]]) -> list[str]:
    """"What ran": the facts of the table's runs as they recorded them (:func:`bench.report.facts.what_ran`)."""
    if not rows:
        return []
    return (["", "## What ran", "", "As the results recorded them (valid runs only); a value that differs "
             "between rows names its rows.", ""] + [f"- {label}: {value}" for label, value in what_ran(rows)])


def where_the_time_goes(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's per-step breakdown, from one real run (the median one, said below the table)."""
    shown = [shown_run(row) for row in rows]
    steps = markdown_breakdown([run.result for run, _ in shown if run.result])
    walls = run_lines([run.result for run, _ in shown if run.result])  # wall time in phases, straggler
    if not steps and not walls:
        return []
    out = ["", "## Where the time goes", ""]
    if steps:
        out += (["Median training step of the last epoch, averaged over the ranks (see `bench/measure/breakdown.py`), "
                 "of one run per row:", ""] + steps + [""]
                + [f"- {run.case}: {words}" for run, words in shown if run.result and run.result.get("status") == "ok"])
    if walls:  # (docs/where-the-time-goes.md: the phases, and which a user can shorten)
        out += ["", "The same runs' wall time in phases, and the straggler of each ddp run:", ""]
        out += [f"- {line}" for line in walls]
    return out


def not_a_figure_lines(results: list[Record]) -> list[str]:
    """Wall time in phases and the straggler of the runs that finished but are no figure (e.g. tainted by
    a contended machine): what happened in them still holds."""
    lines = run_lines([r.result for r in results if r.status == "ok" and not r.valid and r.result])
    return (["", "Runs that are not figures (see above), as they happened:", ""] + [f"- {x}" for x in lines]
            if lines else [])
