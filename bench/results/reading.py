"""The one reader of results: per-run JSON, pytest-benchmark JSON and baseline files -> records.

Every analysis command (``table``, ``compare``, ``report``, ``baseline record``) reads its inputs
through :func:`read_records` and gets one normalised :class:`Record` per *sample* (one run, or
one round of the suite), for every status, so no command branches on missing fields:

* a per-run JSON (schema ``cifar-bench/result``) is one sample, identified by its ``run_id``
  (an in-memory result with several ``metrics.fit_s_samples`` gives one record per sample);
* a pytest-benchmark entry stands for the rounds it ran: round *i* is the run whose JSON is
  ``extra_info.result_paths[i]`` (its run id is the file name without ``.json``) with the time
  ``extra_info.fit_s_samples[i]`` (and ``throughput_img_s_samples[i]``, ``test_accuracy_samples[i]``
  where the suite wrote them); the suite's ``skipped`` list gives one skipped record per case;
* a baseline file gives one record per stored sample (``cases.<case>.run_ids`` when recorded,
  else ``baseline:<name>:<case>:<i>``).

A sample named by several files (the README's glob ``runs/latest/*.json`` matches the per-run
files and ``suite.json``) is counted once; the same run id with different figures is an error
naming both files. Validity is derived once, by :func:`bench.results.records.problem_of`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from bench.results.baselines import SCHEMA as BASELINE_SCHEMA, validate_baseline
from bench.results.records import STATUSES, Record, from_result
# the per-run result format (written by bench.results.resultfile), in a module of its own for the torch-free writer
from bench.results.schema import RESULT_SCHEMA, RESULT_SCHEMA_VERSION

PRIORITY = {"run": 0, "suite": 1, "baseline": 2}  # which copy of a sample is kept (the most complete)
INPUT_HELP = ("pass per-run result JSON files (schema cifar-bench/result), a pytest-benchmark "
              "--benchmark-json file, or a baseline file (schema cifar-bench/baseline)")


def check_result(obj: Any, where: str) -> dict[str, Any]:
    """``obj`` if it is a result dict of the supported schema.

    Raises:
        ValueError: not a cifar-bench result, another schema_version, or no case/known status.
    """
    if not isinstance(obj, dict) or obj.get("schema") != RESULT_SCHEMA:
        raise ValueError(f"{where}: not a cifar-bench result; {INPUT_HELP}")
    if obj.get("schema_version") != RESULT_SCHEMA_VERSION:
        raise ValueError(f"{where}: result schema_version {obj.get('schema_version')!r} is not supported "
                         f"(this tool reads {RESULT_SCHEMA_VERSION}); upgrade cifar-bench")
    if obj.get("case") is None or obj.get("status") not in STATUSES:
        raise ValueError(f"{where}: result lacks 'case' or a known 'status'; the file is damaged, re-run the case")
    metrics = obj.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(f"{where}: 'metrics' is not an object; the file is damaged, re-run the case")
    for key in ("fit_s", "throughput_img_s", "wall_s"):  # the figures: a number (finite, >= 0) or absent/null
        value = (metrics or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f"{where}: metrics.{key} is {value!r}, not a number of seconds or images/s; "
                             "the file is damaged, re-run the case")
    return obj


def _from_suite(obj: dict[str, Any], where: str, accept: bool) -> list[Record]:
    out = []
    for bench in obj["benchmarks"]:
        info = bench.get("extra_info") or {}
        if info.get("result") is None:
            raise ValueError(f"{where}: benchmark {bench.get('name')!r} has no extra_info.result; "
                             "it was not written by cifar-bench's suite - " + INPUT_HELP)
        result = check_result(info["result"], where)
        samples = info.get("fit_s_samples") or (result.get("metrics") or {}).get("fit_s_samples")
        paths = info.get("result_paths") or []
        ids = [Path(p).stem for p in paths] if samples and len(paths) == len(samples) else None
        rounds = {k: info.get(f"{k}_samples") for k in ("throughput_img_s", "test_accuracy")}
        out += from_result(result, where, "suite", accept, samples=samples, run_ids=ids, rounds=rounds)
    for skip in obj.get("skipped") or []:
        if isinstance(skip.get("result"), dict):  # the skipped result the run wrote: its devices and run id
            out += from_result(check_result(skip["result"], where), where, "suite")
            continue
        fake = {"case": skip.get("case"), "status": "skipped", "reason": skip.get("reason"),
                "run_id": f"skipped:{skip.get('case')}@{where}"}
        out += from_result(fake, where, "suite")
    return out


def _from_baseline(base: dict[str, Any], where: str) -> list[Record]:
    out = []
    for case, e in base["cases"].items():
        devices, nodes = int(e.get("devices") or 1), int(e.get("nodes") or 1)
        samples = [float(s) for s in e["fit_s_samples"]]
        ids = e.get("run_ids") if len(e.get("run_ids") or []) == len(samples) else None
        ids = ids or [f"baseline:{base.get('name')}:{case}:{i}" for i in range(len(samples))]
        groups = e.get("sample_groups") if len(e.get("sample_groups") or []) == len(samples) else [None] * len(samples)
        for rid, sample, grp in zip(ids, samples, groups):
            out.append(Record(run_id=rid, case=case, status="ok", source=where, origin="baseline", fit_s=sample,
                              throughput_img_s=e.get("throughput_img_s"), test_accuracy=e.get("test_accuracy"),
                              devices=devices, nodes=nodes, scaling=e.get("scaling") or "strong",
                              config=e.get("config"), environment=e.get("environment"),
                              world={"world_size": devices if case == "ddp" else 1, "num_nodes": nodes,
                                     "devices_per_node": devices // nodes,
                                     "hostnames": (base.get("system") or {}).get("hostnames")},
                              result={"sample_group": grp} if grp else {}, baseline_name=base.get("name")))
    return out


def records_of(obj: Any, where: str, accept_test_knobs: bool = False) -> list[Record]:
    """Records of one parsed JSON document (any of the three inputs), not yet deduplicated.

    Raises:
        ValueError: unknown input or a damaged result/baseline; the message names ``where``.
    """
    if isinstance(obj, dict) and obj.get("schema") == RESULT_SCHEMA:
        return from_result(check_result(obj, where), where, "run", accept_test_knobs)
    if isinstance(obj, dict) and obj.get("schema") == BASELINE_SCHEMA:
        return _from_baseline(validate_baseline(obj, where), where)
    if isinstance(obj, dict) and isinstance(obj.get("benchmarks"), list):
        return _from_suite(obj, where, accept_test_knobs)
    schema = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{where}: unknown input (schema {schema!r}); {INPUT_HELP}")


def dedupe(records: Iterable[Record]) -> list[Record]:
    """Each sample once: records with one run id are merged (the most complete copy kept).

    A skipped entry of a suite file without a run id is dropped when a per-run skipped record of
    the same case is present.

    Raises:
        ValueError: one run id with different figures (status or fit_s) in two files; names both.
    """
    kept: dict[str, Record] = {}
    for r in records:
        other = kept.get(r.run_id)
        if other is None:
            kept[r.run_id] = r
            continue
        same = other.status == r.status and (other.fit_s == r.fit_s or (
            other.fit_s is not None and r.fit_s is not None and math.isclose(other.fit_s, r.fit_s, rel_tol=1e-9)))
        if not same:
            raise ValueError(f"run {r.run_id!r} has different figures in {other.source} (status {other.status}, "
                             f"fit_s {other.fit_s}) and {r.source} (status {r.status}, fit_s {r.fit_s}): "
                             "one of the files was edited or comes from another run; pass only one of them")
        if PRIORITY[r.origin] < PRIORITY[other.origin]:
            kept[r.run_id] = r
    out = list(kept.values())
    run_skips = {r.case for r in out if r.status == "skipped" and not r.run_id.startswith("skipped:")}
    return [r for r in out if not (r.run_id.startswith("skipped:") and r.case in run_skips)]


def read_records(paths: Iterable[str | Path], accept_test_knobs: bool = False) -> list[Record]:
    """Read every file, one record per sample, each sample once (see the module docstring).

    ``accept_test_knobs`` makes test-knob runs figures (only the verdict tests use it).

    Raises:
        ValueError: a file missing, not JSON, of an unknown schema, damaged, or a conflict between
            two files (see :func:`dedupe`); the message names the file(s) and what to pass instead.
    """
    records: list[Record] = []
    for path in map(Path, paths):
        if path.is_dir():
            raise ValueError(f"{path} is a folder: pass the JSON files in it (e.g. {path}/*.json); {INPUT_HELP}")
        if not path.is_file():
            raise ValueError(f"{path}: no such file; {INPUT_HELP}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); {INPUT_HELP}") from err
        records += records_of(obj, str(path), accept_test_knobs)
    return dedupe(records)
