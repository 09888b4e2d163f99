"""Structure-aware chunking with a token budget and overlap measured in the embedder's tokens.

Headings start a new chunk and give every chunk under them its ``section`` path; paragraphs
are packed whole while they fit; a paragraph too long for one chunk is split at sentence
ends, and a sentence too long at word boundaries. Each new chunk in the same section starts
with the last units of the one before, up to ``overlap_tokens``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slmops.data.documents import Block, Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    source: str
    file_type: str
    text: str
    section: str
    ordinal: int  # position within its document
    tokens: int
    line_start: int | None
    line_end: int | None
    page_start: int | None
    page_end: int | None
    metadata: tuple[tuple[str, Any], ...] = ()  # the document's own fields (JSONL), sorted

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def chunk_id(self) -> str:
        """Stable across re-ingests while the document and the chunk's text are unchanged."""
        key = f"{self.doc_id}\x00{self.text}".encode()
        return hashlib.sha256(key).hexdigest()[:32]

    @property
    def location(self) -> str:
        if self.page_start is not None:
            end = f"-{self.page_end}" if self.page_end != self.page_start else ""
            return f"page {self.page_start}{end}"
        if self.line_start is not None:
            return f"lines {self.line_start}-{self.line_end or self.line_start}"
        return ""


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    block: Block


def _split_long(text: str, limit: int, count: TokenCounter) -> list[str]:
    """Sentences, and words for sentences still over ``limit`` tokens."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if count(sentence) <= limit:
            pieces.append(sentence)
            continue
        words, current = sentence.split(), list[str]()
        for word in words:
            if current and count(" ".join([*current, word])) > limit:
                pieces.append(" ".join(current))
                current = []
            current.append(word)
        if current:
            pieces.append(" ".join(current))
    return [p for p in pieces if p.strip()]


class Chunker:
    def __init__(
        self, count_tokens: TokenCounter, *, chunk_tokens: int = 200, overlap_tokens: int = 32
    ) -> None:
        if chunk_tokens < 16:
            raise ValueError("chunk_tokens must be at least 16")
        if not 0 <= overlap_tokens < chunk_tokens // 2:
            raise ValueError("overlap_tokens must be >= 0 and under half of chunk_tokens")
        self._count = count_tokens
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def _units(self, block: Block) -> list[_Unit]:
        tokens = self._count(block.text)
        if tokens <= self.chunk_tokens:
            return [_Unit(block.text, tokens, block)]
        return [
            _Unit(piece, self._count(piece), block)
            for piece in _split_long(block.text, self.chunk_tokens, self._count)
        ]

    def chunk(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        headings: list[tuple[int, str]] = []
        current: list[_Unit] = []

        def emit() -> None:
            if not current:
                return
            blocks = [u.block for u in current]
            lines = [n for b in blocks for n in (b.line_start, b.line_end) if n is not None]
            pages = [b.page for b in blocks if b.page is not None]
            text = current[0].text
            for before, unit in itertools.pairwise(current):  # sentences of one block: a space
                text += (" " if unit.block is before.block else "\n\n") + unit.text
            chunks.append(
                Chunk(
                    doc_id=document.doc_id,
                    source=document.source,
                    file_type=document.file_type,
                    text=text,
                    section=" > ".join(h for _, h in headings),
                    ordinal=len(chunks),
                    tokens=sum(u.tokens for u in current),
                    line_start=min(lines) if lines else None,
                    line_end=max(lines) if lines else None,
                    page_start=min(pages) if pages else None,
                    page_end=max(pages) if pages else None,
                    metadata=tuple(sorted(document.metadata.items())),
                )
            )

        for block in document.blocks:
            if block.heading:
                emit()
                current = []
                headings = [h for h in headings if h[0] < block.level] + [(block.level, block.text)]
                continue
            for unit in self._units(block):
                used = sum(u.tokens for u in current)
                if current and used + unit.tokens > self.chunk_tokens:
                    emit()
                    current = self._overlap(current, unit.tokens)
                current.append(unit)
        emit()
        return chunks

    def _overlap(self, previous: list[_Unit], incoming: int) -> list[_Unit]:
        """The tail of ``previous`` to repeat, within the overlap and the chunk budget."""
        carried: list[_Unit] = []
        budget = min(self.overlap_tokens, self.chunk_tokens - incoming)
        for unit in reversed(previous):
            if sum(u.tokens for u in carried) + unit.tokens > budget:
                break
            carried.insert(0, unit)
        return carried
