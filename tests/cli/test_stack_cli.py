"""App stacks from the command line, the way a new user meets them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slmops.apps.quickstart import bundled_docs
from tests.cli.test_cli import assert_one_line_error, slmops


def run_in(
    cwd: Path, *args: str, home: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return slmops(*args, home=home, cwd=cwd, stdin=stdin)


@pytest.mark.model
def test_init_ingest_run_chat_lock_without_editing_a_file(tmp_path: Path) -> None:
    home, project = tmp_path / "ws", tmp_path / "project"
    project.mkdir()

    created = run_in(project, "init", "myapp", "--template", "rag", home=home)
    assert created.returncode == 0, created.stderr
    assert "slmops data ingest PATH --corpus docs" in created.stdout
    ingested = run_in(project, "data", "ingest", str(bundled_docs()), "--corpus", "docs", home=home)
    assert ingested.returncode == 0, ingested.stderr

    answered = run_in(project, "run", "myapp", "How do I version a prompt?", home=home)
    assert answered.returncode == 0, answered.stderr
    assert "Sources" in answered.stdout and "06-prompts.md" in answered.stdout
    assert "Versions (unlocked): corpus docs@1, prompt myapp-answer@1" in answered.stdout

    as_json = run_in(project, "run", "myapp", "How do I version a prompt?", "--json", home=home)
    output = json.loads(as_json.stdout)
    assert output["output"]["citations"] and len(output["trace_id"]) == 32
    assert output["output"]["mode"] == "extractive"
    # another answer mode is one setting away, without editing the manifest
    hybrid = run_in(
        project,
        "run",
        "myapp",
        "How do I version a prompt?",
        "--set",
        "answer=hybrid",
        "--json",
        home=home,
    )
    assert json.loads(hybrid.stdout)["output"]["mode"] == "hybrid", hybrid.stderr

    chat = run_in(project, "chat", "myapp", home=home, stdin="How do I version a prompt?\n/exit\n")
    assert chat.returncode == 0, chat.stderr
    assert "bot>" in chat.stdout and "Sources" in chat.stdout and "trace " in chat.stdout

    listed = run_in(project, "stack", "list", home=home)
    assert "myapp" in listed.stdout and "rag" in listed.stdout

    graph = run_in(project, "stack", "graph", "myapp", home=home)
    assert "stack: myapp" in graph.stdout and "corpus: docs@1" in graph.stdout

    locked = run_in(project, "stack", "lock", "myapp", home=home)
    assert "Locked myapp: docs@1, myapp-answer@1" in locked.stdout
    assert json.loads((project / "myapp" / "slmops.lock").read_text())["corpora"] == {
        "docs": "docs@1"
    }
    rerun = run_in(project, "run", "myapp", "How do I version a prompt?", home=home)
    assert "Versions (locked)" in rerun.stdout


def test_stack_errors_are_one_red_line(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    assert_one_line_error(run_in(tmp_path, "run", "nope", "hi", home=home), "no stack 'nope'")
    assert_one_line_error(
        run_in(tmp_path, "init", "x", "--template", "poem", home=home), "unknown template 'poem'"
    )
    assert run_in(tmp_path, "init", "judge", "--template", "judge", home=home).returncode == 0
    assert_one_line_error(
        run_in(tmp_path, "run", "judge", "{not json", home=home), "input looks like JSON"
    )
    assert_one_line_error(
        run_in(tmp_path, "run", "judge", "plain text", home=home),
        "takes JSON input with fields question, answer, context, reference",
    )
    assert_one_line_error(
        run_in(tmp_path, "run", "judge", "{}", "--model", "chat", home=home), "write ALIAS=URI"
    )
    assert_one_line_error(
        run_in(tmp_path, "run", "judge", "{}", "--model", "chat=x:y", home=home),
        "no model alias chat to replace (aliases: judge)",
    )
    assert_one_line_error(
        run_in(tmp_path, "chat", "judge", home=home, stdin=""), "takes structured input"
    )
