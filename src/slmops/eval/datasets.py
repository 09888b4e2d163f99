"""Evaluation datasets: test cases with immutable versions, like corpora and prompts (stored
as versioned JSONL files: see :mod:`slmops.store.jsonl_versions`)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from slmops.errors import SlmopsError
from slmops.store.jsonl_versions import (
    JsonlVersions,
    canonical_jsonl,
    jsonl_file_lines,
    jsonl_lines,
    parse_jsonl,
)
from slmops.store.schema import eval_datasets
from slmops.store.workspace import Workspace

Source = Literal["file", "synth", "redteam", "feedback", "squad"]


class DatasetError(SlmopsError):
    """A dataset or its cases cannot be stored or read as asked."""


def non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN or infinity in a JSON-like value, or None. JSON has no such
    numbers, yet Python's and pydantic's parsers accept ``NaN`` and ``Infinity``; stored,
    they came back as null (pydantic's JSON dump) or as files no other tool reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{path}.{key}")
        if found is not None:
            return found
    return None


class EvalCase(BaseModel):
    """One test case. ``input`` is what the stack receives (text, or an object for stacks
    with several input fields)."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    input: str | dict[str, Any]
    reference: str | None = None
    alternatives: list[str] = []  # other accepted answers (SQuAD lists several)
    reference_ids: list[str] = []  # chunk ids, or document ids standing for their chunks
    context: str | None = None
    answerable: bool = True
    adversarial: bool = False
    category: str | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}

    @model_validator(mode="after")
    def _identity(self) -> EvalCase:
        if isinstance(self.input, str) and not self.input.strip():
            raise ValueError("input is empty")
        found = non_finite(self.input, "input") or non_finite(self.metadata, "metadata")
        if found is not None:
            raise ValueError(f"{found} is not a finite number (JSON has no NaN or Infinity)")
        if not self.id:  # a stable id from the content, so resumed runs find their cases
            digest = hashlib.sha256(json.dumps(self.input, sort_keys=True).encode()).hexdigest()
            object.__setattr__(self, "id", digest[:16])
        return self

    def question(self) -> str:
        if isinstance(self.input, str):
            return self.input
        for key in ("question", "text", "message", "input"):
            if isinstance(self.input.get(key), str):
                return self.input[key]
        return json.dumps(self.input, ensure_ascii=False)


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    message: str
    source: str
    cases: int
    sha256: str
    uri: str
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def read_cases(path: Path) -> list[EvalCase]:
    """Cases from a JSONL file; a bad line is reported by its number and field."""
    return parse_cases(jsonl_file_lines(path, DatasetError), str(path))


def parse_cases(lines: Iterable[str], where: str) -> list[EvalCase]:
    cases = [case for _, case in parse_jsonl(lines, where, EvalCase, DatasetError)]
    if not cases:
        raise DatasetError(f"{where} holds no test case")
    return cases


def _canonical(cases: Sequence[EvalCase]) -> bytes:
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise DatasetError(f"two cases have the id {case.id!r}; ids must be unique")
        seen.add(case.id)
    return canonical_jsonl([c.model_dump(mode="json") for c in cases])


class Datasets:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._versions = JsonlVersions(
            workspace, eval_datasets, kind="dataset", key_prefix="eval-datasets", error=DatasetError
        )

    def add(
        self, name: str, cases: Sequence[EvalCase], *, message: str = "", source: Source = "file"
    ) -> tuple[DatasetVersion, bool]:
        """Store a new version (``(version, True)``), or return the latest unchanged."""
        if not cases:
            raise DatasetError(f"dataset {name!r}: no cases to add")
        row, created = self._versions.add(
            name, _canonical(cases), message=message, source=source, columns={"cases": len(cases)}
        )
        return DatasetVersion(**row), created

    def names(self) -> list[str]:
        return self._versions.names()

    def log(self, name: str, *, missing_ok: bool = False) -> list[DatasetVersion]:
        return [DatasetVersion(**row) for row in self._versions.log(name, missing_ok=missing_ok)]

    def resolve(self, ref: str) -> DatasetVersion:
        return DatasetVersion(**self._versions.resolve(ref))

    def cases(self, ref: str) -> tuple[DatasetVersion, list[EvalCase]]:
        version = self.resolve(ref)
        data = self._versions.read(asdict(version))
        return version, parse_cases(jsonl_lines(data.decode("utf-8")), version.ref)


def cases_from(records: Iterable[dict[str, Any]]) -> list[EvalCase]:
    """Cases from plain dicts (a stack's output), validated like a file's lines."""
    return parse_cases((json.dumps(r) for r in records), "generated cases")
