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
                 "step_breakdown": {"parts", "per_rank": [{"rank", "hostname", "epochs": [..]}]}},
     "sanity": {"loss_finite": bool, "accuracy_floor": float, "accuracy_ok": bool, "passed": bool},
     "world": {"world_size", "num_nodes", "devices_per_node", "backend", "hostnames": [per rank],
               "global_batch_size", "per_device_batch_size", "params_identical": bool,
               "communication": {"backend", "network", "channels", "comm_env", ...} (bench.comm)},
     "environment": {see bench.environment.collect},
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

from bench.files import atomic_open

SCHEMA = "cifar-bench/result"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "interrupted", "skipped")


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds and a 'Z'-equivalent offset."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(case: str) -> str:
    """A run id shared by all ranks of one run.

    Taken from $BENCH_RUN_ID when set; otherwise made from the Slurm job and step ids (the same
    in every task of an srun step) or from the time and a random suffix, and exported so that
    the processes Lightning's launcher starts inherit it.
    """
    if os.environ.get("BENCH_RUN_ID"):
        return os.environ["BENCH_RUN_ID"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if "SLURM_JOB_ID" in os.environ and "SLURM_STEP_ID" in os.environ:
        run_id = f"{case}-job{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
    else:
        run_id = f"{case}-{stamp}-{uuid.uuid4().hex[:6]}"
    os.environ["BENCH_RUN_ID"] = run_id
    return run_id


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
    ``exclusive``: the first writer wins (bench.files.atomic_open).

    Raises:
        FileExistsError: ``exclusive`` and the file exists.
        OSError: the folder cannot be created or written (bench.files.DiskFullError when full).
    """
    with atomic_open(path, "w", exclusive=exclusive) as f:
        json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    return Path(path)


def build_result(*, run_id: str, case: str, status: str, config: dict, started_utc: str,
                 metrics: dict | None = None, sanity: dict | None = None, world: dict | None = None,
                 environment: dict | None = None, reason: str | None = None,
                 test_knobs: dict | None = None, profiled: bool = False, profile: dict | None = None) -> dict:
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
        "environment": environment or {}, "profile": profile, "started_utc": started_utc, "ended_utc": utc_now(),
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


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_row(result: dict) -> dict[str, str]:
    """The printed figures of one result, formatted: case, status, devices, fit (and its coefficient of
    variation over ``metrics.fit_s_samples`` when repeated), throughput, accuracy."""
    m, w = result.get("metrics", {}), result.get("world", {})
    acc = m.get("test_accuracy")
    acc_text = "-" if acc is None else f"{100 * acc:.2f}%" + ("" if m.get("accuracy_meaningful", True) else " (synthetic)")
    from bench.baselines import summary_stats  # (baselines imports this module)

    samples = m.get("fit_s_samples") or []
    cv = summary_stats(samples)["cv"] if len(samples) >= 2 else None
    return {
        "case": result["case"], "status": result["status"],
        "devices": str(w.get("world_size") if result["case"] != "dp" else w.get("devices_per_node", "-")),
        "fit_s": _fmt(m.get("fit_s"), ".2f"),
        "cv": "-" if cv is None else f"{100 * cv:.1f}% (n={len(samples)})",
        "throughput_img_s": _fmt(m.get("throughput_img_s"), ".0f"),
        "test_accuracy": acc_text,
        "note": result.get("reason") or ("profiled: not a benchmark figure" if result.get("profiled") else ""),
    }


def format_table(results: list[dict]) -> str:
    """A plain-text table of results: case, status, devices, fit time, throughput, accuracy."""
    rows = [summary_row(r) for r in results]
    headers = {"case": "case", "status": "status", "devices": "devices", "fit_s": "fit_s [s]", "cv": "CV of fit_s",
               "throughput_img_s": "throughput [img/s]", "test_accuracy": "test accuracy", "note": "note"}
    widths = {k: max([len(headers[k])] + [len(r[k]) for r in rows]) for k in headers}
    line = lambda r: "  ".join(r[k].ljust(widths[k]) for k in headers).rstrip()  # noqa: E731
    return "\n".join([line(headers), line({k: "-" * widths[k] for k in headers})] + [line(r) for r in rows])
