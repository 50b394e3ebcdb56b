"""Statistics of timing samples, and the time verdict: pure functions over plain numbers.

Samples are seconds (``fit_s``). scipy is imported only where a significance test runs, so the
commands that only summarise (``table``, ``baseline record``) do not load it.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from bench.results.drift import Drift, floor as drift_floor, one_sided_p, repeats_needed_now, shift as drift_shift
from bench.results.power import MAX_REPEATS, detectable_change, detectable_from_se, pooled_sd_log, repeats_needed

MIN_SAMPLES_FOR_TEST = 3  # Welch's t-test needs at least this many samples on each side
#: level of the one-sided test: the false-alarm rate per case; several cases in one comparison share it
#: by Holm's rule (family-wise rate <= ALPHA)
ALPHA = 0.05


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
    return {"n": len(values), "mean": mean, "median": statistics.median(values), "stdev": stdev, "cv": cv}


def welch_log_p(now: Sequence[float], ref: Sequence[float]) -> float:
    """One-sided p-value of Welch's t-test on log times, in the direction of the change of medians
    (H1 "now is slower" when median(now) > median(ref), else "now is faster").

    Why this test: a slowdown multiplies times, so log times make it a shift and the verdict the same
    for a ratio and its inverse; Welch does not assume the two sides are equally noisy (a contended
    side is noisier); and unlike Mann-Whitney (smallest two-sided p with 3 samples a side: 0.10) it can
    reach p < 0.05 with the README's 3 repeats. Identical constant samples give 1, different constant
    samples 0 (scipy returns NaN there).
    """
    from scipy import stats  # only the commands that judge need scipy

    slower = statistics.median(now) > statistics.median(ref)
    a, b = [math.log(x) for x in now], [math.log(x) for x in ref]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False, alternative="greater" if slower else "less").pvalue)
    if math.isnan(p):
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return p


@dataclass(frozen=True)
class TimeVerdict:
    """A time verdict: ``verdict`` one of faster, unchanged, slower, regression, inconclusive; ``p_value``
    the one-sided Welch p after Holm's adjustment (None: not tested); ``detectable_pct`` the detectable
    change in percent (:func:`bench.results.power.detectable_change`; None: not computable);
    ``repeats_needed`` repeats per side that would make an inconclusive row conclusive."""

    verdict: str
    p_value: float | None = None
    detectable_pct: float | None = None
    repeats_needed: int | None = None
    notes: tuple[str, ...] = ()


def welch_log_shift(now: Sequence[float], ref: Sequence[float]) -> tuple[float, float, float]:
    """Welch's estimate of a shift of log times: (d, se, df) with d = mean log(now) - mean log(ref)
    (log of the ratio of geometric means), se its standard error, df the Welch-Satterthwaite degrees
    of freedom (n_now + n_ref - 2 when both variances are 0). Needs >= 2 samples a side."""
    a, b = [math.log(x) for x in now], [math.log(x) for x in ref]
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se2 > 0 else float(len(a) + len(b) - 2)
    return statistics.fmean(a) - statistics.fmean(b), math.sqrt(se2), df


def ratio_bound(d: float, se: float, df: float, level: float, slower: bool | None = None) -> float:
    """One-sided confidence bound (1 - ``level``) of the ratio exp(d) on the side of the change judged:
    the lower bound of a slowdown (``slower`` True), the upper bound of a speed-up (False); None: the
    side d lies on. A slowdown whose lower bound exceeds 1 + tolerance is beyond the tolerance at that
    confidence, whatever the power."""
    from scipy import stats

    half = stats.t.ppf(1 - level, df) * se if se > 0 else 0.0
    slower = d > 0 if slower is None else slower
    return math.exp(d - half) if slower else math.exp(d + half)


def one_sided_test_p(now: Sequence[float], ref: Sequence[float], drift: Drift | None = None) -> float:
    """The row's unadjusted one-sided p, in the direction of the change of medians: :func:`welch_log_p`
    without drift, else the drift-counting test (:func:`bench.results.drift.shift`)."""
    if drift is None:
        return welch_log_p(now, ref)
    return one_sided_p(*drift_shift(now, ref, drift), statistics.median(now) > statistics.median(ref))


def _evidence(now: list[float], ref: list[float], tol: float, level: float, drift: Drift | None) -> dict:
    """The test's ingredients: the shift (d, se, df) for the confidence bound, the detectable change
    (fraction), the repeats needed and the sentence saying so. Without drift: Welch for the bound, the
    pooled spread for the detectable change (:mod:`bench.results.power`); with it: the pooled
    within-group spread plus the drift (:mod:`bench.results.drift`)."""
    if drift is None:
        sd = pooled_sd_log(now, ref)
        needed = repeats_needed(sd, tol / 100.0, level)
        return dict(shift=welch_log_shift(now, ref), needed=needed,
                    detectable=detectable_change(len(now), len(ref), sd, level),
                    more=more_sentence(needed, tol, "repeats a side"))
    d, se, df = drift_shift(now, ref, drift)
    var_now = statistics.variance([math.log(x) for x in now])
    needed = repeats_needed_now(var_now, drift, tol / 100.0, level)
    return dict(shift=(d, se, df), needed=needed,
                detectable=detectable_from_se(se, df, level),
                more=(f"{needed} repeats now against this baseline would detect {tol:g} %" if needed else
                      f"the drift between groups alone makes the detectable change {drift_floor(drift, level):.1%}, "
                      f"so more repeats cannot bring it to {tol:g} %: record the baseline from more groups, or "
                      "measure both sides interleaved in one session"))


def judge(now: list[float], ref: list[float], tol: float, p_value: float | None = None,
          tests: int = 1, drift: Drift | None = None) -> TimeVerdict:
    """Time verdict of ``now`` against ``ref`` (seconds; ratio r of medians), tolerance ``tol`` percent.

    ``p_value``: the row's Holm-adjusted one-sided p (default: the unadjusted p of this one test);
    ``tests``: rows tested together, so the detectable change and the confidence bound are taken at
    level = ALPHA / tests (Holm's strictest step); ``drift``: the baseline's between-group drift
    (:func:`bench.results.drift.estimate`; None = unknown, the test uses the spread within the sides).
    With >= 3 samples a side, L = 1 + tol/100, D the detectable change, B the one-sided (1 - level)
    confidence bound of the ratio (:func:`ratio_bound`):

    * r > L: ``regression`` if p < ALPHA and (D <= tol, or B > L); p < ALPHA with D > tol and B <= L is
      ``inconclusive`` (a significant slowdown that a test this weak cannot place beyond the tolerance:
      at low power the significant estimates are the inflated ones); p >= ALPHA: ``inconclusive``.
      1/r > L: ``faster`` by the same rule (B < 1/L).
    * within the tolerance: ``inconclusive`` if D > tol (a slowdown beyond it could have been missed),
      else ``slower`` (r > 1 and p < ALPHA) or ``unchanged``.

    With fewer samples no test is possible: ``inconclusive``, with a note (a new user's trial had one
    run against one called a +16.7 % regression on unchanged code). docs/comparison.md states the rule.
    """
    ratio = statistics.median(now) / statistics.median(ref)
    if min(len(now), len(ref)) < MIN_SAMPLES_FOR_TEST:  # one noisy run must not decide a verdict
        note = (f"fewer than {MIN_SAMPLES_FOR_TEST} samples on a side (now {len(now)}, baseline {len(ref)}): "
                f"no significance test and no detectable change, so no verdict; run and record "
                f"{MIN_SAMPLES_FOR_TEST} or more repeats (make bench ROUNDS={MIN_SAMPLES_FOR_TEST})")
        return TimeVerdict("inconclusive", repeats_needed=MIN_SAMPLES_FOR_TEST, notes=(note,))
    level = ALPHA / max(tests, 1)
    ev = _evidence(now, ref, tol, level, drift)
    p = one_sided_test_p(now, ref, drift) if p_value is None else p_value
    return apply_rule(ratio, p, ev["detectable"], ev["needed"], tol, ev["more"], ev["shift"], level)


def more_sentence(needed: int | None, tol: float, unit: str) -> str:
    """What would make a weak test conclusive: "N {unit} would detect tol %" (``needed`` None: beyond
    MAX_REPEATS, say so)."""
    return (f"{needed} {unit} would detect {tol:g} %" if needed else
            f"even {MAX_REPEATS} {unit} would not detect {tol:g} %: reduce the noise")


def apply_rule(ratio: float, p: float, detectable: float, needed: int | None, tol: float, more: str,
               shift: tuple[float, float, float], level: float, test: str = "Welch") -> TimeVerdict:
    """The verdict rule of :func:`judge` for an estimated ratio (now/ref), its one-sided p, its detectable
    change (fraction), the samples that would detect ``tol`` percent (``needed``, None: beyond MAX_REPEATS)
    and the sentence saying so (``more``), the shift of log times (d, se, df) for the confidence bound
    (:func:`ratio_bound`) at ``level``, and the name of the test that gave ``p``. Used by :func:`judge`
    and by paired designs (:mod:`bench.results.paired`)."""
    limit = 1.0 + tol / 100.0
    common = dict(p_value=p, detectable_pct=detectable * 100.0)
    if ratio > limit or 1.0 / ratio > limit:
        word, change = ("regression", "slowdown") if ratio > 1 else ("faster", "speed-up")
        if p >= ALPHA:
            return TimeVerdict("inconclusive", repeats_needed=needed, **common, notes=(
                f"beyond the {tol:g} % tolerance but not confirmed (one-sided {test} p = {p:.3f} >= {ALPHA:g}); "
                f"{more}",))
        if detectable * 100.0 <= tol:
            return TimeVerdict(word, **common)
        # the bound on the side of the change judged: a slowdown's lower bound must itself be beyond the
        # tolerance (a trial's slowdown passed on a lower bound of -14.4 %, "beyond" the speed-up side)
        bound = ratio_bound(*shift, level, slower=ratio > 1)
        shown = f"{(bound - 1.0) * 100.0:+.1f} %"
        if (bound > limit) if ratio > 1 else (1.0 / bound > limit):
            return TimeVerdict(word, **common, notes=(
                f"the detectable change ({detectable:.1%}) exceeds the {tol:g} % tolerance, but the "
                f"{1 - level:.1%} confidence bound of the {change} ({shown}) is already beyond it",))
        return TimeVerdict("inconclusive", repeats_needed=needed, **common, notes=(
            f"significant {change} of {(ratio - 1.0) * 100.0:+.1f} % (one-sided {test} p = {p:.3f}), but the "
            f"test could only detect {detectable:.1%} and the {1 - level:.1%} confidence bound ({shown}) is "
            f"within the {tol:g} % tolerance; {more}",))
    if detectable * 100.0 > tol:
        return TimeVerdict("inconclusive", repeats_needed=needed, **common, notes=(
            f"could not have detected a {tol:g} % slowdown (detectable change {detectable:.1%}); {more}",))
    return TimeVerdict("slower" if ratio > 1.0 and p < ALPHA else "unchanged", **common)
