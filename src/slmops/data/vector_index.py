"""Exact vector search over one corpus version, held in memory.

Measured on 2 cores with 100k x 384 vectors: numpy finds the exact top 10 in ~8 ms per query,
while LanceDB's flat scan takes ~140 ms and its IVF_HNSW_SQ index needs ~13 ms to reach 0.95
recall@10 (bench/bench_data.py). So up to millions of chunks slmops searches vectors exactly
here; the snapshot of a version is immutable, so it is built once and shared.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

_blas: Any = None


def _one_blas_thread() -> Any:
    """Run numpy's BLAS on one thread for the next block. Measured on 2 cores: OpenBLAS's
    idle threads keep spinning after a product and halve the speed of the embedder (torch's
    own thread pool) that runs next (query embedding p50 22 -> 10 ms, p95 66 -> 11 ms),
    while one thread computes the 10k-row product faster anyway (2.5 -> 1.4 ms)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


class ExactVectorIndex:
    """Normalised vectors plus the columns filters use, for one immutable table version."""

    def __init__(self, vectors: np.ndarray, rows: list[dict[str, Any]]) -> None:
        if len(vectors) != len(rows):
            raise ValueError("one row per vector")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.rows = rows
        self._columns: dict[str, np.ndarray] = {}

    @classmethod
    def from_arrow(cls, table: Any) -> ExactVectorIndex:
        vectors = table.column("vector").combine_chunks()
        dimension = vectors.type.list_size
        matrix = vectors.values.to_numpy(zero_copy_only=False).reshape(-1, dimension)
        return cls(matrix, table.drop_columns(["vector"]).to_pylist())

    def _column(self, name: str) -> np.ndarray:
        """A column as an array; ``metadata.KEY`` reads one field of the metadata JSON."""
        if name not in self._columns:
            if name.startswith("metadata."):
                key = name.removeprefix("metadata.")
                values = [json.loads(row.get("metadata") or "{}").get(key) for row in self.rows]
            else:
                values = [row[name] for row in self.rows]
            column = np.empty(len(values), dtype=object)
            column[:] = values
            self._columns[name] = column
        return self._columns[name]

    def search(
        self, query: np.ndarray, k: int, where: dict[str, Any] | None = None
    ) -> list[tuple[dict[str, Any], float]]:
        """The ``k`` rows most similar to ``query`` (cosine), best first, among those whose
        columns equal every value in ``where`` (filtered before ranking, so no hits are lost)."""
        if not self.rows:
            return []
        with _one_blas_thread():
            scores = self.vectors @ np.asarray(query, dtype=np.float32)
        if where:
            mask = np.ones(len(self.rows), dtype=bool)
            for column, value in where.items():
                mask &= self._column(column) == value
            scores = np.where(mask, scores, -np.inf)
        k = min(k, len(self.rows))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(self.rows[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


def reciprocal_rank_fusion(rankings: list[list[str]], *, k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank) (Cormack et al.)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)
