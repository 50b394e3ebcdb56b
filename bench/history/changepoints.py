"""Change points of a series of run times: E-divisive means with a permutation test (pure, numpy).

Method: Matteson & James (2014), "A nonparametric approach for multiple change point analysis of
multivariate data", J. Am. Stat. Assoc. 109(505), the method of MongoDB's and Apache Otava's
performance histories. With the energy distance |x - y| (alpha = 1 in the paper) a split of a
segment into a left part L (m points) and a right part R (k points) scores

    Q = m k / (m + k) * (2 mean|L - R| - mean|L - L'| - mean|R - R'|)

(the means over pairs of distinct points). Hierarchical binary segmentation: each step takes the
best split of every current segment, and the largest is tested by permuting the values of its
segment (up to ``permutations`` times, stopped early once 10 permutations score as high: Besag &
Clifford's sequential p-value; else p = (1 + #{permuted max Q >= observed}) / (permutations + 1)).
A split with p < ``alpha`` becomes a change point and the search goes on; the first split that is
not significant ends it.

Placement: the energy statistic decides *whether* a segment holds a change; *where* is then chosen
by :func:`place`, the Bayes rule for "within one run of the true place" under a single mean shift in
Gaussian noise (unknown means and sd). For 2-SD steps in series of 40 runs the energy statistic's own
argmax lands within one run in about 84 % of series, :func:`place` in about 88 %; a rule told both
means and the sd exactly gets about 92 % (docs/history.md, "How well a step is placed").

False-alarm control: in a series without a change, the first test is a permutation test at level
``alpha``, and the search ends at the first non-significant test, so the chance of reporting any
change point in such a series is at most ``alpha`` (per series; 0.01 by default). A segment is never
shorter than ``min_size`` runs, so a change cannot be placed among the newest ``min_size - 1`` runs:
the newest runs are judged by the time verdict instead (:mod:`bench.history.series`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.01  # per-series false-alarm level (probability of any change point in a series without one)
PERMUTATIONS = 999  # at most; smallest p possible: 1/1000 = 0.001, well below ALPHA
HITS = 10  # permutations at least as extreme that end a test early (Besag & Clifford)
MIN_SIZE = 3  # runs per segment at least (a spread needs two pairs of runs on each side)


@dataclass(frozen=True)
class Settings:
    """The method's knobs: ``alpha`` the per-series false-alarm level, ``permutations`` of each test,
    ``min_size`` the fewest runs in a segment, ``seed`` of the permutations (results are reproducible)."""

    alpha: float = ALPHA
    permutations: int = PERMUTATIONS
    min_size: int = MIN_SIZE
    seed: int = 0
    exponent: float = 1.0


@dataclass(frozen=True)
class ChangePoint:
    """A change point: ``index`` the first run of the new segment (0-based), ``p_value`` of its
    permutation test, ``q`` its statistic (units of the series)."""

    index: int
    p_value: float
    q: float


def split_scores(x: np.ndarray, min_size: int, exponent: float = 1.0) -> np.ndarray:
    """Q of every split of ``x``: shape (n,) or a batch (b, n) of series, scored each along the last axis;
    entry t is the split before x[t]; NaN where a side would be shorter than ``min_size``. O(n^2) per
    series with prefix sums of the distance matrix."""
    x = np.asarray(x, dtype=float)
    batch = x.reshape(-1, x.shape[-1])
    n = batch.shape[1]
    out = np.full(batch.shape, np.nan)
    if n >= 2 * min_size:
        d = np.abs(batch[:, :, None] - batch[:, None, :]) ** exponent
        s = np.zeros((len(batch), n + 1, n + 1))
        s[:, 1:, 1:] = d.cumsum(1).cumsum(2)
        m = np.arange(min_size, n - min_size + 1)
        k = n - m
        left = s[:, m, m]  # ordered pairs within L (each pair twice)
        cross = s[:, m, n] - left
        right = s[:, n, n][:, None] - 2 * cross - left
        e = 2 * cross / (m * k) - left / (m * (m - 1)) - right / (k * (k - 1))
        out[:, m] = m * k / n * e
    return out.reshape(x.shape)


def _best(x: np.ndarray, min_size: int, exponent: float) -> tuple[int, float]:
    scores = split_scores(x, min_size, exponent)
    if np.all(np.isnan(scores)):
        return -1, float("-inf")
    t = int(np.nanargmax(scores))
    return t, float(scores[t])


def posterior(x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The posterior of the place of one mean shift in ``x`` (shape (n,)): ``(t, p)``, the allowed splits
    (first index after the shift; each side >= ``min_size``) and their probabilities (summing to 1;
    both empty when no split is allowed). Flat priors on the two means and on log sd, uniform over the
    splits: p(t | x) ~ (m k)^(-1/2) RSS_t^(-(n-2)/2), RSS_t the residual sum of squares about the two
    sides' means (m = t, k = n - t values)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    t = np.arange(min_size, n - min_size + 1)
    if len(t) == 0:
        return t, np.zeros(0)
    c, c2 = np.concatenate([[0.0], np.cumsum(x - x.mean())]), np.concatenate([[0.0], np.cumsum((x - x.mean()) ** 2)])
    m, k = t, n - t
    rss = (c2[t] - c[t] ** 2 / m) + ((c2[n] - c2[t]) - (c[n] - c[t]) ** 2 / k)
    log_p = -0.5 * np.log(m * k) - (n - 2) / 2 * np.log(np.maximum(rss, 1e-300))
    p = np.exp(log_p - log_p.max())
    return t, p / p.sum()


def place(x: np.ndarray, min_size: int) -> int:
    """The place of one mean shift in ``x`` (shape (n,)): the first index after it.

    Of the :func:`posterior` over the splits, the t whose window t-1..t+1 holds the most posterior
    mass is returned (the Bayes rule for the loss
    "more than one run off"), except that a posterior mode on the first or last allowed split next to
    it is kept (a window there is cut short, which would always pull the place one run inwards: a step
    before the newest 3 runs would be put before the newest 4). Returns -1 when no split is allowed.
    """
    t, p = posterior(x, min_size)
    if len(t) == 0:
        return -1
    best, mode = int(np.argmax(np.convolve(p, np.ones(3), "same"))), int(np.argmax(p))
    return int(t[mode if mode in (0, len(t) - 1) and abs(mode - best) == 1 else best])


def _p_value(x: np.ndarray, q: float, settings: Settings, rng: np.random.Generator) -> float:
    """Sequential Monte Carlo p-value of the permutation test (Besag & Clifford 1991, Biometrika 78(2)):
    stop once ``HITS`` permutations score >= q (p = HITS / permutations drawn; a clearly insignificant
    split costs a few dozen permutations), else p = (1 + hits) / (permutations + 1). Permutations are
    scored in batches (at most about 4 million distances at once)."""
    n, hits, drawn = len(x), 0, 0
    size = max(1, min(100, 4_000_000 // (n * n)))
    while drawn < settings.permutations:
        b = min(size, settings.permutations - drawn)
        scores = split_scores(rng.permuted(np.tile(x, (b, 1)), axis=1), settings.min_size, settings.exponent)
        # (a permutation equal to x must count: a relative margin for the batch's rounding)
        counts = hits + np.cumsum(np.nanmax(scores, axis=1) >= q - 1e-9 * abs(q))
        if counts[-1] >= HITS:
            return HITS / (drawn + int(np.argmax(counts >= HITS)) + 1)
        hits, drawn = int(counts[-1]), drawn + b
    return (1 + hits) / (settings.permutations + 1)


def change_points(values: list[float], settings: Settings = Settings()) -> list[ChangePoint]:
    """The change points of ``values`` (a time-ordered series, e.g. fit seconds), in index order.

    Raises:
        ValueError: a value that is not finite.
    """
    x = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("change points need finite values")
    rng = np.random.default_rng(settings.seed)
    found: list[ChangePoint] = []
    while True:
        bounds = [0, *sorted(c.index for c in found), len(x)]
        candidates = [(q, a + t, a, b) for a, b in zip(bounds, bounds[1:])
                      for t, q in [_best(x[a:b], settings.min_size, settings.exponent)] if t >= 0]
        if not candidates:
            break
        q, _, a, b = max(candidates)
        p = _p_value(x[a:b], q, settings, rng)
        if p >= settings.alpha:
            break
        found.append(ChangePoint(a + place(x[a:b], settings.min_size), p, q))
    return sorted(found, key=lambda c: c.index)


def segments(n: int, points: list[ChangePoint]) -> list[tuple[int, int]]:
    """The segments [start, end) of a series of ``n`` runs cut at ``points``."""
    bounds = [0, *sorted(c.index for c in points), n]
    return list(zip(bounds, bounds[1:]))
