"""Training datasets: versioned fine-tuning examples with a deterministic held-out split.

An example is a chat (``messages`` ending with the assistant's answer) or a raw
``prompt``/``completion`` pair. Each example's split is decided by its id alone, so an example
never changes sides when a later version adds or removes others (no leakage between the
versions a model was trained and validated on). Versions are stored like evaluation datasets
(see :mod:`slmops.store.jsonl_versions`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from slmops.errors import SlmopsError
from slmops.eval.datasets import non_finite
from slmops.models.base import ChatMessage
from slmops.store.jsonl_versions import (
    JsonlVersions,
    canonical_jsonl,
    jsonl_file_lines,
    jsonl_lines,
    parse_jsonl,
)
from slmops.store.schema import train_datasets
from slmops.store.workspace import Workspace

Format = Literal["chat", "completion"]
Source = Literal["file", "dataset", "traces"]
Split = Literal["train", "heldout"]


class TrainDataError(SlmopsError):
    """Training examples cannot be read, built or stored as asked."""


class TrainExample(BaseModel):
    """One fine-tuning example: ``messages`` (system/user turns, then the assistant's answer
    last) or ``prompt`` + ``completion``. The loss is taken on the assistant turns (or the
    completion) only."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    completion: str | None = None
    group: str | None = None  # examples of one group (one source passage, say) split together
    split: Split | None = None  # set when the example is stored in a dataset version
    metadata: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> TrainExample:
        if self.messages is not None:
            if self.prompt is not None or self.completion is not None:
                raise ValueError("give either messages or prompt/completion, not both")
            _check_messages(self.messages)
            content: Any = [m.model_dump() for m in self.messages]
        else:
            if self.prompt is None or self.completion is None:
                raise ValueError("needs messages, or both prompt and completion")
            if not self.prompt.strip():
                raise ValueError("prompt is empty")
            if not self.completion.strip():
                raise ValueError("completion is empty")
            content = [self.prompt, self.completion]
        found = non_finite(self.metadata, "metadata")
        if found is not None:
            raise ValueError(f"{found} is not a finite number (JSON has no NaN or Infinity)")
        if not self.id:  # a stable id from the content: the split follows it
            digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
            object.__setattr__(self, "id", digest[:16])
        return self

    @property
    def format(self) -> Format:
        return "chat" if self.messages is not None else "completion"


def _check_messages(messages: Sequence[ChatMessage]) -> None:
    if not messages:
        raise ValueError("messages is empty")
    if messages[-1].role != "assistant":
        raise ValueError("the last message must be the assistant's answer (the training target)")
    if not any(m.role == "user" for m in messages):
        raise ValueError("messages need at least one user turn")
    for index, message in enumerate(messages):
        if message.role == "system" and index != 0:
            raise ValueError(f"messages.{index}: a system message may only come first")
        if not message.content.strip():
            raise ValueError(f"messages.{index}.content is empty")


def split_of(key: str, train_fraction: float) -> Split:
    """``train`` or ``heldout`` from the example's group, else its id, alone (a hash, so it is
    stable across versions)."""
    position = int(hashlib.sha256(f"split:{key}".encode()).hexdigest()[:12], 16) / 16**12
    return "train" if position < train_fraction else "heldout"


def read_examples(path: Path) -> list[TrainExample]:
    """Examples from a JSONL file; a bad line is reported by its number and field."""
    return parse_examples(jsonl_file_lines(path, TrainDataError), str(path))


def parse_examples(lines: Iterable[str], where: str) -> list[TrainExample]:
    """Validate every line; one format (chat or completion) for the whole file."""
    examples: list[TrainExample] = []
    for number, example in parse_jsonl(lines, where, TrainExample, TrainDataError):
        if examples and example.format != examples[0].format:
            raise TrainDataError(
                f"{where}, line {number}: a {example.format} example among "
                f"{examples[0].format} examples; use one format per dataset"
            )
        examples.append(example)
    if not examples:
        raise TrainDataError(f"{where} holds no training example")
    return examples


@dataclass(frozen=True)
class TrainDatasetVersion:
    name: str
    version: int
    message: str
    source: str
    format: str
    examples: int
    train: int
    heldout: int
    split: float
    lineage: dict[str, Any]
    sha256: str
    uri: str
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class TrainDatasets:
    """The workspace's training datasets."""

    def __init__(self, workspace: Workspace) -> None:
        self._versions = JsonlVersions(
            workspace,
            train_datasets,
            kind="training dataset",
            key_prefix="train-datasets",
            error=TrainDataError,
        )

    def add(
        self,
        name: str,
        examples: Sequence[TrainExample],
        *,
        split: float = 0.8,
        message: str = "",
        source: Source = "file",
        lineage: dict[str, Any] | None = None,
    ) -> tuple[TrainDatasetVersion, bool]:
        """Store ``examples`` with each one's split as a new version (``(version, True)``), or
        return the latest version when it holds exactly the same (``(version, False)``)."""
        if not 0 < split <= 1:
            raise TrainDataError(f"split {split} must be above 0 and at most 1 (training share)")
        if not examples:
            raise TrainDataError(f"training dataset {name!r}: no examples to add")
        formats = {e.format for e in examples}
        if len(formats) > 1:
            raise TrainDataError("chat and completion examples cannot share a dataset")
        seen: set[str] = set()
        stored = []
        for example in examples:
            if example.id in seen:
                raise TrainDataError(f"two examples have the id {example.id!r}; ids must be unique")
            seen.add(example.id)
            side = split_of(example.group or example.id, split)
            stored.append(example.model_copy(update={"split": side}))
        data = canonical_jsonl([e.model_dump(mode="json", exclude_none=True) for e in stored])
        train = sum(e.split == "train" for e in stored)
        row, created = self._versions.add(
            name,
            data,
            message=message,
            source=source,
            columns={
                "format": formats.pop(),
                "examples": len(stored),
                "train": train,
                "heldout": len(stored) - train,
                "split": split,
                "lineage": lineage or {},
            },
        )
        return TrainDatasetVersion(**row), created

    def names(self) -> list[str]:
        return self._versions.names()

    def log(self, name: str) -> list[TrainDatasetVersion]:
        return [TrainDatasetVersion(**row) for row in self._versions.log(name)]

    def resolve(self, ref: str) -> TrainDatasetVersion:
        return TrainDatasetVersion(**self._versions.resolve(ref))

    def examples(self, ref: str) -> tuple[TrainDatasetVersion, list[TrainExample]]:
        version = self.resolve(ref)
        data = self._versions.read(asdict(version))
        return version, parse_examples(jsonl_lines(data.decode("utf-8")), version.ref)
