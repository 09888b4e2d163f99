"""Distribution shift between a baseline window and a current window of live traffic.

Each function compares two samples (say last month's and this week's requests) and returns a
:class:`Shift`: a distance, the threshold it is judged against and, where a test applies, a
p-value. A shift counts as drift only when the distance is large enough to matter *and* is
unlikely to be chance, so small windows do not raise alarms on noise.

All functions are pure numpy/scipy: feed them embeddings, relevance scores, output lengths or
boolean flags pulled from stored traces. Bad input (wrong shapes, NaN, fewer than
:data:`MIN_SAMPLES` values in a window) raises :class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
"""A shift with a p-value at or above this is treated as chance."""
MIN_SAMPLES = 5
"""Fewest values per window any measure accepts; below this every statistic is noise."""


@dataclass(frozen=True)
class Shift:
    """One measure compared across the two windows.

    ``baseline`` and ``current`` hold the figure in each window where one is meaningful
    (a rate, a share, a median); ``statistic`` is the distance judged against ``threshold``.
    """

    measure: str
    baseline: float | None
    current: float | None
    statistic: float
    threshold: float
    p_value: float | None
    baseline_n: int
    current_n: int

    @property
    def drifted(self) -> bool:
        """The distance exceeds the threshold and (where tested) is significant at ALPHA."""
        return self.statistic > self.threshold and (self.p_value is None or self.p_value < ALPHA)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


def _embeddings(baseline: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(baseline, dtype=float)
    y = np.asarray(current, dtype=float)
    for name, a in (("baseline", x), ("current", y)):
        if a.ndim != 2:
            raise ValueError(
                f"{name} embeddings must be a 2-D array (rows x width), not {a.ndim}-D"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"{name} embeddings contain NaN or infinite values")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding widths differ: baseline {x.shape[1]}, current {y.shape[1]}")
    if min(len(x), len(y)) < MIN_SAMPLES:
        raise ValueError(
            f"comparing embeddings needs at least {MIN_SAMPLES} rows in each window; "
            f"got baseline={len(x)}, current={len(y)}"
        )
    return x, y


def _values(
    measure: str, baseline: Sequence[float], current: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(baseline, dtype=float)
    y = np.asarray(current, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"{measure} needs flat sequences of numbers")
    if min(len(x), len(y)) < MIN_SAMPLES:
        raise ValueError(
            f"{measure} needs at least {MIN_SAMPLES} values in each window; "
            f"got baseline={len(x)}, current={len(y)}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{measure} values contain NaN or infinite values")
    return x, y


def _mmd2(kernel: np.ndarray, first: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased squared MMD for each row of ``first``, a 0/1 mask choosing the n 'baseline'
    points of the pooled sample; ``kernel`` has a zero diagonal (the unbiased estimator
    excludes self-similarity). One matrix product covers every permutation at once."""
    k_first = first @ kernel
    s_xx = (k_first * first).sum(axis=1)
    s_xy = k_first.sum(axis=1) - s_xx
    s_yy = kernel.sum() - s_xx - 2 * s_xy
    mmd2: np.ndarray = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / (n * m)
    return mmd2


def embedding_drift(
    baseline: np.ndarray,
    current: np.ndarray,
    *,
    threshold: float = 0.05,
    permutations: int = 200,
    seed: int = 0,
    max_points: int = 500,
) -> Shift:
    """Squared MMD (Gaussian kernel) between two sets of query embeddings, with a permutation
    test. Catches any change in what users ask about, not just a moved mean. Windows larger
    than ``max_points`` are subsampled (seeded) to bound the O(n^2) cost;
    ``permutations=0`` skips the test (p-value None). Same seed, same answer."""
    x, y = _embeddings(baseline, current)
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    n, m = len(x), len(y)
    from scipy.spatial import distance  # imported here: scipy takes 0.5 s to load

    pooled_sq = distance.pdist(np.vstack([x, y]), "sqeuclidean")
    # Median heuristic on the pooled sample: a scale-free bandwidth that suits any embedding
    # model, shared by every permutation since the pooled sample does not change.
    bandwidth = float(np.median(np.sqrt(pooled_sq)))
    kernel = distance.squareform(np.exp(-pooled_sq / (2 * max(bandwidth, 1e-12) ** 2)))
    observed_mask = np.r_[np.ones(n), np.zeros(m)][None, :]
    observed = float(_mmd2(kernel, observed_mask, n, m)[0])
    p_value = None
    if permutations > 0:
        order = np.argsort(rng.random((permutations, n + m)), axis=1)
        masks = np.zeros((permutations, n + m))
        np.put_along_axis(masks, order[:, :n], 1.0, axis=1)
        null = _mmd2(kernel, masks, n, m)
        # Count the observed labelling as one of the permutations so p is never exactly 0.
        p_value = float((1 + np.sum(null >= observed)) / (1 + permutations))
    return Shift("query_embedding_mmd", None, None, observed, threshold, p_value, n, m)


def centroid_distance(baseline: np.ndarray, current: np.ndarray) -> float:
    """Cosine distance between the mean unit vectors of the two windows: 0 for the same
    average direction, larger as the typical query moves. Cheap and easy to explain, but blind
    to changes that keep the mean (use :func:`embedding_drift` for those)."""
    x, y = _embeddings(baseline, current)
    centroids = []
    for name, a in (("baseline", x), ("current", y)):
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{name} embeddings contain all-zero rows")
        centroid = (a / norms).mean(axis=0)
        if not np.linalg.norm(centroid) > 0:
            raise ValueError(f"{name} embeddings average to the zero vector")
        centroids.append(centroid)
    from scipy.spatial import distance  # imported here: scipy takes 0.5 s to load

    return float(distance.cosine(centroids[0], centroids[1]))


def _two_proportion_p(hits: tuple[int, int], sizes: tuple[int, int], alternative: str) -> float:
    """p-value of a pooled two-proportion z-test; ``alternative`` is "greater" (current rate
    above baseline) or "two-sided"."""
    pooled = (hits[0] + hits[1]) / (sizes[0] + sizes[1])
    if pooled in (0.0, 1.0):  # every value identical in both windows: no evidence of change
        return 1.0
    se = np.sqrt(pooled * (1 - pooled) * (1 / sizes[0] + 1 / sizes[1]))
    z = (hits[1] / sizes[1] - hits[0] / sizes[0]) / se
    from scipy import stats  # imported here: scipy takes 0.5 s to load

    tail = stats.norm.sf(z) if alternative == "greater" else 2 * stats.norm.sf(abs(z))
    return float(tail)


def topic_shift(
    baseline_relevance: Sequence[float],
    current_relevance: Sequence[float],
    *,
    low: float = 0.3,
    threshold: float = 0.1,
) -> Shift:
    """Change in the share of queries whose best retrieval relevance is below ``low``. A rise
    means users now ask about things the corpus does not cover; only rises count (one-sided)."""
    x, y = _values("low_relevance_share", baseline_relevance, current_relevance)
    hits = (int((x < low).sum()), int((y < low).sum()))
    before, after = hits[0] / len(x), hits[1] / len(y)
    p_value = _two_proportion_p(hits, (len(x), len(y)), "greater")
    return Shift(
        "low_relevance_share", before, after, after - before, threshold, p_value, len(x), len(y)
    )


def length_shift(
    baseline_lengths: Sequence[float],
    current_lengths: Sequence[float],
    *,
    threshold: float = 0.2,
) -> Shift:
    """Two-sample Kolmogorov-Smirnov distance between output lengths (tokens or characters):
    the largest gap between the two cumulative distributions, from 0 to 1. Answers getting
    longer, shorter or more erratic all show; the medians are reported for reading."""
    x, y = _values("output_length_ks", baseline_lengths, current_lengths)
    from scipy import stats  # imported here: scipy takes 0.5 s to load

    result = stats.ks_2samp(x, y)
    return Shift(
        "output_length_ks",
        float(np.median(x)),
        float(np.median(y)),
        float(result.statistic),
        threshold,
        float(result.pvalue),
        len(x),
        len(y),
    )


def rate_shift(
    baseline_flags: Sequence[bool],
    current_flags: Sequence[bool],
    *,
    measure: str = "refusal_rate",
    threshold: float = 0.1,
) -> Shift:
    """Absolute change in the rate of a yes/no event (refusals, errors, thumbs-down, ...),
    tested two-sided: a sudden drop can signal a regression as much as a rise."""
    x, y = _values(measure, baseline_flags, current_flags)
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError(f"{measure} flags must be booleans (or 0/1)")
    hits = (int(x.sum()), int(y.sum()))
    before, after = hits[0] / len(x), hits[1] / len(y)
    p_value = _two_proportion_p(hits, (len(x), len(y)), "two-sided")
    return Shift(measure, before, after, abs(after - before), threshold, p_value, len(x), len(y))
