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
        q, index, a, b = max(candidates)
        p = _p_value(x[a:b], q, settings, rng)
        if p >= settings.alpha:
            break
        found.append(ChangePoint(index, p, q))
    return sorted(found, key=lambda c: c.index)


def segments(n: int, points: list[ChangePoint]) -> list[tuple[int, int]]:
    """The segments [start, end) of a series of ``n`` runs cut at ``points``."""
    bounds = [0, *sorted(c.index for c in points), n]
    return list(zip(bounds, bounds[1:]))
