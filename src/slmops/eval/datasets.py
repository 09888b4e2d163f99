"""Evaluation datasets: test cases with immutable versions, like corpora and prompts.

A version's cases are one canonical JSONL file in the artifact store; the metadata database
records it. The file is written before the version is committed, so a crash leaves at most
an unreferenced file, never a version without its cases. Adding cases identical to the
latest version makes no new version.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy import insert, select

from slmops.errors import NotFoundError, SlmopsError
from slmops.store.names import name_problem
from slmops.store.refs import select_version, split_ref
from slmops.store.schema import eval_datasets
from slmops.store.workspace import Workspace

Source = Literal["file", "synth", "redteam", "feedback", "squad"]


class DatasetError(SlmopsError):
    """A dataset or its cases cannot be stored or read as asked."""


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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    return parse_cases(lines, str(path))


def parse_cases(lines: Iterable[str], where: str) -> list[EvalCase]:
    cases = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            cases.append(EvalCase.model_validate_json(line))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "line"
            problem = error["msg"].removeprefix("Value error, ")
            if error["type"] == "json_invalid":
                raise DatasetError(f"{where}, line {number}: not valid JSON") from None
            raise DatasetError(f"{where}, line {number}: {field}: {problem}") from None
    if not cases:
        raise DatasetError(f"{where} holds no test case")
    return cases


def _canonical(cases: Sequence[EvalCase]) -> bytes:
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise DatasetError(f"two cases have the id {case.id!r}; ids must be unique")
        seen.add(case.id)
    lines = [
        json.dumps(c.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) for c in cases
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _key(name: str, version: int, sha256: str) -> str:
    return f"eval-datasets/{name}/v{version}-{sha256[:12]}.jsonl"


class Datasets:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def add(
        self, name: str, cases: Sequence[EvalCase], *, message: str = "", source: Source = "file"
    ) -> tuple[DatasetVersion, bool]:
        """Store a new version (``(version, True)``), or return the latest unchanged."""
        problem = name_problem("dataset", name)
        if problem:
            raise DatasetError(problem)
        if not cases:
            raise DatasetError(f"dataset {name!r}: no cases to add")
        data = _canonical(cases)
        digest = hashlib.sha256(data).hexdigest()
        versions = self.log(name, missing_ok=True)
        if versions and versions[0].sha256 == digest:
            return versions[0], False
        number = (versions[0].version if versions else 0) + 1
        uri = self.workspace.artifacts.put_bytes(_key(name, number, digest), data)
        row: dict[str, Any] = {
            "name": name,
            "version": number,
            "message": message or f"version {number}",
            "source": source,
            "cases": len(cases),
            "sha256": digest,
            "uri": uri,
            "created_at": time.time(),
        }
        with self.workspace.engine.begin() as connection:
            connection.execute(insert(eval_datasets).values(**row))
        return DatasetVersion(**row), True

    def names(self) -> list[str]:
        with self.workspace.engine.connect() as connection:
            query = select(eval_datasets.c.name).group_by(eval_datasets.c.name)
            return sorted(connection.execute(query).scalars())

    def log(self, name: str, *, missing_ok: bool = False) -> list[DatasetVersion]:
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(eval_datasets)
                .where(eval_datasets.c.name == name)
                .order_by(eval_datasets.c.version.desc())
            ).all()
        if not rows and not missing_ok:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"no dataset named {name!r} (datasets: {known})")
        return [DatasetVersion(**row._mapping) for row in rows]

    def resolve(self, ref: str) -> DatasetVersion:
        name, selector = split_ref(ref)
        return select_version("dataset", name, self.log(name), selector, dict)

    def cases(self, ref: str) -> tuple[DatasetVersion, list[EvalCase]]:
        version = self.resolve(ref)
        data = self.workspace.artifacts.get_bytes(
            _key(version.name, version.version, version.sha256)
        )
        if hashlib.sha256(data).hexdigest() != version.sha256:
            raise DatasetError(f"dataset {version.ref}: its file does not match its checksum")
        return version, parse_cases(data.decode("utf-8").splitlines(), version.ref)


def cases_from(records: Iterable[dict[str, Any]]) -> list[EvalCase]:
    """Cases from plain dicts (a stack's output), validated like a file's lines."""
    return parse_cases((json.dumps(r) for r in records), "generated cases")
