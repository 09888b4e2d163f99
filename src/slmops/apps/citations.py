"""Cite: turn an answer and its retrieval into a sourced answer, or a refusal.

Two offline checks with the corpus' own embedder decide whether a generated answer stands:
*relevance* (cosine of the question to the best retrieved passage: did retrieval find
anything about this at all?) and *support* (cosine of the answer to each passage, and to each
sentence the model was given: does the answer say what the sources say?); an answer that
only restates the question is refused too. The passages (or sentences) that support the
answer are its citations.
A small model invents fluent answers to anything, so refusing is the stack's job, not the
model's.

With a sentence selection (``selection``, from the ``select`` step) the answer modes differ:
*extractive* answers with the selected sentences themselves, refused when the best
sentence's score is below ``min_score``; *hybrid* checks the model's answer as above and,
when the check fails but the best sentence clears ``min_score``, answers with the sentences
instead of refusing (``extracted`` says so).

Last, an answer that carries an instruction to the assistant, system-prompt text or
executable markup its question did not ask about is refused (``guard``): it came from a
passage, an instruction planted in a document (see ``slmops.apps.guard``).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.apps.extractive import Selection
from slmops.apps.guard import planted_signs
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
    mode: str = "generative"  # the stack's answer mode: extractive, hybrid or generative
    extracted: bool = False  # the answer is the passages' own sentences, not generated
    sentence_score: float | None = None  # the best selected sentence's score, if selected


class CiteInput(BaseModel):
    question: str
    answer: str | None = None  # None: no model answered (the extractive mode skips it)
    retrieval: RetrievalResult
    selection: Selection | None = None


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
        min_score: float = 0.5,
        max_citations: int = 3,
        refusal: str = "I cannot answer that from the documents I have.",
        guard: bool = True,
        **options: Any,
    ) -> None:
        if max_citations < 1:
            raise StepDefinitionError("max_citations must be at least 1", path=name)
        self.min_relevance = min_relevance
        self.min_support = min_support
        self.min_score = min_score
        self.max_citations = max_citations
        self.refusal = refusal
        self.guard = guard  # refuse answers that carry a passage's planted instruction
        super().__init__(name, input_type=CiteInput, output_type=SourcedAnswer, **options)

    def cache_identity(self) -> dict[str, Any]:
        return {
            **super().cache_identity(),
            "min_relevance": self.min_relevance,
            "min_support": self.min_support,
            "min_score": self.min_score,
            "max_citations": self.max_citations,
            "refusal": self.refusal,
            "guard": self.guard,
        }

    def with_thresholds(self, **thresholds: float) -> Cite:
        """A copy with other ``min_relevance``/``min_support``/``min_score`` (calibration
        runs a stack with one check switched off); the original is unchanged."""
        unknown = set(thresholds) - {"min_relevance", "min_support", "min_score"}
        if unknown:
            raise StepDefinitionError(f"unknown threshold(s) {sorted(unknown)}", path=self.name)
        clone = copy.copy(self)
        for key, value in thresholds.items():
            object.__setattr__(clone, key, float(value))  # steps are frozen once built
        return clone

    def with_guard(self, guard: bool) -> Cite:
        """A copy with the planted-instruction check on or off (the red-team bench measures
        the stack without it); the original is unchanged."""
        clone = copy.copy(self)
        object.__setattr__(clone, "guard", guard)
        return clone

    def graph_label(self) -> str:
        return (
            f"{super().graph_label()}\nrefuse below relevance {self.min_relevance:g}, "
            f"support {self.min_support:g} or sentence score {self.min_score:g}"
        )

    async def _vectors(
        self, retrieval: RetrievalResult, texts: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised vectors of ``texts`` and of the retrieved passages. The passages'
        vectors are already in the corpus: they are reused, only ``texts`` are embedded."""
        corpora = runtime_corpora("Cite")
        embedder = await run_blocking(load_embedder, corpora.info(retrieval.corpus)["embedder"])
        vectors = np.asarray(await run_blocking(embedder.embed, texts), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        version = corpora.resolve(f"{retrieval.corpus}@{retrieval.version}")
        index = await run_blocking(corpora.vector_index, version)
        return vectors, index.vectors_for([hit.chunk_id for hit in retrieval.hits])

    async def _execute(self, value: CiteInput) -> SourcedAnswer:
        retrieval, selection = value.retrieval, value.selection
        mode = selection.mode if selection is not None else "generative"
        extracted = mode == "extractive"
        answer = (selection.answer if extracted and selection else value.answer or "").strip()
        given = selection.passages if selection is not None and mode == "hybrid" else []
        sentences = selection.sentences[: len(given)] if selection is not None else []
        hits = retrieval.hits
        relevance = support = 0.0
        supports: list[float] = []  # per passage
        sentence_supports: list[float] = []  # per sentence the model was given
        # a hybrid draft may fall back to the extracted sentences: embed them in the same batch
        fallback = selection.answer if selection is not None and mode == "hybrid" else ""
        fallback_supports: list[float] = []
        if hits:  # relevance even without an answer: a hybrid fallback and monitoring need it
            texts = [value.question, answer or value.question, *(s.text for s in sentences)]
            vectors, passages = await self._vectors(retrieval, [*texts, fallback or value.question])
            fallback_supports = [float(s) for s in passages @ vectors[-1]]
            vectors = vectors[:-1]
            relevance = float((passages @ vectors[0]).max())
            if answer:
                supports = [float(s) for s in passages @ vectors[1]]
                sentence_supports = [float(s) for s in vectors[2:] @ vectors[1]]
                support = max(supports + sentence_supports)
        best_sentence = selection.best_score if selection and mode != "generative" else None
        reason = self._refusal(
            value.question, answer, hits, relevance, support, best_sentence if extracted else None
        )
        if (
            reason is not None
            and fallback
            and selection is not None
            and relevance >= self.min_relevance
            and selection.best_score >= self.min_score
        ):
            # The model's phrasing failed the check, but the passages hold a confident
            # sentence: answer with it rather than refuse.
            extracted, reason, answer = True, None, fallback
            supports, sentence_supports = fallback_supports, []
            support = max(supports)
        if reason is None and self.guard and (signs := planted_signs(answer, value.question)):
            # an instruction, system-prompt text or executable markup the question did not
            # ask about came from a passage: an instruction planted in a document (OWASP
            # LLM01:2025, indirect prompt injection), obeyed or quoted
            reason = f"the answer carries {' and '.join(signs)} from the passages"
        citations = self._citations(
            retrieval, supports, selection, sentences, sentence_supports, extracted
        )
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.cite.relevance", relevance)
        span.set_attribute("slmops.cite.support", support)
        span.set_attribute("slmops.cite.refused", reason is not None)
        span.set_attribute("slmops.cite.mode", mode)
        span.set_attribute("slmops.cite.extracted", extracted)
        if best_sentence is not None:
            span.set_attribute("slmops.cite.sentence_score", best_sentence)
        if reason:
            span.set_attribute("slmops.cite.reason", reason)
        return SourcedAnswer(
            question=value.question,
            answer=self.refusal if reason else answer,
            refused=reason is not None,
            reason=reason,
            citations=[] if reason else citations,
            corpus=retrieval.corpus,
            corpus_version=retrieval.version,
            relevance=round(relevance, 4),
            support=round(support, 4),
            mode=mode,
            extracted=extracted and reason is None,
            sentence_score=best_sentence,
        )

    def _refusal(
        self,
        question: str,
        answer: str,
        hits: list[Any],
        relevance: float,
        support: float,
        extractive_score: float | None,
    ) -> str | None:
        """Why the answer must be refused, or None. An extractive answer (its best sentence's
        ``extractive_score`` given) is checked on that score instead of on support: its
        sentences are the passages' own."""
        if not hits:
            return "retrieval found no passages"
        if relevance < self.min_relevance:
            return (
                f"no retrieved passage is about the question (best relevance {relevance:.2f} "
                f"< {self.min_relevance:g})"
            )
        if not answer:
            return "no answer was produced"
        if extractive_score is not None and extractive_score < self.min_score:
            return (
                f"no sentence of the passages answers the question (best sentence score "
                f"{extractive_score:.2f} < {self.min_score:g})"
            )
        if adds_nothing(question, answer):
            return "the answer only repeats the question"
        if answer.rstrip().endswith("?"):
            # a small model given sentences sometimes writes a quiz question about them
            return "the answer is itself a question"
        if extractive_score is None and support < self.min_support:
            return (
                f"the answer is not supported by the retrieved passages "
                f"(best support {support:.2f} < {self.min_support:g})"
            )
        return None

    def _citations(
        self,
        retrieval: RetrievalResult,
        supports: list[float],
        selection: Selection | None,
        sentences: list[Any],
        sentence_supports: list[float],
        extracted: bool,
    ) -> list[Citation]:
        """The sources of the answer: the answering sentences when the answer is extracted;
        else the given sentences, or passages, that support it, best first."""
        if extracted and selection is not None:
            return [
                Citation(
                    n=n,
                    chunk_id=s.chunk_id,
                    source=s.citation(),
                    support=s.score,
                    excerpt=_excerpt(s.text),
                )
                for n, s in enumerate(selection.answer_sentences[: self.max_citations], start=1)
            ]
        sources: list[tuple[str, str, str, float]] = [
            (s.chunk_id, s.citation(), s.text, score)
            for s, score in zip(sentences, sentence_supports, strict=False)
        ]
        sources += [
            (hit.chunk_id, hit.citation(), hit.text, score)
            for hit, score in zip(retrieval.hits, supports, strict=False)
        ]
        ranked = sorted(
            (item for item in sources if item[3] >= self.min_support), key=lambda item: -item[3]
        )
        seen: set[str] = set()  # one citation per chunk: its best-supported source
        citations: list[Citation] = []
        for chunk_id, source, text, score in ranked:
            if chunk_id in seen or len(citations) == self.max_citations:
                continue
            seen.add(chunk_id)
            citations.append(
                Citation(
                    n=len(citations) + 1,
                    chunk_id=chunk_id,
                    source=source,
                    support=round(score, 4),
                    excerpt=_excerpt(text),
                )
            )
        return citations
