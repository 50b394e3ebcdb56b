"""Statistics of an interleaved A/B comparison: pairs of runs, one of each side, judged by their ratio B/A.

Pure functions over plain numbers (seconds). Pair i is (a_i, b_i), two runs made back to back on the same
machine or allocation; what they share (the node, the machine's load at that time, its thermal
state) cancels in the ratio r_i = b_i / a_i, so the pairs' log ratios d_i = log r_i carry only the
difference between the sides and the run-to-run noise that remains.

The test (docs/ab.md says why): the one-sided **paired t-test on the log ratios** (H0: mean d = 0,
H1 in the direction of the median ratio), scipy's ``ttest_1samp``. It is the paired counterpart of
the unpaired rule's Welch test on log times (:func:`bench.results.stats.welch_log_p`): log makes a
slowdown a shift and the verdict the same for a ratio and its inverse, and with 3 pairs it can reach
p < 0.05, where the Wilcoxon signed-rank test cannot (its smallest one-sided p with n pairs is 0.5**n).
The estimate shown is the median of the pair ratios (robust to one disturbed pair); its 95 %
interval is the t interval of the mean log ratio, exp(mean d +- t[0.975, n-1] * sd(d) / sqrt(n)),
which under the model (d roughly normal, so symmetric: mean = median) is an interval for the median ratio.
The detectable change is the paired form of :func:`bench.results.power.detectable_change`:
exp((t[1 - level, n-1] + t[power, n-1]) * sd(d) / sqrt(n)) - 1. The verdict is the unpaired rule's
(:func:`bench.results.stats.apply_rule`) on these figures.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence

from bench.results.power import MAX_REPEATS, POWER
from bench.results.stats import ALPHA, MIN_SAMPLES_FOR_TEST, TimeVerdict, apply_rule, more_sentence

CONFIDENCE = 0.95  # two-sided level of the interval of the ratio B/A


def log_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """log(b_i / a_i) of each pair (seconds > 0 on both sides).

    Raises:
        ValueError: sides of different lengths, or a time that is not a finite number > 0.
    """
    if len(a) != len(b):
        raise ValueError(f"pairs need one time per side each, got {len(a)} A and {len(b)} B times")
    if any(not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0) for x in [*a, *b]):
        raise ValueError(f"pair times must be finite seconds > 0, got A {list(a)} and B {list(b)}")
    return [math.log(y / x) for x, y in zip(a, b)]


def paired_log_p(d: Sequence[float]) -> float:
    """One-sided p of the paired t-test on log ratios ``d`` (>= 2), in the direction of their median
    (H1 "B is slower" when median d > 0, else "B is faster"). Identical constant ratios: 1 when they
    are all 0, else 0 (scipy returns NaN there)."""
    from scipy import stats  # only the commands that judge need scipy

    slower = statistics.median(d) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_1samp(d, 0.0, alternative="greater" if slower else "less").pvalue)
    if math.isnan(p):
        return 1.0 if statistics.fmean(d) == 0 else 0.0
    return p


def ratio_interval(d: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The two-sided ``confidence`` interval of the ratio B/A from log ratios ``d`` (t interval of their
    mean, exponentiated); None with fewer than 2 pairs."""
    if len(d) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    mean = statistics.fmean(d)
    return math.exp(mean - half), math.exp(mean + half)


def detectable_paired(n: int, sd_d: float, level: float, power: float = POWER) -> float:
    """Smallest true slowdown (fraction: 0.05 = B takes 1.05 x A) that the one-sided paired test at
    ``level`` detects with probability ``power`` from ``n`` pairs whose log ratios spread by ``sd_d``.

    Raises:
        ValueError: fewer than 2 pairs, a level/power outside (0, 1), or sd_d < 0.
    """
    if n < 2:
        raise ValueError(f"the detectable change of pairs needs >= 2 pairs, got {n}")
    if not (0 < level < 1 and 0 < power < 1) or sd_d < 0:
        raise ValueError(f"level and power must lie in (0, 1) and sd_d >= 0, got {level}, {power}, {sd_d}")
    from scipy import stats

    return math.expm1((stats.t.ppf(1 - level, n - 1) + stats.t.ppf(power, n - 1)) * sd_d / math.sqrt(n))


def pairs_needed(sd_d: float, tolerance: float, level: float) -> int | None:
    """Fewest pairs whose detectable change (:func:`detectable_paired`) is at most ``tolerance``
    (fraction); None beyond :data:`bench.results.power.MAX_REPEATS`."""
    return next((n for n in range(2, MAX_REPEATS + 1) if detectable_paired(n, sd_d, level) <= tolerance), None)


@dataclass(frozen=True)
class PairedVerdict:
    """An A/B verdict: ``ratio`` the median of the pair ratios B/A, ``interval`` its :data:`CONFIDENCE`
    interval (None: fewer than 2 pairs), ``pairs`` the pairs judged, ``verdict`` the time verdict (as
    :class:`bench.results.stats.TimeVerdict`: regression = B slower beyond the tolerance, confirmed)."""

    ratio: float
    interval: tuple[float, float] | None
    pairs: int
    verdict: TimeVerdict


def judge_pairs(a: Sequence[float], b: Sequence[float], tol: float, p_value: float | None = None,
                tests: int = 1) -> PairedVerdict:
    """Verdict on B against A from pairs of times (seconds), tolerance ``tol`` percent.

    ``p_value``: the case's Holm-adjusted p (default: :func:`paired_log_p`, one test); ``tests``: cases
    tested together, so the detectable change is taken at ALPHA / tests, as in
    :func:`bench.results.stats.judge`. Fewer than 3 pairs: ``inconclusive`` (no test), with a note.
    """
    d = log_ratios(a, b)
    ratio = math.exp(statistics.median(d))
    if len(d) < MIN_SAMPLES_FOR_TEST:
        note = (f"{len(d)} pair(s): fewer than {MIN_SAMPLES_FOR_TEST} pairs give no test and no detectable "
                f"change, so no verdict; run {MIN_SAMPLES_FOR_TEST} or more pairs (--pairs)")
        return PairedVerdict(ratio, ratio_interval(d), len(d),
                             TimeVerdict("inconclusive", repeats_needed=MIN_SAMPLES_FOR_TEST, notes=(note,)))
    p = paired_log_p(d) if p_value is None else p_value
    level = ALPHA / max(tests, 1)
    sd = statistics.stdev(d)
    detectable = detectable_paired(len(d), sd, level)
    needed = pairs_needed(sd, tol / 100.0, level)
    shift = (statistics.fmean(d), sd / math.sqrt(len(d)), len(d) - 1.0)  # mean log ratio, its se, df
    verdict = apply_rule(ratio, p, detectable, needed, tol, more_sentence(needed, tol, "pairs"), shift, level,
                         "paired t")
    return PairedVerdict(ratio, ratio_interval(d), len(d), verdict)
