"""Drift between groups of runs: how much groups measured at different times differ, beyond their own spread.

Pure functions over plain numbers (seconds > 0; groups are lists of samples). A *group* is one
``make bench`` invocation (one results folder, :func:`bench.results.baselines.sample_group`); a baseline
recorded from several groups at different times lets the verdict count the drift between them.

The model (one-way random effects on log times): log t = mu + b_group + e, with b ~ N(0, var_between)
and e ~ N(0, var_within). var_between is estimated by the method of moments (one-way ANOVA):

    MSB = sum n_i (m_i - m)^2 / (K - 1),  MSW = sum_i sum_j (y_ij - m_i)^2 / (N - K),
    n0 = (N - sum n_i^2 / N) / (K - 1),   var_between = max(0, (MSB - MSW) / n0)

(e.g. Searle, Casella & McCulloch, *Variance Components*, 3.5). The current side is one group (conservative
when it is several: its coefficient below is then at most 1), so the variance of the difference of mean
log times is

    se^2 = var_within * (1/n_now + 1/N) + var_between * (1 + sum n_i^2 / N^2)

with var_within pooled over the current side and the baseline's groups, and its degrees of freedom by
Welch-Satterthwaite from var_within's (n_now - 1 + N - K) and var_between's (K - 1). The drift term does
not shrink with more repeats: only more groups, or both sides measured interleaved, reduce it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from bench.results.power import MAX_REPEATS, detectable_from_se


@dataclass(frozen=True)
class Drift:
    """Between-group drift of a baseline case's log times. ``var_between``/``var_within``: variances of
    log fit_s (dimensionless; the square root is about a CV); ``coef`` = sum n_i^2 / N^2 (1/K for K equal
    groups); ``df_within`` = N - K."""

    groups: int
    n: int
    var_between: float
    var_within: float
    df_within: int
    coef: float


def estimate(groups: Sequence[Sequence[float]]) -> Drift | None:
    """Method-of-moments estimate of the drift from groups of samples (seconds > 0); None when it
    cannot be estimated (fewer than 2 groups, or no group with 2 samples: N - K < 1)."""
    logs = [[math.log(x) for x in g] for g in groups if g]
    k, n = len(logs), sum(map(len, logs))
    if k < 2 or n - k < 1:
        return None
    means, grand = [statistics.fmean(g) for g in logs], statistics.fmean([y for g in logs for y in g])
    ssw = sum((y - m) ** 2 for g, m in zip(logs, means) for y in g)
    msb = sum(len(g) * (m - grand) ** 2 for g, m in zip(logs, means)) / (k - 1)
    msw = ssw / (n - k)
    n0 = (n - sum(len(g) ** 2 for g in logs) / n) / (k - 1)
    return Drift(groups=k, n=n, var_between=max(0.0, (msb - msw) / n0), var_within=msw, df_within=n - k,
                 coef=sum(len(g) ** 2 for g in logs) / n ** 2)


def _se_df(n_now: int, var_now: float, drift: Drift) -> tuple[float, float]:
    """Standard error of the difference of mean log times and its Satterthwaite degrees of freedom."""
    df_w = (n_now - 1) + drift.df_within
    var_w = ((n_now - 1) * var_now + drift.df_within * drift.var_within) / df_w
    a, b = var_w * (1.0 / n_now + 1.0 / drift.n), drift.var_between * (1.0 + drift.coef)
    if b == 0.0:
        return math.sqrt(a), float(df_w)
    if a == 0.0:
        return math.sqrt(b), float(drift.groups - 1)
    return math.sqrt(a + b), (a + b) ** 2 / (a ** 2 / df_w + b ** 2 / (drift.groups - 1))


def shift(now: Sequence[float], ref: Sequence[float], drift: Drift) -> tuple[float, float, float]:
    """(d, se, df): d = mean log(now) - mean log(ref), its standard error counting the drift, and the
    degrees of freedom (module docstring). ``now`` needs >= 2 samples; ``ref`` is the baseline's samples."""
    a = [math.log(x) for x in now]
    se, df = _se_df(len(a), statistics.variance(a), drift)
    return statistics.fmean(a) - statistics.fmean(math.log(x) for x in ref), se, df


def one_sided_p(d: float, se: float, df: float, slower: bool) -> float:
    """One-sided p of the shift d (H1: slower when ``slower``, else faster); 0 or 1 when se is 0."""
    if se == 0.0:
        return 1.0 if d == 0.0 else float((d > 0) != slower)
    from scipy import stats

    return float(stats.t.sf(d / se, df) if slower else stats.t.cdf(d / se, df))


def repeats_needed_now(var_now: float, drift: Drift, tol: float, level: float) -> int | None:
    """Fewest current repeats whose detectable change, against this baseline and its drift, is at most
    ``tol`` (fraction); None when the drift alone (var_between * (1 + coef)) keeps it above, or beyond
    :data:`bench.results.power.MAX_REPEATS`. The degrees of freedom are held at the estimate's."""
    for n in range(2, MAX_REPEATS + 1):
        se, df = _se_df(n, var_now, drift)
        if detectable_from_se(se, df, level) <= tol:
            return n
    return None


def floor(drift: Drift, level: float) -> float:
    """Detectable change (fraction) with infinitely many current repeats: the drift's own share."""
    b = drift.var_between * (1.0 + drift.coef)
    return detectable_from_se(math.sqrt(b), max(drift.groups - 1, 1), level) if b > 0 else 0.0


def describe(drift: Drift | None) -> str:
    """The drift line a verdict states."""
    if drift is None:
        return ("drift: unknown (the baseline is one group of runs); the noise used is the spread within each side, "
                "so a verdict between groups measured apart is over-confident")
    return (f"drift: estimated from {drift.groups} baseline groups (between-group sd of log fit_s "
            f"{math.sqrt(drift.var_between):.1%}, within {math.sqrt(drift.var_within):.1%}), counted in the test "
            "and the detectable change")


def noise_check_groups(groups: Sequence[Sequence[float]], tol_pct: float, level: float) -> tuple[float, int | None] | None:
    """Noise qualification of a baseline case recorded as groups (seconds): the detectable change
    (percent) of a comparison of one new group, as large as its largest, against it with the drift
    counted, and the current repeats that would bring it within ``tol_pct`` (None: the drift alone
    keeps it above). None when the drift cannot be estimated (:func:`estimate`)."""
    drift = estimate(groups)
    if drift is None:
        return None
    se, df = _se_df(max(map(len, groups)), drift.var_within, drift)
    return detectable_from_se(se, df, level) * 100.0, repeats_needed_now(drift.var_within, drift, tol_pct / 100.0, level)
