"""Sample: pick passages from a corpus version, reproducibly (for test-set synthesis)."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.data.retrieve import runtime_corpora
from slmops.errors import StepDefinitionError, StepInputError


class Passage(BaseModel):
    chunk_id: str
    doc_id: str
    text: str
    corpus: str
    corpus_version: int


class Sample(Step[int, list[Passage]]):
    """``n`` passages of at least ``min_chars`` characters from ``corpus`` (a pinned
    ``NAME@VERSION``), chosen by a seeded generator so the same version gives the same
    sample."""

    kind: ClassVar[str] = "sample"

    def __init__(
        self, name: str, *, corpus: str, seed: int = 0, min_chars: int = 200, **options: Any
    ) -> None:
        if min_chars < 0:
            raise StepDefinitionError("min_chars must be >= 0", path=name)
        self.corpus = corpus
        self.seed = seed
        self.min_chars = min_chars
        super().__init__(name, input_type=int, output_type=list[Passage], **options)

    def graph_label(self) -> str:
        return f"{super().graph_label()}\ncorpus: {self.corpus} (seed {self.seed})"

    async def _execute(self, value: int) -> list[Passage]:
        if value < 1:
            raise StepInputError(f"cannot sample {value} passages; ask for at least 1")
        corpora = runtime_corpora("Sample")
        version = corpora.resolve(self.corpus)
        rows = await run_blocking(corpora.rows, f"{version.corpus}@{version.version}")
        eligible = sorted(
            (row for row in rows if len(row["text"].strip()) >= self.min_chars),
            key=lambda row: row["chunk_id"],
        )
        if not eligible:
            raise StepInputError(
                f"corpus {version.corpus}@{version.version} has no passage of at least "
                f"{self.min_chars} characters"
            )
        chosen = random.Random(self.seed).sample(eligible, min(value, len(eligible)))
        otel_trace.get_current_span().set_attribute(
            "slmops.sample.chunk_ids", [row["chunk_id"] for row in chosen]
        )
        return [
            Passage(
                chunk_id=row["chunk_id"],
                doc_id=row["doc_id"],
                text=row["text"],
                corpus=version.corpus,
                corpus_version=version.version,
            )
            for row in chosen
        ]
