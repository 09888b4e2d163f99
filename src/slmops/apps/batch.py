"""Batch inference: a stack over every record of a JSONL file, into a JSONL file, resumable.

Each input line is a JSON object ``{"id": ..., "input": ...}`` (``id`` optional: the line
number), or any other JSON value, which is the input itself. Each output line holds the id,
the input, the stack's output (or the error), the trace id and the latency. Output lines are
appended and flushed one by one, so a crash loses at most the record in flight; running the
same command again skips every id already in the output (a torn last line is dropped first),
so nothing is lost or written twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmops.apps.stack import Stack, to_plain
from slmops.errors import ConfigError

MAX_LINE_BYTES = 16 * 1024 * 1024


class BatchError(ConfigError):
    """A batch input or output file cannot be used as asked."""


@dataclass(frozen=True)
class BatchRecord:
    id: str
    input: Any


def read_records(path: Path) -> list[BatchRecord]:
    """The records of a JSONL input file; a line that is not JSON fails with its number."""
    records: list[BatchRecord] = []
    seen: set[str] = set()
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BatchError(f"cannot read batch input {path}: {exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise BatchError(f"{path}, line {number}: longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise BatchError(f"{path}, line {number}: not UTF-8 text") from None
            if not text:
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BatchError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            except (RecursionError, ValueError):  # too deep, or an integer over 4300 digits
                raise BatchError(
                    f"{path}, line {number}: JSON nested too deeply or too big"
                ) from None
            if isinstance(value, dict) and "input" in value:
                extra = set(value) - {"id", "input"}
                if extra:
                    raise BatchError(
                        f"{path}, line {number}: unknown field(s) {', '.join(sorted(extra))}; "
                        'a record is {"id": ..., "input": ...} or the input itself'
                    )
                record_id = str(value.get("id", number))
                value = value["input"]
            else:
                record_id = str(number)
            if record_id in seen:
                raise BatchError(f"{path}, line {number}: id {record_id!r} is repeated")
            seen.add(record_id)
            records.append(BatchRecord(record_id, value))
    if not records:
        raise BatchError(f"{path} holds no records")
    return records


def finished_ids(output: Path) -> set[str]:
    """Ids already answered in ``output``; a torn last line (a crash mid-write) is cut off."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):  # the record in flight when the process died
        cut = data.rfind(b"\n") + 1
        with output.open("r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    done = set()
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            done.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            raise BatchError(
                f"{output}, line {number} is not a batch result; choose another output file"
            ) from None
    return done


def run_record(stack: Stack, record: BatchRecord) -> dict[str, Any]:
    """One record's result line (an error is a result too: the batch goes on)."""
    try:
        result = stack.invoke(record.input)
    except Exception as exc:  # one bad record must not end the batch: it is written down
        return {"id": record.id, "input": record.input, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "id": record.id,
        "input": record.input,
        "output": to_plain(result.output),
        "trace_id": result.trace_id,
        "latency_ms": round(result.duration_ms, 1),
    }


class ResultWriter:
    """Appends result lines, each flushed to disk before the next record counts as done."""

    def __init__(self, output: Path) -> None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self.handle = output.open("a", encoding="utf-8")
        except OSError as exc:
            raise BatchError(f"cannot write batch output {output}: {exc}") from None

    def write(self, line: dict[str, Any]) -> None:
        self.handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def run_batch(
    results: Iterable[dict[str, Any]],
    output: Path,
    *,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Write ``results`` (from any executor) to ``output``; returns how many were written."""
    writer = ResultWriter(output)
    written = 0
    try:
        for line in results:
            writer.write(line)
            written += 1
            if on_result is not None:
                on_result(line)
    finally:
        writer.close()
    return written


def run_locally(stack: Stack, records: Iterable[BatchRecord]) -> Iterator[dict[str, Any]]:
    for record in records:
        yield run_record(stack, record)
