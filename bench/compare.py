"""Compare benchmark results with a baseline file: per-case verdicts and speedups (pure functions).

Verdict rules (``tolerance_pct`` = t, ratio r = fit_s now / fit_s baseline, medians of samples):

* ``not comparable``: the runs did different work (a field of :data:`bench.baselines.WORK_FIELDS`
  differs; the fields are named) - no timing verdict.
* ``regression``: r > 1 + t/100 and, when both sides have >= 3 samples, Welch's t-test on the
  fit_s samples gives p < 0.05 (``scipy.stats.ttest_ind(equal_var=False)``). With fewer samples
  tolerance alone decides and a note says so.
* ``faster``: 1/r > 1 + t/100, with the same significance rule (symmetric).
* ``slower``: slower but within tolerance (significant where testable), or beyond tolerance but
  not significant (a note says so).
* ``unchanged``: anything else.
* ``missing`` (case in the baseline, not in the current results), ``skipped`` (with the skip
  reason), ``profiled`` (only ``--profile`` runs, whose times are never benchmark figures),
  ``failed`` (only failed/interrupted runs, with the reason), ``no baseline``
  (case not in the baseline file).

Different hardware (GPU model or count, CPU model, devices used, or hardware unknown): absolute
times are shown with a warning and the verdict uses ratios only - this run's speedup over its own
``baseline`` case against the baseline file's (scaling efficiency when the device counts differ);
no significance test is made on ratios. Speedup = fit_s(baseline case) / fit_s(case); scaling
efficiency = speedup / devices (ddp: world size, dp: devices, baseline: 1).
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from bench.baselines import (RESULT_SCHEMA, SCHEMA as BASELINE_SCHEMA, WORK_FIELDS, devices_used,
                             fit_samples, validate_baseline, work_differences)
from bench.results import SCHEMA_VERSION as RESULT_SCHEMA_VERSION

MIN_SAMPLES_FOR_TEST = 3
PROFILED_REASON = "only profiled runs: their times include the profiler's overhead; compare runs made without --profile"
ALPHA = 0.05
CASE_ORDER = ("baseline", "dp", "ddp")
_INPUT_HELP = ("pass per-run result JSON files (schema cifar-bench/result), a pytest-benchmark "
               "--benchmark-json file, or a baseline file (schema cifar-bench/baseline)")


@dataclass(frozen=True)
class CaseComparison:
    """One case, current results against the baseline file. Times in seconds, diff in percent.

    ``speedup_own`` is over this run's own baseline case, ``speedup_vs_ref_baseline`` over the
    baseline file's baseline case, ``ref_speedup``/``ref_efficiency`` are the baseline file's own
    figures. ``None`` means not available.
    """

    case: str
    verdict: str
    fit_s_now: float | None = None
    fit_s_baseline: float | None = None
    diff_pct: float | None = None  # (now - baseline) / baseline * 100; > 0 is slower
    speedup_own: float | None = None
    speedup_vs_ref_baseline: float | None = None
    ref_speedup: float | None = None
    efficiency_own: float | None = None  # fraction, speedup_own / devices_now
    ref_efficiency: float | None = None  # fraction, ref_speedup / devices_baseline
    devices_now: int | None = None
    devices_baseline: int | None = None
    n_now: int = 0
    n_baseline: int = 0
    p_value: float | None = None
    basis: str | None = None  # "time", "ratio" or None (no timing verdict)
    differing_fields: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def load_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Read per-run results from per-run JSON, pytest-benchmark JSON and baseline files.

    pytest-benchmark files give ``benchmarks[i].extra_info.result`` plus a synthesized
    ``skipped`` result per ``skipped`` entry; a baseline file gives one ok result per case.

    Raises:
        ValueError: file missing, not JSON, unknown schema or newer schema_version, or a
            benchmark without ``extra_info.result``; the message says what to pass instead.
    """
    results: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"{path}: no such file; {_INPUT_HELP}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); {_INPUT_HELP}") from err
        results.extend(_results_from(obj, str(path)))
    return results


def _results_from(obj: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(obj, dict) and obj.get("schema") == RESULT_SCHEMA:
        return [_check_result(obj, where)]
    if isinstance(obj, dict) and obj.get("schema") == BASELINE_SCHEMA:
        return _results_from_baseline(validate_baseline(obj, where))
    if isinstance(obj, dict) and isinstance(obj.get("benchmarks"), list):
        out = []
        for bench in obj["benchmarks"]:
            result = (bench.get("extra_info") or {}).get("result")
            if result is None:
                raise ValueError(f"{where}: benchmark {bench.get('name')!r} has no extra_info.result; "
                                 "it was not written by cifar-bench's suite - " + _INPUT_HELP)
            out.append(_check_result(result, where))
        seen = {r["case"] for r in out}
        out += [{"schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION, "case": s["case"],
                 "status": "skipped", "reason": s.get("reason"), "config": None, "metrics": None}
                for s in obj.get("skipped") or [] if s.get("case") not in seen]
        return out
    schema = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{where}: unknown input (schema {schema!r}); {_INPUT_HELP}")


def _check_result(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("schema") != RESULT_SCHEMA:
        raise ValueError(f"{where}: not a cifar-bench result; {_INPUT_HELP}")
    if obj.get("schema_version") != RESULT_SCHEMA_VERSION:
        raise ValueError(f"{where}: result schema_version {obj.get('schema_version')!r} is not supported "
                         f"(this tool reads {RESULT_SCHEMA_VERSION}); upgrade cifar-bench")
    if obj.get("case") is None or obj.get("status") is None:
        raise ValueError(f"{where}: result lacks 'case' or 'status'; the file is damaged, re-run the case")
    if obj["status"] == "ok":
        fit_samples(obj)
    return obj


def _results_from_baseline(base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for case, e in base["cases"].items():
        devices, nodes = int(e.get("devices") or 1), int(e.get("nodes") or 1)
        out.append({"schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION, "case": case,
                    "status": "ok", "reason": None, "run_id": f"baseline:{base.get('name')}:{case}",
                    "config": e.get("config"), "environment": e.get("environment"),
                    "metrics": {"fit_s": e.get("fit_s_median"), "fit_s_samples": e["fit_s_samples"],
                                "throughput_img_s": e.get("throughput_img_s"),
                                "test_accuracy": e.get("test_accuracy")},
                    "world": {"world_size": devices if case == "ddp" else 1, "num_nodes": nodes,
                              "devices_per_node": devices // nodes}})
    return out


def compare(current: list[dict[str, Any]], baseline: dict[str, Any],
            tolerance_pct: float = 10.0) -> list[CaseComparison]:
    """Compare current results (see :func:`load_results`) with a baseline dict, one entry per case.

    Cases come in the order baseline, dp, ddp, then others alphabetically.

    Raises:
        ValueError: invalid baseline (see :func:`bench.baselines.validate_baseline`) or
            a negative tolerance.
    """
    validate_baseline(baseline)
    if tolerance_pct < 0:
        raise ValueError(f"tolerance_pct must be >= 0, got {tolerance_pct}")
    now = {case: _side_now(current, case) for case in {r["case"] for r in current}}
    ref = {case: _side_ref(entry) for case, entry in baseline["cases"].items()}
    order = sorted(set(now) | set(ref), key=lambda c: (
        CASE_ORDER.index(c) if c in CASE_ORDER else len(CASE_ORDER), c))
    return [_compare_case(c, now, ref, tolerance_pct) for c in order]


def _side_now(current: list[dict[str, Any]], case: str) -> dict[str, Any]:
    runs = [r for r in current if r.get("case") == case]
    profiled = [r for r in runs if r.get("profiled")]
    runs = [r for r in runs if not r.get("profiled")]  # the profiler's overhead is in their times
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        if not runs:
            return {"status": "profiled", "reason": PROFILED_REASON}
        return {"status": runs[0]["status"], "reason": runs[0].get("reason")}
    notes = [f"{len(runs) - len(ok)} other run(s) of this case did not finish ok"] if len(runs) > len(ok) else []
    if profiled:
        notes.append(f"{len(profiled)} profiled run(s) left out: their times include the profiler's overhead")
    mixed = [f for f in WORK_FIELDS if any(f in work_differences(ok[0].get("config"), r.get("config"))
                                           for r in ok[1:])]
    if mixed:
        notes.append(f"the current runs of this case differ among themselves in {', '.join(mixed)}")
    return {"status": "ok", "samples": [s for r in ok for s in fit_samples(r)], "config": ok[0].get("config"),
            "environment": ok[0].get("environment"), "devices": devices_used(ok[0]), "notes": notes,
            "mixed": mixed}


def _side_ref(entry: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "samples": [float(s) for s in entry["fit_s_samples"]], "config": entry.get("config"),
            "environment": entry.get("environment"), "devices": int(entry.get("devices") or 1), "notes": [],
            "mixed": []}


def _compare_case(case: str, now: dict, ref: dict, tol: float) -> CaseComparison:
    n, b = now.get(case), ref.get(case)
    if n is None:
        return CaseComparison(case, "missing", fit_s_baseline=_median(b), n_baseline=len(b["samples"]),
                              notes=("case is in the baseline but not in the current results",))
    if n["status"] != "ok":
        verdict = n["status"] if n["status"] in ("skipped", "profiled") else "failed"
        return CaseComparison(case, verdict, fit_s_baseline=_median(b), n_baseline=len(b["samples"]) if b else 0,
                              notes=(f"{n['status']}: {n.get('reason') or 'no reason given'}",))
    if b is None:
        return CaseComparison(case, "no baseline", fit_s_now=_median(n), n_now=len(n["samples"]),
                              devices_now=n["devices"], notes=("case is not in the baseline file",))
    fields = dict(case=case, fit_s_now=_median(n), fit_s_baseline=_median(b), devices_now=n["devices"],
                  devices_baseline=b["devices"], n_now=len(n["samples"]), n_baseline=len(b["samples"]))
    fields["diff_pct"] = (fields["fit_s_now"] / fields["fit_s_baseline"] - 1.0) * 100.0
    fields.update(_speedups(case, n, now.get("baseline"), b, ref.get("baseline")))
    notes = list(n["notes"])
    if b["config"] is None:
        notes.append("baseline config unknown: cannot check that the runs did the same work")
    differing = [f for f in WORK_FIELDS if f in work_differences(n["config"], b["config"]) or f in n["mixed"]]
    if differing:
        notes.append(f"runs did different work: {', '.join(differing)} differ; no timing verdict")
        return CaseComparison(verdict="not comparable", differing_fields=tuple(differing),
                              notes=tuple(notes), **fields)
    hw = _hardware_differences(n, b)
    if hw:
        notes.append(f"different hardware ({'; '.join(hw)}): absolute times are not comparable, "
                     "verdict on ratios only")
        verdict, basis, ratio_notes = _ratio_verdict(case, fields, tol)
        return CaseComparison(verdict=verdict, basis=basis, notes=tuple(notes + ratio_notes), **fields)
    verdict, p_value, time_notes = _judge(n["samples"], b["samples"], tol)
    return CaseComparison(verdict=verdict, p_value=p_value, basis="time", notes=tuple(notes + time_notes), **fields)


def _median(side: dict[str, Any] | None) -> float | None:
    return statistics.median(side["samples"]) if side and side.get("status") == "ok" else None


def _speedups(case: str, n: dict, n_base: dict | None, b: dict, b_base: dict | None) -> dict[str, Any]:
    now_t, ref_t = _median(n), _median(b)
    own = _median(n_base) / now_t if _median(n_base) and now_t and not work_differences(
        n["config"], n_base["config"]) else None
    ref_sp = _median(b_base) / ref_t if _median(b_base) and ref_t else None
    return {"speedup_own": own, "ref_speedup": ref_sp,
            "speedup_vs_ref_baseline": _median(b_base) / now_t if _median(b_base) and now_t else None,
            "efficiency_own": own / n["devices"] if own is not None else None,
            "ref_efficiency": ref_sp / b["devices"] if ref_sp is not None else None}


def _hardware_differences(n: dict[str, Any], b: dict[str, Any]) -> list[str]:
    env_n, env_b = n["environment"] or {}, b["environment"]
    out = [] if n["devices"] == b["devices"] else [f"devices {n['devices']} vs {b['devices']}"]
    if env_b is None:
        return out + ["baseline hardware unknown"]
    for key, label in (("gpu_names", "GPU models"), ("gpu_count", "GPU count"), ("cpu_model", "CPU model")):
        a, c = env_n.get(key), env_b.get(key)
        a, c = (sorted(set(a or [])), sorted(set(c or []))) if key == "gpu_names" else (a, c)
        if a != c:
            out.append(f"{label} {a} vs {c}")
    return out


def _ratio_verdict(case: str, f: dict[str, Any], tol: float) -> tuple[str, str | None, list[str]]:
    """Verdict from this run's speedup (or efficiency, if device counts differ) against the file's."""
    if case == "baseline":
        return "unchanged", "ratio", ["the baseline case is the reference of the ratios (speedup 1 by "
                                   "definition): no timing verdict across hardware"]
    same_devices = f["devices_now"] == f["devices_baseline"]
    now, ref = ((f["speedup_own"], f["ref_speedup"]) if same_devices
                else (f["efficiency_own"], f["ref_efficiency"]))
    if now is None or ref is None:
        return "not comparable", None, ["no ratio available: this run or the baseline file lacks a "
                                        "baseline case that did the same work"]
    label = "speedup" if same_devices else "scaling efficiency"
    verdict, _, notes = _judge([ref], [now], tol, test=False)  # lower speedup now reads as slower
    return verdict, "ratio", [f"{label} {now:.2f} now vs {ref:.2f} in the baseline file; "
                              "tolerance alone decides (no significance test on ratios)", *notes]


def _judge(now: list[float], ref: list[float], tol: float,
           test: bool = True) -> tuple[str, float | None, list[str]]:
    """Verdict for time samples (seconds); ``test=False`` skips the significance test."""
    ratio, limit = statistics.median(now) / statistics.median(ref), 1.0 + tol / 100.0
    p_value, notes = None, []
    if test and min(len(now), len(ref)) >= MIN_SAMPLES_FOR_TEST:
        p_value = _welch_p(now, ref)
    elif test:
        notes.append(f"fewer than {MIN_SAMPLES_FOR_TEST} samples on a side (now {len(now)}, baseline "
                     f"{len(ref)}): tolerance alone decides, no significance test")
    significant = p_value is None or p_value < ALPHA
    if ratio > limit or 1.0 / ratio > limit:
        slow = ratio > 1.0
        if significant:
            return ("regression" if slow else "faster"), p_value, notes
        notes.append(f"beyond the {tol:g}% tolerance but not significant (Welch p = {p_value:.3f})")
        return ("slower" if slow else "unchanged"), p_value, notes
    return ("slower" if ratio > 1.0 and significant else "unchanged"), p_value, notes


def _welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch p-value; identical constant samples give 1, different constant samples 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if math.isnan(p):
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return p


def any_regression(comparisons: list[CaseComparison]) -> bool:
    """True if any case has the verdict ``regression``."""
    return any(c.verdict == "regression" for c in comparisons)


def format_table(comparisons: list[CaseComparison]) -> str:
    """Plain-text table, one row per case, then the notes per case. Efficiencies in percent."""
    head = ("case", "verdict", "fit_s now", "fit_s base", "diff", "n now/base", "speedup", "eff",
            "ref speedup", "ref eff")
    rows = [head] + [(c.case, _verdict_cell(c), _fmt(c.fit_s_now, "{:.1f}"), _fmt(c.fit_s_baseline, "{:.1f}"),
                      _fmt(c.diff_pct, "{:+.1f}%"), f"{c.n_now}/{c.n_baseline}",
                      _fmt(c.speedup_own, "{:.2f}x"), _fmt(c.efficiency_own, "{:.1%}"),
                      _fmt(c.ref_speedup, "{:.2f}x"), _fmt(c.ref_efficiency, "{:.1%}")) for c in comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {c.case}: {note}" for c in comparisons for note in c.notes]
    return "\n".join(lines + (["", "notes:"] + notes if notes else [])) + "\n"


def _verdict_cell(c: CaseComparison) -> str:
    """The verdict, marked when it judges ratios (different hardware), not the times shown beside it."""
    return f"{c.verdict} (on speedup)" if c.basis == "ratio" else c.verdict


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)
