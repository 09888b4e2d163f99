from __future__ import annotations

import numpy as np
import pytest

from slmops.data.vector_index import ExactVectorIndex, reciprocal_rank_fusion


def make_index() -> ExactVectorIndex:
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    rows = [
        {"chunk_id": c, "doc_id": d}
        for c, d in [("a", "x.md"), ("b", "y.md"), ("c", "x.md"), ("d", "y.md")]
    ]
    return ExactVectorIndex(vectors, rows)


def test_exact_top_k_by_cosine():
    hits = make_index().search(np.array([1, 0]), k=3)
    assert [(row["chunk_id"], round(score, 2)) for row, score in hits] == [
        ("a", 1.0),
        ("b", 0.8),
        ("c", 0.0),
    ]


def test_filters_apply_before_ranking():
    hits = make_index().search(np.array([1, 0]), k=2, where={"doc_id": "y.md"})
    assert [row["chunk_id"] for row, _ in hits] == ["b", "d"]
    assert make_index().search(np.array([1, 0]), k=2, where={"doc_id": "none"}) == []


def test_k_larger_than_the_corpus_and_empty_index():
    assert len(make_index().search(np.array([0, 1]), k=10)) == 4
    assert ExactVectorIndex(np.zeros((0, 2), dtype=np.float32), []).search(np.ones(2), 3) == []


def test_reciprocal_rank_fusion_matches_hand_computation():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == 1 / 61 + 1 / 62
    assert fused["c"] == 1 / 63 + 1 / 61
    assert fused["b"] == 1 / 62
    assert [i for i, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]


def test_order_is_exact_below_float16_resolution():
    # cos 0.01 rad = 0.99995: equal to 1.0 in float16, smaller than 1.0 in float32.
    angle = 1e-2
    vectors = np.array([[np.cos(angle), np.sin(angle)], [1, 0], [0, 1]], dtype=np.float32)
    index = ExactVectorIndex(vectors, [{"chunk_id": c} for c in "abc"])
    hits = index.search(np.array([1, 0]), k=2)
    assert [row["chunk_id"] for row, _ in hits] == ["b", "a"]
    assert hits[0][1] > hits[1][1]


def test_matches_brute_force_on_random_vectors():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(2000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ExactVectorIndex(vectors, [{"i": i} for i in range(2000)])
    for query in vectors[:20] + 0.1:
        exact = list(np.argsort(-(vectors @ query))[:10])
        assert [row["i"] for row, _ in index.search(query, 10)] == exact


def test_vectors_for_returns_stored_vectors_in_the_order_asked():
    vectors = np.eye(3, dtype=np.float32)
    index = ExactVectorIndex(vectors, [{"chunk_id": c} for c in ("a", "b", "c")])
    assert index.vectors_for(["c", "a"]).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(KeyError, match="no chunk 'z'"):
        index.vectors_for(["a", "z"])
    assert [row["chunk_id"] for row in index.rows_for(["c", "z", "a"])] == ["c", "a"]
