"""Exact vector search over one corpus version, held in memory.

Measured on 2 cores with 100k x 384 vectors (bench/bench_data.py): LanceDB's flat scan takes
~180 ms per query and its IVF_HNSW_SQ index ~12 ms at 0.95 recall@10; a float32 product in
numpy takes 7-12 ms (and its OpenBLAS threads, spinning afterwards, halve the speed of the
query embedder that runs next); a float16 product in torch takes ~3 ms on the embedder's own
thread pool. So scores are computed in float16 to shortlist candidates, which are then
rescored in float32: the result is the exact top k. The snapshot of a version is immutable,
so it is built once and shared.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class ExactVectorIndex:
    """Normalised vectors plus the columns filters use, for one immutable table version."""

    def __init__(self, vectors: np.ndarray, rows: list[dict[str, Any]]) -> None:
        if len(vectors) != len(rows):
            raise ValueError("one row per vector")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.rows = rows
        self._columns: dict[str, np.ndarray] = {}
        self._half: Any = None  # float16 copy for the shortlist, made on first search
        self._positions: dict[str, int] | None = None

    def _position(self) -> dict[str, int]:
        """Chunk id -> row number, built once per index."""
        if self._positions is None:
            self._positions = {row["chunk_id"]: i for i, row in enumerate(self.rows)}
        return self._positions

    def vectors_for(self, chunk_ids: list[str]) -> np.ndarray:
        """The stored (normalised) vectors of these chunks, in the order asked."""
        positions = self._position()
        missing = [c for c in chunk_ids if c not in positions]
        if missing:
            raise KeyError(f"no chunk {missing[0]!r} in this version")
        return self.vectors[[positions[c] for c in chunk_ids]]

    def rows_for(self, chunk_ids: list[str]) -> list[dict[str, Any]]:
        """The rows of those of these chunks that are in this version, in the order asked."""
        positions = self._position()
        return [self.rows[positions[c]] for c in chunk_ids if c in positions]

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
        import torch

        if self._half is None:
            self._half = torch.tensor(self.vectors, dtype=torch.float16)
        query32 = np.asarray(query, dtype=np.float32)
        with torch.inference_mode():
            scores = torch.mv(self._half, torch.from_numpy(query32).to(torch.float16))
            if where:
                mask = np.ones(len(self.rows), dtype=bool)
                for column, value in where.items():
                    mask &= self._column(column) == value
                scores = scores.masked_fill(~torch.from_numpy(mask), float("-inf"))
            shortlist = torch.topk(scores, min(len(self.rows), 4 * k + 10)).indices.numpy()
        shortlist = shortlist[np.isfinite(scores.numpy()[shortlist])]
        exact = self.vectors[shortlist] @ query32  # float32 rescoring: the exact order
        best = shortlist[np.argsort(-exact)][:k]
        return [(self.rows[i], float(self.vectors[i] @ query32)) for i in best]


def reciprocal_rank_fusion(rankings: list[list[str]], *, k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank) (Cormack et al.)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)
