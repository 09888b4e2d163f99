"""Rerank: reorder retrieved passages with a scorer that reads query and passage together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from opentelemetry import trace as otel_trace

from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.data.retrieve import RetrievalResult
from slmops.errors import ModelUnavailableError, StepDefinitionError

Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""``scorer(query, passages) -> one relevance score per passage`` (higher is better)."""


class CrossEncoderScorer:
    """A sentence-transformers cross-encoder from a local folder (never fetched from a hub)."""

    def __init__(self, path: str | Path) -> None:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(f"{folder} is not a cross-encoder model folder")
        from sentence_transformers import CrossEncoder

        self.name = f"cross-encoder:{folder}"
        self._model = CrossEncoder(str(folder), device="cpu")
        self._lock = threading.Lock()

    def __call__(self, query: str, passages: Sequence[str]) -> Sequence[float]:
        with self._lock:
            scores = self._model.predict([(query, p) for p in passages], show_progress_bar=False)
        return [float(s) for s in scores]


def load_scorer(reference: str) -> Scorer:
    """``cross-encoder:/path/to/model`` -> a scorer."""
    kind, _, location = reference.partition(":")
    if kind == "cross-encoder" and location:
        return CrossEncoderScorer(location)
    raise StepDefinitionError(
        f"unknown reranker {reference!r}; use 'cross-encoder:/path' or a "
        "callable scorer(query, passages) -> scores"
    )


class Rerank(Step[RetrievalResult, RetrievalResult]):
    """Reorder a :class:`RetrievalResult` by ``scorer`` and keep the best ``top_k``. Put it
    after a Retrieve that fetches more passages than the prompt needs."""

    kind: ClassVar[str] = "rerank"
    shape: ClassVar[str] = "retrieval"

    def __init__(
        self,
        scorer: str | Scorer,
        *,
        name: str = "rerank",
        top_k: int | None = None,
        **options: Any,
    ) -> None:
        if top_k is not None and top_k < 1:
            raise StepDefinitionError("top_k must be at least 1", path=name)
        self.scorer_name = (
            scorer
            if isinstance(scorer, str)
            else getattr(scorer, "name", getattr(scorer, "__name__", type(scorer).__name__))
        )
        self._scorer_ref = scorer
        self._scorer: Scorer | None = None if isinstance(scorer, str) else scorer
        self.top_k = top_k
        super().__init__(name, input_type=RetrievalResult, output_type=RetrievalResult, **options)

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "scorer": self.scorer_name, "top_k": self.top_k}

    def graph_label(self) -> str:
        return f"{super().graph_label()}\nscorer: {self.scorer_name}"

    def _get_scorer(self) -> Scorer:
        if self._scorer is None:  # loaded on first use, then kept
            object.__setattr__(self, "_scorer", load_scorer(str(self._scorer_ref)))
        assert self._scorer is not None
        return self._scorer

    async def _execute(self, value: RetrievalResult) -> RetrievalResult:
        if not value.hits:
            return value
        scorer = await run_blocking(self._get_scorer)
        scores = list(await run_blocking(scorer, value.query, [h.text for h in value.hits]))
        if len(scores) != len(value.hits):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(value.hits)} passages")
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        hits = [value.hits[i].model_copy(update={"score": scores[i]}) for i in order]
        hits = hits[: self.top_k] if self.top_k else hits
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.rerank.scorer", self.scorer_name)
        span.set_attribute("slmops.retrieval.chunk_ids", [h.chunk_id for h in hits])
        return value.model_copy(update={"hits": hits})
