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

from bench.results.power import MAX_REPEATS, detectable_change, pooled_sd_log, repeats_needed

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


def judge(now: list[float], ref: list[float], tol: float, p_value: float | None = None,
          tests: int = 1) -> TimeVerdict:
    """Time verdict of ``now`` against ``ref`` (seconds; ratio r of medians), tolerance ``tol`` percent.

    ``p_value``: the row's Holm-adjusted one-sided p (default: :func:`welch_log_p`, one test);
    ``tests``: rows tested together, so the detectable change is taken at ALPHA / tests (Holm's
    strictest step: the row is detected with >= 80 % power whatever the other rows). With >= 3 samples
    a side, L = 1 + tol/100:

    * r > L: ``regression`` if p < ALPHA, else ``inconclusive``; 1/r > L: ``faster`` / ``inconclusive``;
    * within the tolerance: ``inconclusive`` if the detectable change exceeds tol (a slowdown beyond
      it could have been missed), else ``slower`` (r > 1 and p < ALPHA) or ``unchanged``.

    With fewer samples no test is possible: ``inconclusive``, with a note (a new user's trial had one
    run against one called a +16.7 % regression on unchanged code). A significant slowdown beyond the
    tolerance stays a regression when the detectable change is larger: its false-alarm rate is the
    level whatever the power; low power only limits what "unchanged" can claim.
    """
    ratio = statistics.median(now) / statistics.median(ref)
    if min(len(now), len(ref)) < MIN_SAMPLES_FOR_TEST:  # one noisy run must not decide a verdict
        note = (f"fewer than {MIN_SAMPLES_FOR_TEST} samples on a side (now {len(now)}, baseline {len(ref)}): "
                f"no significance test and no detectable change, so no verdict; run and record "
                f"{MIN_SAMPLES_FOR_TEST} or more repeats (make bench ROUNDS={MIN_SAMPLES_FOR_TEST})")
        return TimeVerdict("inconclusive", repeats_needed=MIN_SAMPLES_FOR_TEST, notes=(note,))
    p = welch_log_p(now, ref) if p_value is None else p_value
    level = ALPHA / max(tests, 1)
    sd = pooled_sd_log(now, ref)
    detectable = detectable_change(len(now), len(ref), sd, level)
    return apply_rule(ratio, p, detectable, repeats_needed(sd, tol / 100.0, level), tol, "repeats a side")


def apply_rule(ratio: float, p: float, detectable: float, needed: int | None, tol: float,
               unit: str, test: str = "Welch") -> TimeVerdict:
    """The verdict rule of :func:`judge` for an estimated ratio (now/ref), its one-sided p, its detectable
    change (fraction) and the samples that would detect ``tol`` percent (``needed``, None: beyond
    MAX_REPEATS; ``unit`` names them in the notes, e.g. "repeats a side" or "pairs"; ``test`` names the
    test that gave ``p``). Used by
    :func:`judge` and by paired designs (:mod:`bench.results.paired`)."""
    limit = 1.0 + tol / 100.0
    more = (f"{needed} {unit} would detect {tol:g} %" if needed else
            f"even {MAX_REPEATS} {unit} would not detect {tol:g} %: reduce the noise")
    common = dict(p_value=p, detectable_pct=detectable * 100.0)
    if ratio > limit or 1.0 / ratio > limit:
        if p < ALPHA:
            return TimeVerdict("regression" if ratio > 1 else "faster", **common)
        return TimeVerdict("inconclusive", repeats_needed=needed, **common, notes=(
            f"beyond the {tol:g} % tolerance but not confirmed (one-sided {test} p = {p:.3f} >= {ALPHA:g}); {more}",))
    if detectable * 100.0 > tol:
        return TimeVerdict("inconclusive", repeats_needed=needed, **common, notes=(
            f"could not have detected a {tol:g} % slowdown (detectable change {detectable:.1%}); {more}",))
    return TimeVerdict("slower" if ratio > 1.0 and p < ALPHA else "unchanged", **common)
