from __future__ import annotations

import math
import time

import numpy as np
import pytest

from slmops.monitor.drift import (
    Shift,
    centroid_distance,
    embedding_drift,
    length_shift,
    rate_shift,
    topic_shift,
)

DIM = 384


def gaussian(seed: int, rows: int = 200, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, DIM)) + shift


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def topic(rng: np.random.Generator, center: np.ndarray, rows: int) -> np.ndarray:
    """Unit vectors scattered around a topic direction, like sentence embeddings of queries
    on one subject (cosine to the centre about 0.7)."""
    return unit(center + rng.normal(scale=1 / math.sqrt(DIM), size=(rows, DIM)))


@pytest.fixture
def topics() -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100)
    return rng, unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))


# --- Shift ---------------------------------------------------------------------------------


def test_shift_drifts_only_when_large_and_significant():
    def shift(statistic: float, p_value: float | None) -> Shift:
        return Shift("m", None, None, statistic, 0.1, p_value, 10, 10)

    assert shift(0.2, 0.01).drifted
    assert shift(0.2, None).drifted
    assert not shift(0.2, 0.2).drifted  # large but could be chance
    assert not shift(0.05, 0.001).drifted  # real but too small to matter
    assert not shift(0.1, 0.001).drifted  # at the threshold is not over it
    d = shift(0.2, 0.01).as_dict()
    assert d == {
        "measure": "m",
        "baseline": None,
        "current": None,
        "statistic": 0.2,
        "threshold": 0.1,
        "p_value": 0.01,
        "baseline_n": 10,
        "current_n": 10,
        "drifted": True,
    }


# --- embeddings ----------------------------------------------------------------------------


def test_same_gaussian_does_not_drift():
    shift = embedding_drift(gaussian(0), gaussian(1))
    assert shift.measure == "query_embedding_mmd"
    assert abs(shift.statistic) < 0.01
    assert shift.p_value is not None and shift.p_value > 0.05
    assert not shift.drifted
    assert (shift.baseline, shift.current) == (None, None)
    assert (shift.baseline_n, shift.current_n) == (200, 200)


def test_mean_shifted_gaussian_drifts():
    shift = embedding_drift(gaussian(0), gaussian(1, shift=0.5))
    assert shift.statistic > 0.05
    assert shift.p_value is not None and shift.p_value < 0.05
    assert shift.drifted


def test_new_topic_on_the_sphere_drifts_and_same_mix_does_not(topics):
    rng, a, b = topics
    baseline = topic(rng, a, 200)
    same = embedding_drift(baseline, topic(rng, a, 200))
    mixed_current = np.vstack([topic(rng, a, 100), topic(rng, b, 100)])
    mixed = embedding_drift(baseline, mixed_current)
    assert not same.drifted and same.p_value is not None and same.p_value > 0.05
    assert mixed.drifted and mixed.p_value is not None and mixed.p_value < 0.01
    assert mixed.statistic > 0.1

    # A baseline that already mixed both topics sees the same mix as business as usual.
    mixed_baseline = np.vstack([topic(rng, a, 100), topic(rng, b, 100)])
    assert not embedding_drift(mixed_baseline, mixed_current).drifted


def test_centroid_distance_grows_as_the_mean_query_moves(topics):
    rng, a, b = topics
    baseline = topic(rng, a, 200)
    same = centroid_distance(baseline, topic(rng, a, 200))
    moved = centroid_distance(baseline, np.vstack([topic(rng, a, 100), topic(rng, b, 100)]))
    assert 0 <= same < 0.02
    assert moved > 0.2
    # Scale does not matter: the rows are normalised first.
    assert centroid_distance(baseline * 7.0, baseline) == pytest.approx(0.0, abs=1e-9)


def test_statistic_is_the_unbiased_mmd_with_median_bandwidth():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(8, 3)) + 0.7
    pooled = np.vstack([x, y])
    dist = np.linalg.norm(pooled[:, None] - pooled[None, :], axis=-1)
    sigma = np.median(dist[np.triu_indices(len(pooled), 1)])
    k = np.exp(-(dist**2) / (2 * sigma**2))
    kxx, kyy, kxy = k[:6, :6], k[6:, 6:], k[:6, 6:]
    expected = (
        (kxx.sum() - 6) / (6 * 5) + (kyy.sum() - 8) / (8 * 7) - 2 * kxy.mean()
    )  # diagonals (k=1) left out
    assert embedding_drift(x, y).statistic == pytest.approx(expected, rel=1e-9)


def test_embedding_drift_is_repeatable_with_a_seed():
    x, y = gaussian(0), gaussian(1, shift=0.02)
    first, second = embedding_drift(x, y, seed=3), embedding_drift(x, y, seed=3)
    assert first == second
    assert first.p_value is not None and 0.0 < first.p_value < 1.0


def test_tiny_but_significant_shift_is_not_drift():
    shift = embedding_drift(gaussian(0, rows=400), gaussian(1, rows=400, shift=0.15))
    assert shift.p_value is not None and shift.p_value < 0.05
    assert shift.statistic < shift.threshold
    assert not shift.drifted


def test_large_windows_are_subsampled_and_stay_fast():
    x, y = gaussian(0, rows=1200), gaussian(1, rows=700)
    start = time.perf_counter()
    shift = embedding_drift(x, y, max_points=500)
    assert time.perf_counter() - start < 2.0
    assert (shift.baseline_n, shift.current_n) == (500, 500)


def test_permutations_zero_skips_the_test():
    shift = embedding_drift(gaussian(0), gaussian(1, shift=0.5), permutations=0)
    assert shift.p_value is None and shift.drifted


@pytest.mark.parametrize(
    ("baseline", "current", "message"),
    [
        (np.zeros(10), np.zeros((10, 4)), "2-D"),
        (np.ones((10, 4)), np.ones((10, 5)), "widths differ: baseline 4, current 5"),
        (np.ones((4, 4)), np.ones((10, 4)), "at least 5 rows.*baseline=4, current=10"),
        (np.ones((10, 4)), np.full((10, 4), np.nan), "current embeddings contain NaN"),
        (np.full((10, 4), np.inf), np.ones((10, 4)), "baseline embeddings contain NaN"),
    ],
)
def test_bad_embeddings_are_rejected(baseline, current, message):
    with pytest.raises(ValueError, match=message):
        embedding_drift(baseline, current)
    with pytest.raises(ValueError, match=message):
        centroid_distance(baseline, current)


def test_zero_rows_have_no_direction():
    zeros = np.ones((10, 4))
    zeros[3] = 0
    with pytest.raises(ValueError, match="all-zero rows"):
        centroid_distance(zeros, np.ones((10, 4)))


# --- topics, lengths, rates ----------------------------------------------------------------


def test_topic_shift_counts_low_relevance_queries():
    baseline = [0.8] * 90 + [0.1] * 10  # 10% uncovered
    current = [0.8] * 60 + [0.2] * 40  # 40% uncovered
    shift = topic_shift(baseline, current)
    assert shift.measure == "low_relevance_share"
    assert (shift.baseline, shift.current) == pytest.approx((0.1, 0.4))
    assert shift.statistic == pytest.approx(0.3)
    assert shift.p_value is not None and shift.p_value < 0.001
    assert shift.drifted

    # Fewer uncovered queries is good news, not drift (one-sided test, signed statistic).
    better = topic_shift(current, baseline)
    assert better.statistic == pytest.approx(-0.3)
    assert better.p_value is not None and better.p_value > 0.99
    assert not better.drifted

    steady = topic_shift(baseline, [0.9] * 88 + [0.05] * 12)
    assert not steady.drifted and steady.p_value is not None and steady.p_value > 0.05


def test_topic_shift_threshold_is_configurable():
    shift = topic_shift([0.5] * 10, [0.5] * 6 + [0.4] * 4, low=0.45)
    assert (shift.baseline, shift.current) == (0.0, 0.4)


def test_length_shift_sees_doubled_answers():
    rng = np.random.default_rng(5)
    baseline = rng.gamma(4.0, 50.0, size=300)
    same = length_shift(baseline, rng.gamma(4.0, 50.0, size=300))
    doubled = length_shift(baseline, 2 * rng.gamma(4.0, 50.0, size=300))
    assert same.measure == "output_length_ks"
    assert not same.drifted and same.p_value is not None and same.p_value > 0.05
    assert doubled.drifted and doubled.p_value is not None and doubled.p_value < 1e-6
    assert doubled.baseline is not None and doubled.current is not None
    assert doubled.current == pytest.approx(2 * doubled.baseline, rel=0.25)


def test_refusal_rate_jump_drifts_and_small_wobble_does_not():
    baseline = [True] * 10 + [False] * 90
    jump = rate_shift(baseline, [True] * 60 + [False] * 40)
    assert jump.measure == "refusal_rate"
    assert (jump.baseline, jump.current) == pytest.approx((0.1, 0.6))
    assert jump.statistic == pytest.approx(0.5)
    assert jump.p_value is not None and jump.p_value < 1e-6 and jump.drifted

    wobble = rate_shift(baseline, [True] * 12 + [False] * 88)
    assert wobble.statistic == pytest.approx(0.02)
    assert wobble.p_value is not None and wobble.p_value > 0.5 and not wobble.drifted

    # Two-sided: a collapse in the rate is flagged as well, and under a custom name.
    drop = rate_shift([True] * 60 + [False] * 40, baseline, measure="error_rate")
    assert drop.measure == "error_rate" and drop.statistic == pytest.approx(0.5) and drop.drifted


def test_rate_shift_with_no_events_anywhere_has_p_value_one():
    shift = rate_shift([False] * 20, [False] * 30)
    assert shift.p_value == 1.0 and shift.statistic == 0.0 and not shift.drifted
    assert rate_shift([True] * 20, [True] * 30).p_value == 1.0


def test_rate_shift_rejects_non_flags():
    with pytest.raises(ValueError, match="booleans"):
        rate_shift([0.5] * 10, [1] * 10)


@pytest.mark.parametrize(
    ("call", "measure"),
    [
        (topic_shift, "low_relevance_share"),
        (length_shift, "output_length_ks"),
        (rate_shift, "refusal_rate"),
    ],
)
def test_one_dimensional_measures_validate_their_input(call, measure):
    with pytest.raises(ValueError, match=rf"{measure} needs at least 5 .*baseline=0, current=10"):
        call([], [1] * 10)
    with pytest.raises(ValueError, match=rf"{measure} .*baseline=10, current=4"):
        call([1] * 10, [1] * 4)
    with pytest.raises(ValueError, match=rf"{measure} values contain NaN"):
        call([1.0] * 9 + [float("nan")], [1] * 10)
    with pytest.raises(ValueError, match=rf"{measure} needs flat sequences"):
        call([[1, 1]] * 10, [1] * 10)
