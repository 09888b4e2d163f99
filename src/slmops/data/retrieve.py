"""Retrieve: a composition step that searches a corpus and records lineage on its span."""

from __future__ import annotations

from typing import Any, ClassVar

from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.core.runtime import get_runtime
from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.data.corpus import Corpora, DataError, Hit, SearchMode, corpora_for, filter_sql
from slmops.errors import StepDefinitionError


def runtime_corpora(step_kind: str) -> Corpora:
    """The corpora of the workspace the current run writes to, for steps that read them."""
    workspace = get_runtime().workspace
    if workspace is None:
        raise DataError(f"{step_kind} needs a workspace: run inside use_workspace()")
    return corpora_for(workspace)


class RetrievalResult(BaseModel):
    query: str
    corpus: str
    version: int
    hits: list[Hit]

    def context(self) -> str:
        """The hits as numbered passages with their sources, ready for a prompt."""
        return "\n\n".join(
            f"[{i}] ({hit.citation()})\n{hit.text}" for i, hit in enumerate(self.hits, start=1)
        )


class Retrieve(Step[Any, RetrievalResult]):
    """Search ``corpus`` (``NAME``, ``NAME@VERSION``, ``NAME@TAG``) for the input: a string,
    or a model whose ``query_field`` holds the query. The span records the corpus, the
    version searched and the chunk ids returned, so every answer traces back to its data."""

    kind: ClassVar[str] = "retrieval"
    shape: ClassVar[str] = "retrieval"

    def __init__(
        self,
        corpus: str,
        *,
        name: str = "retrieve",
        k: int = 5,
        mode: SearchMode = "hybrid",
        where: dict[str, Any] | None = None,
        input_type: Any = str,
        query_field: str = "question",
        **options: Any,
    ) -> None:
        if mode not in ("vector", "fts", "hybrid"):
            raise StepDefinitionError(
                f"mode must be vector, fts or hybrid, not {mode!r}", path=name
            )
        if k < 1:
            raise StepDefinitionError("k must be at least 1", path=name)
        try:
            filter_sql(where)
        except DataError as exc:
            raise StepDefinitionError(str(exc), path=name) from None
        if input_type is not str and query_field not in getattr(input_type, "model_fields", {}):
            raise StepDefinitionError(
                f"input type {getattr(input_type, '__name__', input_type)} has no field "
                f"{query_field!r} to search with",
                path=name,
            )
        self.corpus = corpus
        self.k = k
        self.mode = mode
        self.where = dict(where or {})
        self.query_field = query_field
        super().__init__(name, input_type=input_type, output_type=RetrievalResult, **options)

    def _corpora(self) -> Corpora:
        return runtime_corpora("Retrieve")

    def cache_identity(self) -> dict[str, Any]:
        # The resolved version, not the reference: a cached result must not outlive its data.
        version = self._corpora().resolve(self.corpus)
        return {
            **super().cache_identity(),
            "corpus": version.corpus,
            "version": version.version,
            "k": self.k,
            "mode": self.mode,
            "where": self.where,
        }

    def span_attributes(self) -> dict[str, Any]:
        return {
            "slmops.retrieval.corpus_ref": self.corpus,
            "slmops.retrieval.mode": self.mode,
            "slmops.retrieval.k": self.k,
        }

    def graph_label(self) -> str:
        return f"{super().graph_label()}\ncorpus: {self.corpus} ({self.mode}, k={self.k})"

    async def _execute(self, value: Any) -> RetrievalResult:
        query = value if isinstance(value, str) else getattr(value, self.query_field)
        corpora = self._corpora()
        version, hits = await run_blocking(
            corpora.search, self.corpus, query, k=self.k, mode=self.mode, where=self.where
        )
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.retrieval.corpus", version.corpus)
        span.set_attribute("slmops.retrieval.version", version.version)
        span.set_attribute("slmops.retrieval.chunk_ids", [hit.chunk_id for hit in hits])
        span.set_attribute("slmops.retrieval.sources", [hit.citation() for hit in hits])
        return RetrievalResult(
            query=query, corpus=version.corpus, version=version.version, hits=hits
        )
