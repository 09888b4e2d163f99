"""Cite: turn a generated answer and its retrieval into a sourced answer, or a refusal.

Two offline checks with the corpus' own embedder decide whether the answer stands:
*relevance* (cosine of the question to the best retrieved passage: did retrieval find
anything about this at all?) and *support* (cosine of the answer to each passage: does the
answer say what a passage says?); an answer that only restates the question is refused too.
The passages that support the answer are its citations.
A small model invents fluent answers to anything, so refusing is the stack's job, not the
model's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.core.words import content_words
from slmops.data.retrieve import RetrievalResult, runtime_corpora
from slmops.errors import StepDefinitionError
from slmops.models.loading import load_embedder


def adds_nothing(question: str, answer: str) -> bool:
    """True when every content word of the answer is already in the question: the "answer"
    is the question said again ("The default port is:"), which small models do when the
    passages confuse them. An answer that restates the question and then adds a fact
    ("... is 8000") adds something. (A cosine threshold on question and answer, used before,
    refused such answers too: a long restatement with a short fact stays above 0.92.)"""
    return not set(content_words(answer)) - set(content_words(question))


class Citation(BaseModel):
    n: int
    chunk_id: str
    source: str
    support: float
    excerpt: str


class SourcedAnswer(BaseModel):
    question: str
    answer: str
    refused: bool
    reason: str | None = None
    citations: list[Citation]
    corpus: str
    corpus_version: int
    relevance: float
    support: float


class CiteInput(BaseModel):
    question: str
    answer: str
    retrieval: RetrievalResult


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class Cite(Step[CiteInput, SourcedAnswer]):
    kind: ClassVar[str] = "cite"

    def __init__(
        self,
        name: str = "cite",
        *,
        min_relevance: float = 0.3,
        min_support: float = 0.45,
        max_citations: int = 3,
        refusal: str = "I cannot answer that from the documents I have.",
        **options: Any,
    ) -> None:
        if max_citations < 1:
            raise StepDefinitionError("max_citations must be at least 1", path=name)
        self.min_relevance = min_relevance
        self.min_support = min_support
        self.max_citations = max_citations
        self.refusal = refusal
        super().__init__(name, input_type=CiteInput, output_type=SourcedAnswer, **options)

    def cache_identity(self) -> dict[str, Any]:
        return {
            **super().cache_identity(),
            "min_relevance": self.min_relevance,
            "min_support": self.min_support,
            "max_citations": self.max_citations,
            "refusal": self.refusal,
        }

    def graph_label(self) -> str:
        return (
            f"{super().graph_label()}\nrefuse below relevance {self.min_relevance:g} "
            f"or support {self.min_support:g}"
        )

    async def _execute(self, value: CiteInput) -> SourcedAnswer:
        retrieval = value.retrieval
        hits = retrieval.hits
        relevance = support = 0.0
        supports: list[float] = []
        if hits and value.answer.strip():
            corpora = runtime_corpora("Cite")
            embedder = await run_blocking(load_embedder, corpora.info(retrieval.corpus)["embedder"])
            texts = [value.question, value.answer]
            vectors = np.asarray(await run_blocking(embedder.embed, texts), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
            # The passages' vectors are already in the corpus: reuse them, embed only two texts.
            version = corpora.resolve(f"{retrieval.corpus}@{retrieval.version}")
            index = await run_blocking(corpora.vector_index, version)
            passages = index.vectors_for([hit.chunk_id for hit in hits])
            relevance = float((passages @ vectors[0]).max())
            supports = [float(s) for s in passages @ vectors[1]]
            support = max(supports)
        reason = None
        if not hits:
            reason = "retrieval found no passages"
        elif relevance < self.min_relevance:
            reason = (
                f"no retrieved passage is about the question (best relevance {relevance:.2f} "
                f"< {self.min_relevance:g})"
            )
        elif adds_nothing(value.question, value.answer):
            reason = "the answer only repeats the question"
        elif support < self.min_support:
            reason = (
                f"the generated answer is not supported by the retrieved passages "
                f"(best support {support:.2f} < {self.min_support:g})"
            )
        ranked = sorted(zip(hits, supports, strict=False), key=lambda pair: -pair[1])
        citations = [
            Citation(
                n=n,
                chunk_id=hit.chunk_id,
                source=hit.citation(),
                support=round(score, 4),
                excerpt=_excerpt(hit.text),
            )
            for n, (hit, score) in enumerate(
                [pair for pair in ranked if pair[1] >= self.min_support][: self.max_citations],
                start=1,
            )
        ]
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.cite.relevance", relevance)
        span.set_attribute("slmops.cite.support", support)
        span.set_attribute("slmops.cite.refused", reason is not None)
        if reason:
            span.set_attribute("slmops.cite.reason", reason)
        return SourcedAnswer(
            question=value.question,
            answer=self.refusal if reason else value.answer.strip(),
            refused=reason is not None,
            reason=reason,
            citations=[] if reason else citations,
            corpus=retrieval.corpus,
            corpus_version=retrieval.version,
            relevance=round(relevance, 4),
            support=round(support, 4),
        )
