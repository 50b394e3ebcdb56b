"""Run results: the per-run JSON record, its atomic writing, reading and the printed summary.

One JSON file per run, written by global rank 0 only (``<out_dir>/<run_id>.json``). Format
(``schema_version`` 1)::

    {"schema": "cifar-bench/result", "schema_version": 1, "run_id": str, "case": str,
     "status": "ok" | "failed" | "interrupted" | "skipped", "reason": str | null,
     "profiled": bool, "test_knobs": {name: value},       # either set: never a real benchmark
     "profile": null | {"folder", "per_rank": [{"rank", "hostname", "schedule", "trace", "tables"}]},
     "config": {every BenchConfig field},
     "metrics": {"fit_s", "epoch_train_s": [..], "throughput_img_s", "wall_s", "optimizer_steps",
                 "steps_per_epoch", "train_images_per_epoch", "train_loss", "train_accuracy",
                 "test_accuracy", "test_correct", "test_total", "accuracy_meaningful", "parameters",
                 "step_breakdown": {"parts", "per_rank": [{"rank", "hostname", "epochs": [..]}]},
                 "phases": {"import_s", ..., "remainder_s", "wall_s"} (bench.measure.phases)},
     "straggler": null | {"rank": int | null, "why", "host", "device", "cpus", ...} (bench.results.straggler),
     "sanity": {"loss_finite": bool, "accuracy_floor": float, "accuracy_ok": bool, "passed": bool},
     "world": {"world_size", "num_nodes", "devices_per_node", "backend", "hostnames": [per rank],
               "global_batch_size", "per_device_batch_size", "params_identical": bool,
               "communication": {"backend", "network", "channels", "comm_env", ...} (bench.run.comm)},
     "environment": {see bench.measure.environment.collect},
     "interconnect": null | {"status", "elapsed_s", "table": [..], "pairs": [..], ...} (bench.run.allreduce),
     "started_utc": ISO 8601, "ended_utc": ISO 8601}

Times are seconds, throughput images/s, accuracy a fraction in [0, 1].
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from bench.core.files import atomic_open
from bench.core.tables import fmt, render
from bench.results.interconnect_lines import record_lines
from bench.results.reading import read_records
from bench.results.records import STATUSES, Record, by_group, from_result, group_label, split_by_work
from bench.results.schema import RESULT_SCHEMA as SCHEMA, RESULT_SCHEMA_VERSION as SCHEMA_VERSION
from bench.results.runlines import run_lines
from bench.results.stats import summary_stats
from bench.results.system_groups import mixed_systems_note, split_by_system, system_labels


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds and a 'Z'-equivalent offset."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def inherited_run_id() -> str | None:
    """The run id this process inherited through $BENCH_RUN_ID (set by :func:`export_run_id` in
    the process that started it, by ``bench run --repeats`` or by the suite), or None."""
    return os.environ.get("BENCH_RUN_ID") or None


def new_run_id(case: str) -> str:
    """A fresh run id for ``case``; reads no id from, and writes none to, the environment.

    Made from the Slurm job and step ids when both are set (the same in every task of an srun
    step, so all ranks agree), otherwise from the UTC time and a random 6-hex-digit suffix.
    """
    if "SLURM_JOB_ID" in os.environ and "SLURM_STEP_ID" in os.environ:
        return f"{case}-job{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{case}-{stamp}-{uuid.uuid4().hex[:6]}"


def export_run_id(run_id: str) -> None:
    """Put ``run_id`` into $BENCH_RUN_ID of this process, so that the rank processes Lightning's
    launcher starts inherit it (:func:`inherited_run_id`) and all ranks share one id."""
    os.environ["BENCH_RUN_ID"] = run_id


def result_path(out_dir: str | Path, run_id: str) -> Path:
    """Where the result JSON of ``run_id`` goes."""
    return Path(out_dir) / f"{run_id}.json"


def _jsonable(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json_atomic(obj: dict, path: str | Path, exclusive: bool = False) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temp file in the same folder, fsync, rename).

    A crash leaves either no file or the complete previous one, never a truncated JSON.
    ``exclusive``: the first writer wins (bench.core.files.atomic_open).

    Raises:
        FileExistsError: ``exclusive`` and the file exists.
        OSError: the folder cannot be created or written (bench.core.files.DiskFullError when full).
    """
    with atomic_open(path, "w", exclusive=exclusive) as f:
        json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    return Path(path)


def build_result(*, run_id: str, case: str, status: str, config: dict, started_utc: str,
                 metrics: dict | None = None, sanity: dict | None = None, world: dict | None = None,
                 environment: dict | None = None, reason: str | None = None,
                 test_knobs: dict | None = None, profiled: bool = False, profile: dict | None = None,
                 interconnect: dict | None = None) -> dict:
    """Assemble one result record (see the module docstring for the format).

    Raises:
        ValueError: unknown status.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "run_id": run_id, "case": case,
        "status": status, "reason": reason, "profiled": profiled, "test_knobs": test_knobs or {},
        "config": config, "metrics": metrics or {}, "sanity": sanity or {}, "world": world or {},
        "environment": environment or {}, "profile": profile, "interconnect": interconnect, "started_utc": started_utc, "ended_utc": utc_now(),
    }


def load_result(path: str | Path) -> dict:
    """Read a result JSON and check its schema.

    Raises:
        ValueError: unreadable, not JSON, or not a cifar-bench result of a known version.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read result {path}: {err}") from err
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a cifar-bench result (schema {SCHEMA!r} expected)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {data.get('schema_version')}, this version reads "
                         f"{SCHEMA_VERSION}")
    return data


def _records(results: list[dict | Record]) -> list[Record]:
    return [rec for r in results for rec in ([r] if isinstance(r, Record) else from_result(r, "(this run)"))]


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return None if not known else (known[(len(known) - 1) // 2] + known[len(known) // 2]) / 2


def summary_rows(results: list[dict | Record]) -> list[list[str]]:
    """The printed rows: one per group of valid runs (median fit_s, CV over its samples, n), then one
    per run that is not a figure (skipped, failed, sanity failed, profiled, test knobs) with why.

    ``results`` are records (:func:`bench.results.reading.read_records`) or result dicts.
    """
    rows, records = [], _records(results)
    labels = system_labels(records)
    for group, recs in by_group(records).items():
        # runs of different systems (bench.results.system_groups), or that did different work (another preset,
        # data set, ...) are never pooled into one row
        for valid, work in [(v, " ".join(filter(None, (system, work))))
                            for same, system in split_by_system([r for r in recs if r.valid], labels)
                            for v, work in split_by_work(same)]:
            st = summary_stats([r.fit_s for r in valid])
            thr, acc = _median([r.throughput_img_s for r in valid]), _median([r.test_accuracy for r in valid])
            synthetic = not all(r.accuracy_meaningful for r in valid)
            rows.append([group_label(group), "ok", str(len(valid)), fmt(st["median"], ".2f"),
                         "-" if st["cv"] is None else f"{st['cv']:.1%} (n={st['n']})", fmt(thr, ".0f"),
                         "-" if acc is None else f"{acc:.2%}" + (" (synthetic)" if synthetic else ""), work])
        skips: dict[str | None, int] = {}  # one row per skip reason (several run folders skip dp alike)
        for r in recs:
            if r.status == "skipped":
                skips[r.reason] = skips.get(r.reason, 0) + 1
            elif not r.valid:
                # no time: a run that is not a figure has none worth reading (the accuracy may say why)
                rows.append([group_label(group), r.status if r.status != "ok" else "not a figure", "-",
                             "-", "-", "-", fmt(r.test_accuracy, ".2%"), f"{r.run_id}: {r.problem}"])
        rows += [[group_label(group), "skipped", str(n) if n > 1 else "-", "-", "-", "-", "-", reason or "no reason given"]
                 for reason, n in skips.items()]
    return rows


def format_table(results: list[dict | Record]) -> str:
    """A plain-text table of results (see :func:`summary_rows`): fit time (median, seconds), its CV,
    throughput (images/s), accuracy, and why a run is not a figure."""
    headers = ("case", "status", "n", "fit_s [s]", "CV of fit_s", "throughput [img/s]", "test accuracy", "note")
    table = render(headers, summary_rows(results), align=("left", "left", "right", "right", "right", "right",
                                                          "right", "left"))
    mixed = mixed_systems_note(_records(results))
    checks = record_lines(_records(results))  # the interconnect check of ddp runs (bench.results.interconnect)
    lines = run_lines([r.result for r in _records(results)])  # where the wall time went, the straggler
    return (table + (f"\nnote: {mixed}" if mixed else "") + ("\ninterconnect:\n" + "\n".join(checks) if checks else "")
            + "".join(f"\n{line}" for line in lines))


def add_parser(sub) -> None:
    """``table RESULTS...``: the table of result, pytest-benchmark or baseline files."""
    t = sub.add_parser("table", help="print the table of result JSON files (each run counted once)")
    t.add_argument("results", nargs="+", type=Path, help="result JSON, pytest-benchmark JSON or baseline files")
    t.set_defaults(func=cmd_table)


def cmd_table(args) -> int:
    """Print the table of ``args.results``. Bad input raises ValueError (exit 2)."""
    print(format_table(read_records(args.results)))
    return 0
