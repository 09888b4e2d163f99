"""Immutable versions of JSONL records (evaluation cases, training examples).

A version's records are one canonical JSONL file in the artifact store; a row of a metadata
table records it with its SHA-256. The file is written before the row is committed, so a
crash leaves at most an unreferenced file, never a version without its records. Adding
records identical to the latest version makes no new version.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, select

from slmops.errors import NotFoundError, SlmopsError
from slmops.store.names import name_problem
from slmops.store.refs import select_version, split_ref
from slmops.store.versioning import VersionTakenError, add_version, insert_version
from slmops.store.workspace import Workspace

M = TypeVar("M", bound=BaseModel)


def jsonl_lines(text: str) -> list[str]:
    """The records of JSONL text: split at line feeds only (a carriage return before one is
    JSON whitespace). Not str.splitlines(): it also splits at U+2028, U+0085 and other
    separators that a JSON string may hold unescaped (json.dumps(ensure_ascii=False) writes
    them), and cut such a record in two."""
    return text.split("\n")


def jsonl_file_lines(path: Path, error: Callable[[str], SlmopsError]) -> list[str]:
    """The lines of a UTF-8 text file, or ``error`` naming why it cannot be read."""
    try:
        return jsonl_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None


def parse_jsonl(
    lines: Iterable[str],
    where: str,
    model: type[M],
    error: Callable[[str], SlmopsError],
) -> Iterator[tuple[int, M]]:
    """Each non-blank line validated as ``model``, with its line number. The first bad line
    raises ``error`` naming the line and the field (``data.jsonl, line 7: input: ...``)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, model.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise error(f"{where}, line {number}: not valid JSON") from None
            field = ".".join(str(p) for p in first["loc"])
            problem = first["msg"].removeprefix("Value error, ")
            named = f"{field}: {problem}" if field else problem
            raise error(f"{where}, line {number}: {named}") from None


def canonical_jsonl(records: Sequence[Mapping[str, Any]]) -> bytes:
    """One sorted-key JSON object per line: equal records give equal bytes."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records]
    return ("\n".join(lines) + "\n").encode("utf-8")


class _Row:
    """A version row read back: its columns as attributes (``row.version``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self.values = dict(values)

    @property
    def version(self) -> int:
        return int(self.values["version"])


class JsonlVersions:
    """Versions of named JSONL files, one table row each (``name``, ``version``, ``message``,
    ``source``, ``sha256``, ``uri``, ``created_at`` and the table's own columns).
    ``error`` is the exception type callers see for bad input or a damaged file."""

    def __init__(
        self,
        workspace: Workspace,
        table: Table,
        *,
        kind: str,
        key_prefix: str,
        error: Callable[[str], SlmopsError],
    ) -> None:
        self.workspace = workspace
        self.table = table
        self.kind = kind
        self.key_prefix = key_prefix
        self.error = error

    def _key(self, name: str, version: int, sha256: str) -> str:
        return f"{self.key_prefix}/{name}/v{version}-{sha256[:12]}.jsonl"

    def add(
        self, name: str, data: bytes, *, message: str, source: str, columns: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Store ``data`` as the next version of ``name`` (``(row, True)``), or return the
        latest version's row unchanged (``(row, False)``) when its bytes are the same."""
        problem = name_problem(self.kind, name)
        if problem:
            raise self.error(problem)
        digest = hashlib.sha256(data).hexdigest()

        def attempt() -> tuple[dict[str, Any], bool]:
            versions = self.log(name, missing_ok=True)
            if versions and versions[0]["sha256"] == digest:
                return versions[0], False
            number = (versions[0]["version"] if versions else 0) + 1
            key = self._key(name, number, digest)
            uri = self.workspace.artifacts.put_bytes(key, data)
            row: dict[str, Any] = {
                "name": name,
                "version": number,
                "message": message or f"version {number}",
                "source": source,
                "sha256": digest,
                "uri": uri,
                "created_at": time.time(),
                **columns,
            }
            try:
                insert_version(
                    self.workspace.engine,
                    self.table,
                    row,
                    lambda: self._taken(name, number) is not None,
                )
            except VersionTakenError:
                # Another writer committed this number meanwhile. The file under our key is
                # nobody else's unless that writer stored the same bytes (the key holds the
                # checksum): then it is theirs, and the next attempt returns their version.
                if self._taken(name, number) != digest:
                    self.workspace.artifacts.delete(key)
                raise
            return row, True

        return add_version(self.kind, name, attempt)

    def _taken(self, name: str, version: int) -> str | None:
        """The SHA-256 of ``name``'s version ``version``; None when there is none."""
        with self.workspace.engine.connect() as connection:
            return connection.execute(
                select(self.table.c.sha256).where(
                    (self.table.c.name == name) & (self.table.c.version == version)
                )
            ).scalar()

    def names(self) -> list[str]:
        with self.workspace.engine.connect() as connection:
            query = select(self.table.c.name).group_by(self.table.c.name)
            return sorted(connection.execute(query).scalars())

    def log(self, name: str, *, missing_ok: bool = False) -> list[dict[str, Any]]:
        """The rows of ``name``'s versions, newest first."""
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(self.table)
                .where(self.table.c.name == name)
                .order_by(self.table.c.version.desc())
            ).all()
        if not rows and not missing_ok:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"no {self.kind} named {name!r} ({self.kind}s: {known})")
        return [dict(row._mapping) for row in rows]

    def resolve(self, ref: str) -> dict[str, Any]:
        """The row ``NAME``, ``NAME@N`` or ``NAME@latest`` names."""
        name, selector = split_ref(ref)
        rows = [_Row(r) for r in self.log(name)]
        return select_version(self.kind, name, rows, selector, dict).values

    def read(self, row: Mapping[str, Any]) -> bytes:
        """A version's file, checked against its SHA-256."""
        data = self.workspace.artifacts.get_bytes(
            self._key(row["name"], row["version"], row["sha256"])
        )
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise self.error(
                f"{self.kind} {row['name']}@{row['version']}: its file does not match its checksum"
            )
        return data
