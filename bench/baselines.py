"""Baseline files: stored reference timings that later runs are compared against.

Format (JSON, ``schema_version`` 1; a reader refuses a newer version)::

    {
      "schema": "cifar-bench/baseline",
      "schema_version": 1,
      "name": "a100-2node",                 # file name without .json under baselines/
      "system": {...},                      # free-form hardware description: gpu model and
                                            # count per node, nodes, cpu model (null = unknown)
      "source": "...",                      # where the figures came from (run ids, a README, ...)
      "recorded_utc": "2025-01-01T00:00:00Z" | null,
      "cases": {
        "<case>": {                         # "baseline" | "dp" | "ddp"
          "fit_s_samples": [float, ...],    # seconds of Trainer.fit, one per measured repetition
          "fit_s_median": float,            # seconds; statistics of fit_s_samples
          "fit_s_mean": float,              # seconds
          "fit_s_stdev": float | null,      # seconds, sample stdev; null with one sample
          "throughput_img_s": float | null, # training images per second (median over runs)
          "test_accuracy": float | null,    # fraction 0..1 (median over runs)
          "devices": int,                   # devices that split the global batch (all nodes)
          "nodes": int,                     # nodes used
          "config": {...} | null,           # the run's config dict; null = unknown, so
                                            # "did the same work" cannot be checked
          "environment": {...} | null       # the run's environment dict; null = unknown
        }, ...
      }
    }

Pure functions build and check the dict; only :func:`load_baseline` and
:func:`write_baseline` touch the file system.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Iterable

from bench.files import atomic_open
from bench.results import SCHEMA as RESULT_SCHEMA  # noqa: F401 (one definition; compare uses it)

SCHEMA = "cifar-bench/baseline"
SCHEMA_VERSION = 1

#: Config fields that define the work a run did; runs differing in one of them are not comparable.
WORK_FIELDS = ("model", "epochs", "global_batch_size", "data_kind", "train_samples",
               "test_samples", "preset", "precision", "num_workers", "pin_memory",
               "persistent_workers", "data_path", "tf32", "channels_last",
               "compile")


def summary_stats(samples: Iterable[float]) -> dict[str, Any]:
    """Summary of timing samples (seconds) with the :mod:`statistics` module.

    Returns:
        ``{"n", "mean", "median", "stdev", "cv"}``; ``stdev`` is the sample standard
        deviation (``None`` for one sample), ``cv`` = stdev / mean (dimensionless, ``None``
        when stdev is ``None``).

    Raises:
        ValueError: no samples, or a sample that is not a finite number > 0.
    """
    values = [float(s) for s in samples]
    if not values:
        raise ValueError("no timing samples: a case needs at least one fit_s measurement")
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"timing samples must be finite seconds > 0, got {values}")
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else None
    cv = stdev / mean if stdev is not None else None
    return {"n": len(values), "mean": mean, "median": statistics.median(values),
            "stdev": stdev, "cv": cv}


def devices_used(result: dict[str, Any]) -> int:
    """Devices that split the global batch in a per-run result: ddp world size, dp devices, else 1.

    Falls back from ``world`` to ``config`` fields; returns 1 when neither says more.
    """
    case = result.get("case")
    world = result.get("world") or {}
    config = result.get("config") or {}
    if case == "ddp":
        size = world.get("world_size") or (config.get("devices", 1) * config.get("num_nodes", 1))
        return int(size)
    if case == "dp":
        return int(config.get("devices") or world.get("devices_per_node") or 1)
    return 1


def fit_samples(result: dict[str, Any]) -> list[float]:
    """Fit-time samples (seconds) of an ok result: ``metrics.fit_s_samples``, else ``[fit_s]``.

    Raises:
        ValueError: the result has neither, or a sample is not a finite number > 0.
    """
    metrics = result.get("metrics") or {}
    samples = metrics.get("fit_s_samples") or ([metrics["fit_s"]] if metrics.get("fit_s") is not None else [])
    if not samples:
        raise ValueError(f"result {result.get('run_id')!r} (case {result.get('case')!r}) has status ok "
                         "but no metrics.fit_s / fit_s_samples; re-run it or drop the file")
    try:
        summary_stats(samples)
    except (TypeError, ValueError) as err:
        raise ValueError(f"result {result.get('run_id')!r} (case {result.get('case')!r}): bad fit_s samples "
                         f"({err}); re-run it or drop the file") from err
    return [float(s) for s in samples]


# Work fields added later, with the value every run recorded before them had (a stored baseline
# without the field did that work). tf32 has none: before it, torch's defaults applied (TF32
# convolutions, full-precision matmuls), which neither tf32 value reproduces.
LEGACY_WORK_DEFAULTS = {"data_path": "uint8", "channels_last": False}


def work_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Names of :data:`WORK_FIELDS` present in both configs with different values ([] if a config is None).

    A field of :data:`LEGACY_WORK_DEFAULTS` missing from a config counts as its legacy value.
    """
    if a is None or b is None:
        return []
    a, b = {**LEGACY_WORK_DEFAULTS, **a}, {**LEGACY_WORK_DEFAULTS, **b}
    return [f for f in WORK_FIELDS if f in a and f in b and a[f] != b[f]]


def record_baseline(results: list[dict[str, Any]], name: str, source: str,
                    recorded_utc: str | None = None) -> dict[str, Any]:
    """Build a baseline dict from per-run results (pure; only ``status == "ok"`` results count).

    Results of the same case are pooled: their fit_s samples are concatenated.

    Args:
        results: per-run result dicts (schema ``cifar-bench/result``).
        name: baseline name (file name without ``.json``).
        source: where the figures came from (free text, e.g. run ids and machine).
        recorded_utc: ISO time; default the latest ``ended_utc`` of the used results.

    Raises:
        ValueError: no ok result, or ok results of one case that did different work.
    """
    ok = [r for r in results if r.get("status") == "ok" and not r.get("profiled")]
    if not ok:
        raise ValueError("no result with status ok that was not profiled: run the benchmark (without --profile) "
                         "first, or check why runs failed")
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by_case.setdefault(r["case"], []).append(r)
    cases = {case: _case_entry(case, runs) for case, runs in by_case.items()}
    ended = [r.get("ended_utc") for r in ok if r.get("ended_utc")]
    baseline = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
                "system": _system(ok), "source": source,
                "recorded_utc": recorded_utc or (max(ended) if ended else None), "cases": cases}
    return validate_baseline(baseline)


def _case_entry(case: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    for other in runs[1:]:
        diff = work_differences(first.get("config"), other.get("config"))
        if diff:
            raise ValueError(f"runs of case {case!r} did different work ({', '.join(diff)} differ): "
                             "record a baseline from runs with one configuration")
    samples = [s for r in runs for s in fit_samples(r)]
    stats = summary_stats(samples)
    return {"fit_s_samples": samples, "fit_s_median": stats["median"], "fit_s_mean": stats["mean"],
            "fit_s_stdev": stats["stdev"],
            "throughput_img_s": _median_metric(runs, "throughput_img_s"),
            "test_accuracy": _median_metric(runs, "test_accuracy"),
            "devices": devices_used(first),
            "nodes": int((first.get("world") or {}).get("num_nodes")
                         or (first.get("config") or {}).get("num_nodes") or 1),
            "config": first.get("config"), "environment": first.get("environment")}


def _median_metric(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [(r.get("metrics") or {}).get(key) for r in runs]
    values = [float(v) for v in values if v is not None]
    return statistics.median(values) if values else None


def _system(ok: list[dict[str, Any]]) -> dict[str, Any]:
    env = ok[0].get("environment") or {}
    names = env.get("gpu_names") or []
    hosts = sorted({h for r in ok for h in ((r.get("world") or {}).get("hostnames") or [])})
    return {"gpu_model": names[0] if names else None, "gpus_per_node": env.get("gpu_count"),
            "nodes": max(int((r.get("world") or {}).get("num_nodes") or 1) for r in ok),
            "cpu_model": env.get("cpu_model"), "cpu_count": env.get("cpu_count"), "hostnames": hosts}


def validate_baseline(obj: Any, where: str = "baseline") -> dict[str, Any]:
    """Check the structure of a baseline dict and return it unchanged.

    Raises:
        ValueError: wrong schema or a newer ``schema_version``, no cases, or a case without
            fit_s samples; the message names ``where`` (e.g. the file path).
    """
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise ValueError(f"{where}: not a baseline file (expected schema {SCHEMA!r}); "
                         "create one with record_baseline/write_baseline")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{where}: baseline schema_version {obj.get('schema_version')!r} is not "
                         f"supported (this tool reads {SCHEMA_VERSION}); upgrade cifar-bench or re-record")
    cases = obj.get("cases")
    if not isinstance(cases, dict) or not cases:
        raise ValueError(f"{where}: baseline has no cases; re-record it from ok runs")
    for case, entry in cases.items():
        if not isinstance(entry, dict) or not entry.get("fit_s_samples"):
            raise ValueError(f"{where}: case {case!r} has no fit_s_samples; re-record it")
        summary_stats(entry["fit_s_samples"])
    return obj


def load_baseline(name_or_path: str | os.PathLike[str], baselines_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a baseline by name (``<baselines_dir>/<name>.json``) or by path.

    A value that ends in ``.json`` or contains a path separator is taken as a path.

    Raises:
        ValueError: file missing (the message lists the available names), not JSON, or
            not a valid baseline (see :func:`validate_baseline`).
    """
    text = os.fspath(name_or_path)
    is_path = text.endswith(".json") or os.sep in text or "/" in text
    path = Path(text) if is_path else Path(baselines_dir) / f"{text}.json"
    if not path.is_file():
        names = sorted(p.stem for p in Path(baselines_dir).glob("*.json")) if Path(baselines_dir).is_dir() else []
        raise ValueError(f"baseline {text!r} not found at {path}; available in {baselines_dir}: "
                         f"{', '.join(names) or 'none'} (or pass a path to a baseline .json)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); restore it from git or re-record it") from err
    return validate_baseline(obj, where=str(path))


def write_baseline(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate and write a baseline atomically: temp file in the target folder, then ``os.replace``.

    A crash or error leaves either the old file or the new one, never a partial file,
    and removes the temp file. Returns the written path.

    Raises:
        ValueError: ``obj`` is not a valid baseline.
        OSError: the folder does not exist or is not writable.
    """
    validate_baseline(obj)
    target = Path(path)
    with atomic_open(target, "w", make_parents=False) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    return target
