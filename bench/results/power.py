"""What a timing comparison could have detected: the detectable change, repeats needed, Holm's rule.

Pure functions over plain numbers (seconds, counts, fractions). The model, shared with the test in
:mod:`bench.results.stats`: log fit_s on each side is roughly normal with one common spread (a slowdown
of x % multiplies every time by 1 + x/100, so it shifts log times by log(1 + x/100) and leaves their
spread, the CV, alone). scipy is imported only inside the functions that need a t quantile.

Sources: the detectable change is the usual normal-theory power formula with t quantiles
(e.g. Chow, Shao & Wang, *Sample Size Calculations in Clinical Research*, 3.2); Holm (1979),
"A simple sequentially rejective multiple test procedure".
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

POWER = 0.80  # probability of detecting a true change of the detectable size
MAX_REPEATS = 1000  # repeats_needed gives None beyond this (the spread is too large to qualify)


def pooled_sd_log(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pooled standard deviation of log times of two samples (seconds > 0), dimensionless (~ the CV).

    None when there are fewer than 3 samples in all (no degree of freedom).
    """
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    df = len(la) + len(lb) - 2
    if df < 1:
        return None
    ss = sum((x - statistics.fmean(la)) ** 2 for x in la) + sum((x - statistics.fmean(lb)) ** 2 for x in lb)
    return math.sqrt(ss / df)


def detectable_change(n_now: int, n_ref: int, sd_log: float, level: float, power: float = POWER) -> float:
    """Smallest true slowdown (fraction: 0.09 = a ratio of medians of 1.09) that a one-sided test at
    ``level`` detects with probability ``power``, for ``n_now``/``n_ref`` samples and a common spread
    ``sd_log`` of log times.

    delta = (t[1 - level, df] + t[power, df]) * sd_log * sqrt(1/n_now + 1/n_ref), df = n_now + n_ref - 2;
    the change is exp(delta) - 1.

    Raises:
        ValueError: fewer than 3 samples in all, or a level/power outside (0, 1), or sd_log < 0.
    """
    df = n_now + n_ref - 2
    if min(n_now, n_ref) < 1 or df < 1:
        raise ValueError(f"detectable change needs >= 1 sample a side and >= 3 in all, got {n_now} and {n_ref}")
    if not (0 < level < 1 and 0 < power < 1) or sd_log < 0:
        raise ValueError(f"level and power must lie in (0, 1) and sd_log >= 0, got {level}, {power}, {sd_log}")
    return detectable_from_se(sd_log * math.sqrt(1 / n_now + 1 / n_ref), df, level, power)


def detectable_from_se(se: float, df: float, level: float, power: float = POWER) -> float:
    """Detectable change (fraction) of a one-sided t test at ``level`` with ``power``, for a standard
    error ``se`` of the difference of mean log times with ``df`` degrees of freedom (may be fractional,
    e.g. Satterthwaite's): exp((t[1 - level, df] + t[power, df]) * se) - 1."""
    from scipy import stats  # only the commands that judge need scipy

    return math.expm1((stats.t.ppf(1 - level, df) + stats.t.ppf(power, df)) * se)


def repeats_needed(sd_log: float, tolerance: float, level: float, n_ref: int | None = None) -> int | None:
    """Fewest repeats per side (or on the current side, when ``n_ref`` fixes the baseline's count) whose
    detectable change (:func:`detectable_change`) is at most ``tolerance`` (a fraction: 0.10 = 10 %).

    None when even :data:`MAX_REPEATS` is not enough (or ``tolerance`` is 0 with a spread).
    """
    for n in range(2, MAX_REPEATS + 1):
        if detectable_change(n, n if n_ref is None else n_ref, sd_log, level) <= tolerance:
            return n
    return None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (family-wise error rate <= the level
    when each adjusted p is compared with it; valid under any dependence between the tests).

    adjusted p_(i) = max over j <= i of min(1, (m - j + 1) * p_(j)), p sorted ascending, i = 1..m.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def noise_check(samples: Sequence[float], tolerance_pct: float, level: float) -> tuple[float, int | None] | None:
    """Can a baseline of these samples (seconds) show a slowdown of ``tolerance_pct``? The detectable
    change (percent) of a comparison with as many new samples as it has, at its own spread (sd of log
    times), and the repeats a side that would bring it within the tolerance. None for < 2 samples."""
    if len(samples) < 2:
        return None
    sd = statistics.stdev([math.log(x) for x in samples])
    detectable = detectable_change(len(samples), len(samples), sd, level) * 100.0
    return detectable, repeats_needed(sd, tolerance_pct / 100.0, level)
