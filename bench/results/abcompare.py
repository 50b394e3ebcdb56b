"""The answer of an A/B comparison: per case, the median ratio B/A of the pairs, its interval and a verdict.

Pure functions over records (:class:`bench.results.records.Record`): ``pairs`` maps a case's label to
its pairs ``(A record or None, B record or None)`` in the order they ran (None: the run left no result).
Per case (docs/ab.md):

* pairs where a side is missing or not a figure (failed, interrupted, sanity, profiled, test knobs
  unless accepted, tainted) are left out, with the reasons; none left: ``invalid`` (``tainted`` when
  all were tainted);
* ``not comparable``: A and B did different work (a :data:`bench.results.baselines.WORK_FIELDS` field
  differs, named) or ran on different hardware (:func:`bench.results.system.hardware_difference`; the
  cores given, threads and workers, are what a setting may change on purpose, so they are not part of
  it here and show in "what changed" instead);
* otherwise the paired verdict (:func:`bench.results.paired.judge_pairs`) with p-values adjusted by
  Holm's rule over the cases tested, as ``compare`` does.

The exit status is ``compare``'s (:func:`bench.results.compare.exit_code`): 1 a regression, 5 a case with
no valid pair, 6 nothing judged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.core.tables import fmt, render
from bench.results.baselines import WORK_FIELDS, work_differences
from bench.results.envdiff import what_changed
from bench.results.paired import CONFIDENCE, judge_pairs, log_ratios, paired_log_p
from bench.results.power import holm
from bench.results.records import Record
from bench.results.stats import MIN_SAMPLES_FOR_TEST
from bench.results.system import hardware_difference

Pair = tuple[Record | None, Record | None]


@dataclass(frozen=True)
class ABRow:
    """One case of an A/B comparison. ``ratio`` = median of the pair ratios fit_s B / fit_s A (> 1: B is
    slower), ``interval`` its :data:`bench.results.paired.CONFIDENCE` interval; ``pairs`` judged,
    ``left_out`` pairs not judged; ``p_value`` Holm-adjusted one-sided paired p; ``detectable_pct``
    the detectable change in percent; ``pairs_needed`` the pairs that would detect the tolerance."""

    label: str
    verdict: str
    ratio: float | None = None
    interval: tuple[float, float] | None = None
    pairs: int = 0
    left_out: int = 0
    p_value: float | None = None
    detectable_pct: float | None = None
    pairs_needed: int | None = None
    differing_fields: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _why_not(pair: Pair) -> str | None:
    """Why a pair is not judged, or None when both of its runs are figures."""
    missing = [side for side, r in zip("AB", pair) if r is None]
    if missing:
        return f"side {' and '.join(missing)} left no result"
    bad = [f"{side}: {r.problem}" for side, r in zip("AB", pair) if not r.valid]
    return "; ".join(bad) or None


def _without_cores(env: dict | None) -> dict | None:
    return {k: v for k, v in env.items() if k != "cores_given"} if env else env


def _not_comparable(valid: list[Pair]) -> tuple[str, tuple[str, ...]] | None:
    """Why A and B cannot be judged against each other (and the work fields that differ), or None."""
    runs = [r for pair in valid for r in pair]
    fields = tuple(f for f in WORK_FIELDS if any(f in work_differences(runs[0].config, r.config) for r in runs[1:]))
    if fields:
        return f"different work ({', '.join(fields)} differ): A and B must run the same case, preset and work", fields
    for r in runs[1:]:
        if why := hardware_difference(_without_cores(r.environment), _without_cores(runs[0].environment)):
            return f"{why}: A and B must run on the same machine or allocation", ()
    return None


def _row(label: str, pairs: list[Pair]) -> tuple[ABRow, list[Pair] | None]:
    """The row of one case before the time verdict, and its valid pairs when it gets one."""
    reasons: dict[str, int] = {}
    for pair in pairs:
        if (why := _why_not(pair)) is not None:
            reasons[why] = reasons.get(why, 0) + 1
    valid = [p for p in pairs if _why_not(p) is None]
    notes = [f"{n} pair(s) left out: {why}" for why, n in reasons.items()]
    row = ABRow(label, "", pairs=len(valid), left_out=len(pairs) - len(valid))
    if not valid:
        tainted = all("tainted" in why for why in reasons)
        return replace(row, verdict="tainted" if reasons and tainted else "invalid",
                       notes=tuple(notes + ["no pair with a valid run on both sides: nothing to judge"])), None
    if (refusal := _not_comparable(valid)) is not None:
        return replace(row, verdict="not comparable", differing_fields=refusal[1], notes=tuple(notes + [refusal[0]])), None
    return replace(row, notes=tuple(notes)), valid


def compare_ab(pairs: dict[str, list[Pair]], tolerance_pct: float = 10.0) -> list[ABRow]:
    """The rows of an A/B comparison, one per case label in the order given (see the module docstring).

    Raises:
        ValueError: a negative tolerance.
    """
    if tolerance_pct < 0:
        raise ValueError(f"--tolerance is a slowdown in percent and must be >= 0, got {tolerance_pct}")
    built = [_row(label, ps) for label, ps in pairs.items()]
    times = {i: ([a.fit_s for a, _ in valid], [b.fit_s for _, b in valid])
             for i, (_, valid) in enumerate(built) if valid is not None}
    tested = [i for i, (a, _) in times.items() if len(a) >= MIN_SAMPLES_FOR_TEST]
    adjusted = dict(zip(tested, holm([paired_log_p(log_ratios(*times[i])) for i in tested])))
    rows = []
    for i, (row, _) in enumerate(built):
        if i not in times:
            rows.append(row)
            continue
        pv = judge_pairs(*times[i], tolerance_pct, p_value=adjusted.get(i), tests=len(tested))
        v = pv.verdict
        holm_note = (f"p adjusted by Holm's rule over the {len(tested)} cases tested",) if len(tested) > 1 else ()
        rows.append(replace(row, verdict=v.verdict, ratio=pv.ratio, interval=pv.interval, p_value=v.p_value,
                            detectable_pct=v.detectable_pct, pairs_needed=v.repeats_needed,
                            notes=row.notes + v.notes + holm_note))
    return rows


def _knobs(records: list[Record]) -> str:
    seen = sorted({f"{k}={v:g}" for r in records for k, v in (r.test_knobs or {}).items()})
    return ", ".join(seen) or "none"


def differences(pairs: dict[str, list[Pair]]) -> list[str]:
    """Lines "FACT: A -> B" for every recorded fact that differs between the sides' runs
    (:func:`bench.results.envdiff.what_changed`: versions, packages, the environment variables the runs
    recorded such as ``NCCL_ALGO``, ...) and the test knobs, where they differ."""
    a = [p[0] for ps in pairs.values() for p in ps if p[0] is not None]
    b = [p[1] for ps in pairs.values() for p in ps if p[1] is not None]
    if not (a and b):
        return ["a side left no result: nothing to compare"]
    lines = what_changed(b, a)
    if _knobs(a) != _knobs(b):
        lines.append(f"test knobs: {_knobs(a)} -> {_knobs(b)}")
    return lines


def format_rows(rows: list[ABRow]) -> str:
    """The A/B table (one row per case), then the notes per case."""
    head = ("case", "verdict", "ratio B/A", f"{CONFIDENCE:.0%} interval", "p", "det %", "pairs", "left out")
    body = [(r.label, r.verdict, fmt(r.ratio, ".3f"),
             f"{r.interval[0]:.3f}-{r.interval[1]:.3f}" if r.interval else "-", fmt(r.p_value, ".3g"),
             fmt(r.detectable_pct, ".1f"), str(r.pairs), str(r.left_out)) for r in rows]
    notes = [f"  {r.label}: {note}" for r in rows for note in r.notes]
    return render(head, body) + "\n" + ("\nnotes:\n" + "\n".join(notes) + "\n" if notes else "")
