"""The slmops command as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_graphviz


def slmops(
    *args: str,
    home: Path,
    timeout: float = 180,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLMOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "slmops.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def python_in(home: Path, code: str) -> str:
    """Run a Python snippet against the workspace ``home``; its printed output, stripped."""
    env = {**os.environ, "SLMOPS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().startswith("error:")
    assert expected in result.stderr


@pytest.mark.model
def test_quickstart_gives_a_sourced_answer_with_versions_and_trace(tmp_path):
    result = slmops("quickstart", home=tmp_path)
    assert result.returncode == 0, result.stderr
    for expected in (
        "Corpus handbook@1: 6 documents",
        "Created stack handbook-rag",
        "Sources",
        "06-prompts.md",
        "corpus handbook@1, prompt handbook-rag-answer@1, model local:smollm2-135m",
    ):
        assert expected in result.stdout
    trace_id = result.stdout.split("Trace id: ")[1].split()[0]
    assert len(trace_id) == 32

    shown = slmops("trace", "show", trace_id[:10], home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for expected in (
        "handbook-rag stack",
        "retrieve retrieval",
        "corpus=handbook version=1",
        "select select",
        "cite cite",
    ):
        assert expected in shown.stdout
    assert "answer llm" not in shown.stdout  # the default extractive mode never calls the model
    assert "the passages' own sentences" in result.stdout

    listed = slmops("trace", "list", home=tmp_path)
    assert trace_id in listed.stdout and "ok" in listed.stdout

    again = slmops("quickstart", "What is the capital of France?", home=tmp_path)
    assert "(0 embedded now)" in again.stdout  # the second run re-embeds nothing
    assert "Refused: no retrieved passage is about the question" in again.stdout


def test_trace_commands_on_an_empty_workspace(tmp_path):
    assert "No traces yet" in slmops("trace", "list", home=tmp_path).stdout
    assert_one_line_error(slmops("trace", "show", "abcdef123", home=tmp_path), "no trace with id")


def test_trace_show_io_and_json(tmp_path):
    code = (
        "from slmops.core import Function, use_workspace\n"
        "def double(x: int) -> int:\n    return 2 * x\n"
        "with use_workspace():\n    print(Function(double).invoke(21).trace_id)\n"
    )
    trace_id = python_in(tmp_path, code)
    shown = slmops("trace", "show", trace_id, "--io", home=tmp_path)
    assert "input: 21" in shown.stdout and "output: 42" in shown.stdout
    as_json = slmops("trace", "show", trace_id, "--json", home=tmp_path)
    assert '"span_count": 1' in as_json.stdout


def test_unknown_model_uri_is_one_red_line(tmp_path):
    assert_one_line_error(
        slmops("quickstart", "--model", "ollama:llama3", home=tmp_path), "unknown scheme 'ollama'"
    )


def test_unreachable_model_server_is_one_red_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"openai:http://127.0.0.1:{port}/v1#m"
    result = slmops("quickstart", "--model", server, "--answer", "generative", home=tmp_path)
    assert_one_line_error(result, f"cannot reach http://127.0.0.1:{port}/v1")
    bad_mode = slmops("quickstart", "--answer", "smart", home=tmp_path)
    assert_one_line_error(bad_mode, "(it is 'smart')")


def test_malformed_config_is_one_red_line(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.toml").write_text("chat_model = [unclosed\n")
    assert_one_line_error(slmops("trace", "list", home=tmp_path), "config.toml: not valid TOML")


def test_graph_command_prints_mermaid_and_dot(tmp_path):
    mermaid = slmops("graph", "slmops.apps.quickstart:build_quickstart", home=tmp_path)
    assert mermaid.returncode == 0 and mermaid.stdout.startswith("flowchart TD")
    dot = slmops("graph", "slmops.apps.quickstart:build_quickstart", "-f", "dot", home=tmp_path)
    assert dot.stdout.startswith("digraph slmops {")


@requires_graphviz
def test_graph_command_renders_images(tmp_path):
    target = tmp_path / "app.svg"
    result = slmops(
        "graph",
        "slmops.apps.quickstart:build_quickstart",
        "-f",
        "svg",
        "-o",
        str(target),
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "<svg" in target.read_text()


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nocolon", "not of the form 'module:object'"),
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("slmops.apps.quickstart:missing", "has no attribute 'missing'"),
        ("slmops.apps.quickstart:DEFAULT_QUESTION", "is a str, not an slmops step"),
    ],
)
def test_graph_command_bad_references(tmp_path, reference, message):
    assert_one_line_error(slmops("graph", reference, home=tmp_path), message)


def test_usage_errors_exit_2_without_traceback(tmp_path):
    result = slmops("trace", "list", "--limit", "zero", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
