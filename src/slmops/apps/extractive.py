"""Select: the sentences of the retrieved passages that answer the question.

A small model reads four passages poorly, while the passages usually hold the answer
verbatim. This step splits the retrieved passages into sentences and scores each against
the question with the corpus' own embedder (already loaded for retrieval), plus a lexical
term: the share of the question's content words the sentence contains (it decides between
sentences the embedder finds alike, and measured on the public QA samples it moved SQuAD's
best-sentence accuracy from 3 of 5 to 4 of 5). An optional cross-encoder from a local folder
(``scorer = "cross-encoder:/path"``, as ``Rerank`` takes) replaces the embedder's cosine.

Its output serves the three answer modes of a rag stack (``settings.answer``):

- ``extractive``: the answer is the best sentence, and the runner-up too when it scores
  within ``margin`` of it (two near-equal sentences are more often right together than
  either alone); no generation, faithful by construction, cited to chunk and line span;
- ``hybrid``: the model is given the best ``context_sentences`` sentences instead of whole
  passages, to phrase the answer (a shorter prompt, and fewer wrong places to look);
- ``generative``: the model reads the whole passages (what the stack did before).

The step decides nothing about refusing: the ``cite`` step does, from ``best_score``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.apps.manifest import ANSWER_MODES, AnswerMode
from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.core.words import content_words
from slmops.data.corpus import Hit
from slmops.data.rerank import Scorer, load_scorer
from slmops.data.retrieve import RetrievalResult, runtime_corpora
from slmops.errors import StepDefinitionError
from slmops.models.loading import load_embedder

# A sentence ends at . ! or ? followed by white space and a capital, digit, opening quote or
# backtick (so "3.5" and "e.g. this" stay whole), at a blank line, or at a line break before
# a list item, heading, quote or table row. A single line break inside a paragraph is a
# wrapped line, not an end: Markdown wraps sentences across lines.
_SENTENCE_END = re.compile(
    r"(?<=[.!?])\s+(?=[\"'(\[`]?[A-Z0-9]|`)"
    r"|\n[ \t]*\n\s*"
    r"|\n(?=[ \t]*(?:[-*+][ \t]|\d+[.)][ \t]|#|>|\|))"
)
# Abbreviations whose full stop is not a sentence end even before a capital ("Dr. Smith").
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "fig",
        "no",
        "vol",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    }
)
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*|\|)")


class SentenceSpan(BaseModel):
    text: str  # white space collapsed: wrapped lines joined
    start: int  # character offsets in the passage
    end: int


def split_sentences(text: str, *, min_words: int = 3) -> list[SentenceSpan]:
    """The sentences of a passage with their offsets: headings are left out, markup at a
    line's start (list bullets, quotes, table bars) is dropped, and fragments under
    ``min_words`` words (table borders, labels) too, since they cannot answer a question."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append((start, match.start()))
        start = match.end()
    pieces.append((start, len(text)))
    merged: list[tuple[int, int]] = []
    for begin, end in pieces:
        if merged:
            previous = text[merged[-1][0] : merged[-1][1]].rstrip()
            last_word = previous.rsplit(None, 1)[-1].rstrip(".").lower() if previous else ""
            if previous.endswith(".") and last_word in _ABBREVIATIONS:
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((begin, end))
    spans: list[SentenceSpan] = []
    for begin, end in merged:
        piece = text[begin:end]
        markup = _MARKUP.match(piece)
        if markup and markup.group().strip().startswith("#"):
            # a heading names a topic and answers nothing; text on the lines under it stays
            newline = piece.find("\n")
            if newline < 0:
                continue
            begin, piece = begin + newline + 1, piece[newline + 1 :]
            markup = _MARKUP.match(piece)
        body = piece[markup.end() if markup else 0 :]
        cleaned = " ".join(body.split())
        if len(cleaned.split()) >= min_words:
            first = begin + (markup.end() if markup else 0) + (len(body) - len(body.lstrip()))
            spans.append(SentenceSpan(text=cleaned, start=first, end=end))
    return spans


def sentence_location(hit: Hit, start: int, end: int) -> str:
    """Where a sentence is in its document: the chunk's page, or its line span narrowed to
    the sentence's lines (counted from the chunk's first line)."""
    match = re.fullmatch(r"lines (\d+)-(\d+)", hit.location)
    if not match:
        return hit.location
    first = int(match.group(1)) + hit.text.count("\n", 0, start)
    last = first + hit.text.count("\n", start, end)
    return f"lines {first}-{last}" if last != first else f"line {first}"


class Sentence(BaseModel):
    """A scored sentence of a retrieved passage."""

    text: str
    score: float
    passage: int  # 1-based rank of its passage in the retrieval
    chunk_id: str
    doc_id: str
    location: str  # "line 12", "lines 12-13", "page 3" or ""

    def citation(self) -> str:
        return f"{self.doc_id}, {self.location}" if self.location else self.doc_id


class Passage(BaseModel):
    """What the answering prompt reads: a whole passage, or a selected sentence."""

    text: str
    source: str


class Selection(BaseModel):
    question: str
    mode: AnswerMode
    generate: bool  # whether the stack's model writes the answer (hybrid, generative)
    sentences: list[Sentence]  # the best ones, best first
    answer: str  # the extractive answer: the best sentence, or the best two
    answer_sentences: list[Sentence]
    best_score: float
    passages: list[Passage]  # the model's reading: sentences (hybrid) or passages


class SelectInput(BaseModel):
    question: str
    retrieval: RetrievalResult
    mode: AnswerMode | None = None  # None: the step's own ``mode``


def lexical_overlap(question: list[str], sentence: str) -> float:
    """Share of the question's content words (stems) that the sentence contains."""
    wanted = set(question)
    return len(wanted & set(content_words(sentence))) / len(wanted) if wanted else 0.0


class SelectSentences(Step[SelectInput, Selection]):
    kind: ClassVar[str] = "select"
    shape: ClassVar[str] = "retrieval"

    def __init__(
        self,
        name: str = "select",
        *,
        mode: AnswerMode = "extractive",
        scorer: str | Scorer | None = None,
        lexical_weight: float = 0.2,
        margin: float = 0.1,
        max_answer_sentences: int = 2,
        context_sentences: int = 3,
        keep: int = 8,
        **options: Any,
    ) -> None:
        if not 1 <= max_answer_sentences <= 5:
            raise StepDefinitionError("max_answer_sentences must be between 1 and 5", path=name)
        if not 1 <= context_sentences <= 20:
            raise StepDefinitionError("context_sentences must be between 1 and 20", path=name)
        if mode not in ANSWER_MODES:
            raise StepDefinitionError(
                f"mode must be one of {', '.join(ANSWER_MODES)}, not {mode!r}", path=name
            )
        if margin < 0 or lexical_weight < 0:
            raise StepDefinitionError("margin and lexical_weight must be >= 0", path=name)
        self.scorer_name = (
            None
            if scorer is None
            else scorer
            if isinstance(scorer, str)
            else getattr(scorer, "name", type(scorer).__name__)
        )
        self._scorer_ref = scorer
        self._scorer: Scorer | None = None if isinstance(scorer, str) else scorer
        self.mode: AnswerMode = mode
        self.lexical_weight = lexical_weight
        self.margin = margin
        self.max_answer_sentences = max_answer_sentences
        self.context_sentences = context_sentences
        self.keep = max(keep, context_sentences, max_answer_sentences)
        super().__init__(name, input_type=SelectInput, output_type=Selection, **options)

    def cache_identity(self) -> dict[str, Any]:
        return {
            **super().cache_identity(),
            "mode": self.mode,
            "scorer": self.scorer_name,
            "lexical_weight": self.lexical_weight,
            "margin": self.margin,
            "max_answer_sentences": self.max_answer_sentences,
            "context_sentences": self.context_sentences,
            "keep": self.keep,
        }

    def graph_label(self) -> str:
        scorer = self.scorer_name or "embedder"
        return f"{super().graph_label()}\nsentences scored by {scorer} + words"

    async def _similarities(self, retrieval: RetrievalResult, texts: list[str]) -> list[float]:
        """Each sentence's similarity to the question: the cross-encoder's score, or the
        cosine of the corpus embedder's vectors."""
        if self._scorer_ref is not None:
            if self._scorer is None:  # loaded on first use, then kept
                self._scorer = await run_blocking(load_scorer, str(self._scorer_ref))
            scores = list(await run_blocking(self._scorer, retrieval.query, texts))
            if len(scores) != len(texts):
                raise ValueError(f"scorer returned {len(scores)} scores for {len(texts)} texts")
            return [float(s) for s in scores]
        embedder_uri = runtime_corpora("Select").info(retrieval.corpus)["embedder"]
        embedder = await run_blocking(load_embedder, embedder_uri)
        vectors = np.asarray(
            await run_blocking(embedder.embed, [retrieval.query, *texts]), dtype=np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        return [float(s) for s in vectors[1:] @ vectors[0]]

    async def _execute(self, value: SelectInput) -> Selection:
        mode = value.mode or self.mode
        hits = value.retrieval.hits
        candidates: list[tuple[int, Hit, SentenceSpan]] = [
            (rank, hit, piece)
            for rank, hit in enumerate(hits, start=1)
            for piece in split_sentences(hit.text)
        ]
        scored: list[Sentence] = []
        if candidates and mode != "generative":
            similarities = await self._similarities(
                value.retrieval, [piece.text for _, _, piece in candidates]
            )
            question_words = content_words(value.question)
            for (rank, hit, piece), similarity in zip(candidates, similarities, strict=True):
                score = similarity + self.lexical_weight * lexical_overlap(
                    question_words, piece.text
                )
                scored.append(
                    Sentence(
                        text=piece.text,
                        score=round(score, 4),
                        passage=rank,
                        chunk_id=hit.chunk_id,
                        doc_id=hit.doc_id,
                        location=sentence_location(hit, piece.start, piece.end),
                    )
                )
            scored.sort(key=lambda s: -s.score)  # stable: ties keep passage order
        best = scored[0].score if scored else 0.0
        chosen = [s for s in scored[: self.max_answer_sentences] if s.score >= best - self.margin]
        if mode == "hybrid":
            passages = [Passage(text=s.text, source=s.citation()) for s in scored]
            passages = passages[: self.context_sentences]
        else:
            passages = [Passage(text=hit.text, source=hit.citation()) for hit in hits]
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.select.mode", mode)
        span.set_attribute("slmops.select.candidates", len(candidates))
        span.set_attribute("slmops.select.best_score", best)
        return Selection(
            question=value.question,
            mode=mode,
            generate=mode != "extractive",
            sentences=scored[: self.keep],
            answer=" ".join(s.text for s in chosen),
            answer_sentences=chosen,
            best_score=round(best, 4),
            passages=passages,
        )
