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
          "run_ids": [str, ...],            # the run of each sample (optional: absent in older files)
          "sample_groups": [str, ...],      # the group of each sample: the results folder of one make bench
                                            # (optional: absent in older files = one group, drift unknown)
          "scaling": "strong",              # scaling mode (optional; absent = strong)
          "fit_s_median": float,            # seconds; statistics of fit_s_samples
          "fit_s_mean": float,              # seconds
          "fit_s_stdev": float | null,      # seconds, sample stdev; null with one sample
          "throughput_img_s": float | null, # training images per second (median over runs)
          "test_accuracy": float | null,    # fraction 0..1 (median over runs)
          "devices": int,                   # devices that split the global batch (all nodes)
          "nodes": int,                     # nodes used
          "config": {...} | null,           # the run's config dict; null = unknown, so
                                            # "did the same work" cannot be checked
          "environment": {...} | null,      # the run's environment dict; null = unknown
          "interconnect": {...} | null      # bus bandwidth per size (GB/s), latency, transport, node pairs
                                            # (bench.results.interconnect.summarise); optional
        }, ...
      }
    }

Pure functions build and check the dict; only :func:`load_baseline` and
:func:`write_baseline` touch the file system.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.core.files import atomic_open
from bench.results.interconnect import measured, summarise
from bench.results.stats import summary_stats  # (also imported from here by the suite and `run --repeats`)
from bench.results.system import hardware_difference, system_of

SCHEMA = "cifar-bench/baseline"
SCHEMA_VERSION = 1
BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"  # (bench/results/baselines.py)
BASELINES_ENV = "BENCH_BASELINES"  # another folder of baseline files (default: the repository's baselines/)
#: Shipped reference files that `baseline record` never overwrites, even with --force.
PROTECTED = ("a100-2node",)

#: Config fields that define the work a run did; runs differing in one of them are not comparable.
WORK_FIELDS = ("model", "epochs", "global_batch_size", "data_kind", "train_samples",
               "test_samples", "preset", "precision", "num_workers", "pin_memory",
               "persistent_workers", "data_path", "tf32", "channels_last", "cudnn_benchmark", "sync_batchnorm", "scaling",
               "compile")


# Work fields added later, with the value every run recorded before them had (a stored baseline
# without the field did that work). tf32 has none: before it, torch's defaults applied (TF32
# convolutions, full-precision matmuls), which neither tf32 value reproduces.
LEGACY_WORK_DEFAULTS = {"data_path": "uint8", "channels_last": False, "cudnn_benchmark": False, "sync_batchnorm": False,
                        "scaling": "strong"}


def work_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Names of :data:`WORK_FIELDS` present in both configs with different values ([] if a config is None).

    A field of :data:`LEGACY_WORK_DEFAULTS` missing from a config counts as its legacy value.
    """
    if a is None or b is None:
        return []
    a, b = {**LEGACY_WORK_DEFAULTS, **a}, {**LEGACY_WORK_DEFAULTS, **b}
    return [f for f in WORK_FIELDS if f in a and f in b and a[f] != b[f]]


def record_baseline(records: list, name: str, source: str,
                    recorded_utc: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Build a baseline dict from records (:func:`bench.results.reading.read_records`; pure).

    Only valid records (figures) count; the others are left out and listed. The samples of one
    case are pooled and their run ids stored beside them (``run_ids``), so a baseline file read
    together with its runs counts each sample once.

    Returns:
        (baseline dict, left-out lines "run_id (case): why").

    Raises:
        ValueError: no valid record (the message lists what was left out and why), or valid
            records of one case at different scales or that did different work.
    """
    valid = [r for r in records if r.valid]
    left_out = [f"{r.run_id} ({r.case}): {r.problem}" for r in records if not r.valid]
    if not valid:
        raise ValueError("nothing valid to record: " + ("; ".join(left_out) or "no results") +
                         ". Record runs that finished ok, passed their sanity check, without --profile or test knobs")
    by_case: dict[str, list] = {}
    for r in valid:
        by_case.setdefault(r.case, []).append(r)
    cases = {case: _case_entry(case, runs) for case, runs in by_case.items()}
    ended = [r.result.get("ended_utc") for r in valid if r.result.get("ended_utc")]
    baseline = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
                "system": _system(valid), "source": source,
                "recorded_utc": recorded_utc or (max(ended) if ended else None), "cases": cases}
    return validate_baseline(baseline), left_out


def _case_entry(case: str, runs: list) -> dict[str, Any]:
    groups = sorted({r.group for r in runs})
    if len(groups) > 1:
        raise ValueError(f"runs of case {case!r} at different scales ({', '.join(map(str, groups))}): "
                         "a baseline holds one configuration per case - record them separately")
    first = runs[0]
    for other in runs[1:]:
        diff = work_differences(first.config, other.config)
        if diff:
            raise ValueError(f"runs of case {case!r} did different work ({', '.join(diff)} differ): "
                             "record a baseline from runs with one configuration")
    for other in runs[1:]:
        if system_of(first.environment) != system_of(other.environment):
            why = hardware_difference(first.environment, other.environment) or "system facts recorded differently"
            raise ValueError(f"runs of case {case!r} ran on different systems ({why}): record a baseline from "
                             "runs on one system, with the same cores")
    samples = [r.fit_s for r in runs]
    stats = summary_stats(samples)
    return {"fit_s_samples": samples, "run_ids": [r.run_id for r in runs],
            "sample_groups": [sample_group(r) for r in runs], "fit_s_median": stats["median"],
            "fit_s_mean": stats["mean"], "fit_s_stdev": stats["stdev"],
            "throughput_img_s": _median([r.throughput_img_s for r in runs]),
            "test_accuracy": _median([r.test_accuracy for r in runs]),
            "devices": first.devices, "nodes": first.nodes, "scaling": first.scaling,
            "config": first.config, "environment": first.environment,
            # bus bandwidth of the runs' interconnect checks (medians; None without one): bench.results.interconnect
            "interconnect": summarise([measured(r.result) for r in runs], [r.run_id for r in runs if measured(r.result)])}


def sample_group(record) -> str:
    """The group a sample was measured in: one ``make bench`` invocation = one results folder (the
    resolved folder of the file it was read from, so ``runs/latest`` names its target); a sample read
    from a baseline file keeps the group stored there (``sample_groups``), else that file's name."""
    if record.origin == "baseline":
        return str((record.result or {}).get("sample_group") or f"baseline:{record.baseline_name}")
    return str(Path(record.source).resolve().parent)


def case_groups(entry: dict[str, Any]) -> list[list[float]]:
    """A baseline case's samples (seconds) by group, in first-seen order; one group when the file has no
    (or a damaged) ``sample_groups`` (recorded before groups were kept: drift unknown)."""
    samples, labels = entry["fit_s_samples"], entry.get("sample_groups")
    if not isinstance(labels, list) or len(labels) != len(samples):
        return [list(samples)]
    groups: dict[str, list[float]] = {}
    for label, sample in zip(labels, samples):
        groups.setdefault(str(label), []).append(sample)
    return list(groups.values())


def _median(values: list[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


def _system(valid: list) -> dict[str, Any]:
    env = next((r.environment for r in valid if r.environment), None) or {}
    names = env.get("gpu_names") or []
    hosts = sorted({h for r in valid for h in (r.world.get("hostnames") or [])})
    return {"gpu_model": names[0] if names else None, "gpus_per_node": env.get("gpu_count"),
            "nodes": max(r.nodes for r in valid), "cpu_model": env.get("cpu_model"),
            "cpu_count": env.get("cpu_count"), "hostnames": hosts}


def validate_baseline(obj: Any, where: str = "baseline") -> dict[str, Any]:
    """Check the structure of a baseline dict and return it unchanged.

    Raises:
        ValueError: wrong schema or a newer ``schema_version``, no cases, or a case without
            fit_s samples; the message names ``where`` (e.g. the file path).
    """
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise ValueError(f"{where}: not a baseline file (expected schema {SCHEMA!r}); "
                         "create one with: cifar-bench baseline record RESULTS... --name NAME")
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


def default_dir() -> Path:
    """The folder of named baselines: ``$BENCH_BASELINES``, else the repository's ``baselines/``."""
    return Path(os.environ.get(BASELINES_ENV) or BASELINES_DIR)


def load_baseline(name_or_path: str | os.PathLike[str],
                  baselines_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read a baseline by name (``<baselines_dir>/<name>.json``, default :func:`default_dir`) or by path.

    A value that ends in ``.json`` or contains a path separator is taken as a path.

    Raises:
        ValueError: file missing (the message lists the available names), not JSON, or
            not a valid baseline (see :func:`validate_baseline`).
    """
    baselines_dir = baselines_dir if baselines_dir is not None else default_dir()
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


def write_baseline(obj: dict[str, Any], path: str | os.PathLike[str], force: bool = False) -> Path:
    """Validate and write a baseline atomically: temp file in the target folder, then ``os.replace``.

    A crash or error leaves either the old file or the new one, never a partial file,
    and removes the temp file. Returns the written path.

    Raises:
        ValueError: ``obj`` is not a valid baseline, or ``path`` exists and ``force`` is False.
        OSError: the folder does not exist or is not writable.
    """
    validate_baseline(obj)
    target = Path(path)
    if target.exists() and not force:
        raise ValueError(f"{target} exists: pass --force to replace it, or choose another --name")
    with atomic_open(target, "w", make_parents=False) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    return target


def target_path(name: str, force: bool, folder: Path | None = None) -> Path:
    """Where ``baseline record --name NAME`` writes, after the overwrite rules.

    Raises:
        ValueError: a name that is a path, a shipped reference name (:data:`PROTECTED`, even with
            ``force``: another name is suggested), or an existing file without ``force``.
    """
    if not name or "/" in name or os.sep in name or name.endswith(".json"):
        raise ValueError(f"--name {name!r}: give a plain name (written to {folder or default_dir()}/NAME.json)")
    if name in PROTECTED:
        raise ValueError(f"{name!r} is the shipped reference baseline and is never overwritten, even with "
                         f"--force: record yours under another name, e.g. --name {name}-mine")
    path = Path(folder or default_dir()) / f"{name}.json"
    if path.exists() and not force:
        raise ValueError(f"baseline {name!r} exists ({path}): pass --force to replace it, or choose another --name")
    return path
