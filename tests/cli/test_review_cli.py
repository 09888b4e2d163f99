"""``slmops review``: keys read from stdin (CliRunner), and a real terminal driven by tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from slmops.cli.review import app
from slmops.monitor.feedback import list_feedback
from slmops.monitor.review import review_queue
from slmops.store import Workspace
from tests.monitor.test_review import T0, add_trace

runner = CliRunner()


def review(workspace: Workspace, *args: str, keys: str = "", stack: str = "qa") -> Result:
    return runner.invoke(
        app, [stack, "--workspace", str(workspace.home), *args], input=keys, catch_exceptions=False
    )


def reviews(workspace: Workspace) -> list[dict[str, Any]]:
    """The stored reviews, oldest first."""
    return sorted(
        list_feedback(workspace.engine, source="reviewer", limit=None), key=lambda r: r["id"]
    )


@pytest.fixture
def five(workspace: Workspace) -> list[str]:
    """Five answers of stack qa, a minute apart; the third is a refusal."""
    return [
        add_trace(
            workspace.engine,
            started_at=T0 + 60 * i,
            question=f"How do I rotate key {i}?",
            answer=f"Run rotate {i}.",
            refused=i == 2,
            support=0.2 if i == 2 else 0.8,
            relevance=0.1 if i == 2 else 0.9,
            sources=(f"keys.md:{i + 1}", "ops.md:4"),
        )
        for i in range(5)
    ]


def test_panel_shows_question_answer_sources_signals_and_span_tree(workspace, five):
    result = review(workspace, "--refused", keys="s\n")
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "1 trace(s) of 'qa' to review.",
        "1/1",
        five[2],
        "How do I rotate key 2?",
        "REFUSED",
        "no retrieved passage is about the question",
        "keys.md:3; ops.md:4",
        "support 0.20",
        "relevance 0.10",
        "model local:tiny@3",
        "retrieve",
        "cite",
        "[g]ood  [b]ad  [c]orrect  [l]abel  [s]kip  [q]uit",
        "0 reviewed, 1 left; run the same command to continue.",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert reviews(workspace) == []  # a skip records nothing


def test_review_quit_and_continue_where_it_stopped(workspace, five):
    first = review(workspace, "--sample", "5", keys="g\nb\nc\nUse the other flag\nq\n")
    assert first.exit_code == 0, first.output
    assert "3 reviewed, 2 left; run the same command to continue." in first.output
    stored = reviews(workspace)
    assert [r["trace_id"] for r in stored] == five[:3]
    assert all(r["source"] == "reviewer" and r["scale"] == "thumbs" for r in stored)
    assert [r["raw_score"] for r in stored] == [1, 0, 0]
    assert [r["correction"] for r in stored] == [None, None, "Use the other flag"]

    second = review(workspace, "--sample", "5", keys="s\ng\n")
    assert "2 trace(s) of 'qa' to review (3 of this sample already reviewed)." in second.output
    assert "How do I rotate key 3?" in second.output and "key 0?" not in second.output
    assert "1 reviewed, 1 left; run the same command to continue." in second.output
    assert [r["trace_id"] for r in reviews(workspace)] == [*five[:3], five[4]]

    # Labels: a bad one is refused and asked again, then a verdict (asked again if unclear).
    third = review(workspace, "--sample", "5", keys="l\nbad label\nwrong-source, stale\nmaybe\nb\n")
    assert "invalid labels: label 'bad label'" in third.output
    assert "type g (good) or b (bad)" in third.output
    assert "1 reviewed, 0 left: this sample is done." in third.output
    last = reviews(workspace)[-1]
    assert last["trace_id"] == five[3]
    assert last["labels"] == ["wrong-source", "stale"] and last["raw_score"] == 0

    done = review(workspace, "--sample", "5", keys="g\n")
    assert "All 5 sampled traces of 'qa' are reviewed" in done.output
    assert len(reviews(workspace)) == 5


def test_invalid_keys_and_cancelled_prompts_ask_again(workspace, five):
    keys = "x\nc\n\nl\n\ngood\n"  # unknown key; empty correction; empty labels; then good
    result = review(workspace, "--sample", "1", "--reviewer", "ann", keys=keys)
    assert result.exit_code == 0, result.output
    assert "type one of g, b, c, l, s, q (good, bad, correct, label, skip, quit)" in result.output
    assert result.output.count("cancelled") == 2
    assert result.output.count("[q]uit") == 4
    [stored] = reviews(workspace)
    assert stored["raw_score"] == 1 and stored["author"] == "ann" and stored["correction"] is None


def test_end_of_input_quits_like_q(workspace, five):
    result = review(workspace, "--sample", "3", keys="g\nc\n")  # input ends mid-correction
    assert result.exit_code == 0, result.output
    assert "1 reviewed, 2 left; run the same command to continue." in result.output
    assert len(reviews(workspace)) == 1


def test_filters_reach_the_queue(workspace, five):
    result = review(workspace, "--max-support", "0.5", "--worst-first", keys="g\n")
    assert "1 trace(s) of 'qa' to review." in result.output
    assert [r["trace_id"] for r in reviews(workspace)] == [five[2]]
    answered = review(workspace, "--answered", "--seed", "3", "--sample", "2", keys="q\n")
    assert "2 trace(s) of 'qa' to review." in answered.output
    # The CLI shows the library's sample, in its order.
    expected = review_queue(workspace.engine, "qa", sample=2, refused=False, seed=3)
    assert expected[0] in answered.output and five[2] not in answered.output


def test_time_and_feedback_options(workspace):
    now = time.time()
    add_trace(workspace.engine, started_at=now - 600, question="recent one")
    add_trace(workspace.engine, started_at=now - 3 * 86400, question="old one")
    result = review(workspace, "--since", "1h", keys="q\n")
    assert "1 trace(s)" in result.output and "recent one" in result.output
    assert "old one" not in result.output
    old = review(workspace, "--until", "1d", keys="q\n")
    assert "old one" in old.output and "recent one" not in old.output
    none = review(workspace, "--feedback", "negative", keys="q\n")
    assert "No traces of stack 'qa' to review" in none.output


def test_no_traces_and_bad_options(workspace):
    empty = review(workspace, stack="nothing-here")
    assert empty.exit_code == 0
    assert "No traces of stack 'nothing-here' to review" in empty.output
    bad_since = review(workspace, "--since", "yesterday")
    assert bad_since.exit_code == 2 and "bad duration" in bad_since.output
    bad_kind = review(workspace, "--feedback", "angry")
    assert bad_kind.exit_code == 2 and "unknown feedback kind" in bad_kind.output
    bad_sample = review(workspace, "--sample", "0")
    assert bad_sample.exit_code == 2


# --- a real terminal: tmux ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_review_in_a_real_terminal_under_tmux(workspace, five, tmp_path):
    server = f"slmops-review-{uuid.uuid4().hex[:8]}"  # a private tmux server, killed after
    session = "review"

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    # The command is not registered in slmops.cli.main here: run the Typer app itself.
    command = " ".join(
        [
            "env",
            f"SLMOPS_HOME={shlex.quote(str(workspace.home))}",
            shlex.quote(sys.executable),
            "-c",
            shlex.quote("from slmops.cli.review import app; app()"),
            "qa",
            "--sample",
            "2",
            "--reviewer",
            "tty",
            "; echo __EXIT__$?; sleep 30",
        ]
    )
    deadline = time.monotonic() + 20

    def screen_with(text: str, times: int = 1) -> str:
        screen = ""
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", session, "-S", "-100")
            if screen.count(text) >= times:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} (x{times}) not on the screen in time:\n{screen}")

    try:
        tmux(
            "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", str(tmp_path),
            command,
        )  # fmt: skip
        screen = screen_with("[q]uit")
        assert "How do I rotate key" in screen and "Question" in screen and "Sources" in screen
        assert "╭" in screen  # drawn as a panel
        tmux("send-keys", "-t", session, "g", "Enter")
        screen_with("[q]uit", times=2)  # the second trace's prompt
        tmux("send-keys", "-t", session, "q", "Enter")
        screen = screen_with("__EXIT__")
        assert "__EXIT__0" in screen, screen
        assert "1 reviewed, 1 left; run the same command to continue." in screen
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False)
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / server).unlink(missing_ok=True)
    [stored] = reviews(workspace)
    assert stored["raw_score"] == 1 and stored["author"] == "tty"
    assert stored["trace_id"] in five
