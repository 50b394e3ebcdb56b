"""Statistics of timing samples, and the time verdict: pure functions over plain numbers.

Samples are seconds (``fit_s``). scipy is imported only where a significance test runs, so the
commands that only summarise (``table``, ``baseline record``) do not load it.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Iterable

MIN_SAMPLES_FOR_TEST = 3  # Welch's t-test needs at least this many samples on each side
ALPHA = 0.05  # significance level of the t-test


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


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``).

    Identical constant samples give 1, different constant samples 0 (scipy returns NaN there).
    """
    from scipy import stats  # only the commands that judge need scipy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if math.isnan(p):
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return p


def judge(now: list[float], ref: list[float], tol: float) -> tuple[str, float | None, list[str]]:
    """Time verdict of ``now`` against ``ref`` (seconds; medians), tolerance ``tol`` percent.

    * ``regression``: median ratio now/ref > 1 + tol/100 and, with >= 3 samples a side, Welch's
      t-test gives p < 0.05; ``faster`` symmetric;
    * ``slower``: slower within tolerance (significant where testable), or beyond it but not
      significant; ``unchanged``: anything else.

    Returns:
        (verdict, p-value or None when not tested, notes).
    """
    ratio, limit = statistics.median(now) / statistics.median(ref), 1.0 + tol / 100.0
    p_value, notes = None, []
    if min(len(now), len(ref)) >= MIN_SAMPLES_FOR_TEST:
        p_value = welch_p(now, ref)
    else:
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
