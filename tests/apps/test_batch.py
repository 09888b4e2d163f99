"""Batch inference: input records, results appended one by one, resume after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from slmops.apps.batch import (
    BatchError,
    finished_ids,
    read_records,
    run_batch,
    run_locally,
)
from slmops.core import Function


class Question(BaseModel):
    question: str


def shout(question: Question) -> str:
    if question.question == "boom":
        raise ValueError("cannot shout that")
    return question.question.upper()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_and_results(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "a", "input": {"question": "hi"}}\n'
        "\n"
        '{"question": "there"}\n'
        '{"input": {"question": "boom"}}\n'
    )
    records = read_records(source)
    assert [(r.id, r.input) for r in records] == [
        ("a", {"question": "hi"}),
        ("3", {"question": "there"}),
        ("4", {"question": "boom"}),
    ]
    out = tmp_path / "out.jsonl"
    step = Function(shout)
    assert run_batch(run_locally(step, records), out) == 3  # type: ignore[arg-type]
    results = lines(out)
    assert [r["id"] for r in results] == ["a", "3", "4"]
    assert results[0]["output"] == "HI" and results[0]["trace_id"]
    assert "ValueError: cannot shout that" in results[2]["error"]  # written, batch went on
    assert finished_ids(out) == {"a", "3", "4"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json\n", "line 1: not JSON"),
        ('{"id": 1, "input": "x", "extra": 2}\n', "unknown field(s) extra"),
        ('{"id": 1, "input": "x"}\n{"id": 1, "input": "y"}\n', "id '1' is repeated"),
        ("\n\n", "holds no records"),
        ("[" * 100_000 + "\n", "nested too deeply"),
    ],
)
def test_bad_input_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(text)
    with pytest.raises(BatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_records(source)
    source.write_bytes(b'"ok"\n\xff\xfe\n')
    with pytest.raises(BatchError, match="line 2: not UTF-8"):
        read_records(source)
    with pytest.raises(BatchError, match="cannot read batch input"):
        read_records(tmp_path / "missing.jsonl")


def test_a_torn_last_line_is_dropped_and_foreign_files_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "output": 1}\n{"id": "b", "outp')
    assert finished_ids(out) == {"a"}
    assert out.read_text() == '{"id": "a", "output": 1}\n'  # the torn line is gone
    other = tmp_path / "notes.jsonl"
    other.write_text('{"title": "x"}\n')
    with pytest.raises(BatchError, match="line 1 is not a batch result"):
        finished_ids(other)


SLOW_STACK = """
import os, signal, time
from pathlib import Path

def answer(question: str) -> str:  # the stack's text input
    if question == "q3" and not Path("died").exists():
        Path("died").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)  # the machine dies mid-batch
    return question[::-1]
"""


def test_the_cli_resumes_a_killed_batch_without_duplicates(tmp_path: Path) -> None:
    stack = tmp_path / "rev"
    stack.mkdir()
    (stack / "steps.py").write_text(SLOW_STACK)
    (stack / "slmops.toml").write_text(
        '[stack]\nname = "rev"\n[[steps]]\nname = "answer"\nkind = "function"\n'
        'call = "steps:answer"\ninput = "input.text"\n'
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "{i}", "input": "q{i}"}}\n' for i in range(6)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "SLMOPS_HOME": str(tmp_path / "ws"), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "slmops.cli.main", "batch", str(stack), str(source)]
    died = subprocess.run(
        [*command, "-o", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == -9, died.stdout + died.stderr
    assert [r["id"] for r in lines(out)] == ["0", "1", "2"]
    again = subprocess.run(
        [*command, "-o", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming: 3 of 6" in again.stdout and "3 records answered" in again.stdout
    results = lines(out)
    assert [r["id"] for r in results] == ["0", "1", "2", "3", "4", "5"]  # none lost or twice
    assert results[3]["output"] == "3q"
