"""Classify: pick a label by embedding similarity, offline and without a chat model.

Each label has evidence: a description, example inputs and, optionally, a corpus whose
passages all count as examples (so "is this about our documents?" is answered by the
documents themselves). A label scores the input's best cosine similarity with its evidence;
the best-scoring label wins. A 135M chat model asked to classify tends to give the same
label to everything, while the shipped embedder separates "How do I search a corpus?" from
"Tell me a joke" reliably, in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from opentelemetry import trace as otel_trace
from pydantic import BaseModel, create_model

from slmops.core.runtime import get_runtime
from slmops.core.step import Step
from slmops.core.threads import run_blocking
from slmops.data.retrieve import runtime_corpora
from slmops.errors import StepDefinitionError
from slmops.models.loading import load_embedder


@dataclass(frozen=True)
class LabelEvidence:
    description: str = ""
    examples: tuple[str, ...] = ()
    corpus: str | None = None  # a corpus reference, NAME@VERSION or NAME@latest
    texts: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        texts = tuple(t for t in (self.description, *self.examples) if t.strip())
        object.__setattr__(self, "texts", texts)


def _unit(vectors: Any) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    return array / (np.linalg.norm(array, axis=-1, keepdims=True) + 1e-12)


class EmbeddingClassifier(Step[str, BaseModel]):
    """Text in, ``{label, scores}`` out: the label whose evidence is most similar."""

    kind: ClassVar[str] = "classify"

    def __init__(
        self,
        name: str,
        *,
        labels: dict[str, LabelEvidence],
        output_name: str = "Classification",
        **options: Any,
    ) -> None:
        if len(labels) < 2:
            raise StepDefinitionError("a classifier needs at least two labels", path=name)
        for label, evidence in labels.items():
            if not evidence.texts and evidence.corpus is None:
                raise StepDefinitionError(
                    f"label '{label}' has no evidence: give a description, examples or a corpus",
                    path=name,
                )
        self.labels = labels
        self._vectors: dict[str, dict[str, np.ndarray]] = {}  # embedder -> label -> vectors
        label_type: Any = Literal[tuple(labels)]  # the manifest's labels, known at run time
        output_type = create_model(
            output_name, label=(label_type, ...), scores=(dict[str, float], ...)
        )
        super().__init__(name, input_type=str, output_type=output_type, **options)

    def cache_identity(self) -> dict[str, Any]:
        return {
            **super().cache_identity(),
            "labels": {
                label: [list(e.texts), e.corpus] for label, e in sorted(self.labels.items())
            },
        }

    def graph_label(self) -> str:
        return f"{super().graph_label()}\nby similarity: {', '.join(self.labels)}"

    def _embedder_uri(self) -> str:
        """The embedder of the labels' corpora (they must agree), else the workspace's."""
        corpora = [e.corpus for e in self.labels.values() if e.corpus is not None]
        if not corpora:
            workspace = get_runtime().workspace
            if workspace is None:
                raise StepDefinitionError(
                    "a classifier without a corpus label needs a workspace (its embedder)",
                    path=self.name,
                )
            return workspace.settings.embedder
        store = runtime_corpora("Classify")
        uris = {store.info(store.resolve(ref).corpus)["embedder"] for ref in corpora}
        if len(uris) > 1:
            raise StepDefinitionError(
                f"the labels' corpora use different embedders ({', '.join(sorted(uris))})",
                path=self.name,
            )
        return uris.pop()

    async def _execute(self, value: str) -> BaseModel:
        uri = await run_blocking(self._embedder_uri)
        embedder = await run_blocking(load_embedder, uri)
        if uri not in self._vectors:  # the evidence is fixed: embed it once per embedder
            embedded = {}
            for label, evidence in self.labels.items():
                if evidence.texts:
                    vectors = await run_blocking(embedder.embed, list(evidence.texts))
                    embedded[label] = _unit(vectors)
            self._vectors[uri] = embedded
        query = _unit(await run_blocking(embedder.embed, [value]))[0]
        scores: dict[str, float] = {}
        for label, evidence in self.labels.items():
            best = -1.0
            if label in self._vectors[uri]:
                best = float((self._vectors[uri][label] @ query).max())
            if evidence.corpus is not None:
                best = max(best, await run_blocking(self._corpus_score, evidence.corpus, query))
            scores[label] = round(best, 4)
        label = max(scores, key=lambda name: scores[name])  # ties: the first label declared
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.classify.label", label)
        span.set_attribute("slmops.classify.scores", json.dumps(scores))
        return self.output_type(label=label, scores=scores)  # type: ignore[no-any-return]

    @staticmethod
    def _corpus_score(ref: str, query: np.ndarray) -> float:
        """Similarity of the query to the corpus' closest passage."""
        store = runtime_corpora("Classify")
        hits = store.vector_index(store.resolve(ref)).search(query, 1)
        return hits[0][1] if hits else -1.0
