"""The monitor and feedback commands end to end on stored traces: rate, list, watch figures
and drift, alert on a local webhook receiver, prune, and turn ratings into datasets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from slmops.cli.main import app
from slmops.eval.datasets import Datasets
from slmops.monitor.feedback import list_feedback
from slmops.store import Workspace
from slmops.train.datasets import TrainDatasets
from tests.monitor.traces import make_trace

runner = CliRunner(env={"COLUMNS": "220", "NO_COLOR": "1"})


def failure(workspace: Workspace, *args: str) -> str:
    """The message of the slmops error a command stops with (main() prints it in red)."""
    result = runner.invoke(app, [*args, "--workspace", str(workspace.home)])
    assert result.exit_code == 1, result.output
    return str(result.exception)


def cli(workspace: Workspace, *args: str) -> Result:
    result = runner.invoke(app, [*args, "--workspace", str(workspace.home)], catch_exceptions=False)
    return result


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP server on loopback recording the JSON posted to it."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/hook", "received": received}
    server.shutdown()
    server.server_close()


def test_feedback_add_and_list(workspace: Workspace) -> None:
    trace = make_trace(workspace.engine, question="Which flag pins?", started_at=time.time())
    added = cli(
        workspace,
        "feedback",
        "add",
        trace[:10],
        "--score",
        "0",
        "-c",
        "wrong flag",
        "--correction",
        "Use --version N.",
        "-l",
        "cli",
    )
    assert added.exit_code == 0, added.output
    listed = cli(workspace, "feedback", "list", "--stack", "handbook-rag", "--negative")
    assert "Which flag pins?" in listed.output and "wrong flag" in listed.output
    assert "Use --version N." in listed.output and "#cli" in listed.output
    assert "No feedback" in cli(workspace, "feedback", "list", "--positive").output
    assert "outside 1-5" in failure(workspace, "feedback", "add", trace, "--score", "9")
    assert len(list_feedback(workspace.engine, limit=None)) == 1


def test_monitor_show_tables_figures_with_trends_and_drift(workspace: Workspace) -> None:
    now = time.time()
    for i in range(30):  # two hours ago: short answers, on-topic
        make_trace(workspace.engine, started_at=now - 7000 + i * 60, completion_tokens=20)
    for i in range(30):  # the last hour: refusals and long answers
        make_trace(
            workspace.engine,
            started_at=now - 3500 + i * 60,
            completion_tokens=80,
            refused=i % 2 == 0,
            relevance=0.1 if i % 2 == 0 else 0.8,
        )
    shown = cli(workspace, "monitor", "show", "handbook-rag", "--window", "1h", "--last", "3h")
    assert shown.exit_code == 0, shown.output
    assert "refused" in shown.output and "trend" in shown.output
    assert "50%" in shown.output  # the last hour's refusal rate
    assert "DRIFT" in shown.output and "output_length_ks" in shown.output
    quiet = cli(workspace, "monitor", "show", "nothing-here", "--no-drift")
    assert "No traces of 'nothing-here'" in quiet.output
    bad = failure(workspace, "monitor", "show", "x", "--window", "1h", "--last", "10m")
    assert "shorter than one --window" in bad


def test_alert_rule_fires_once_to_the_webhook_and_resolves(
    workspace: Workspace, receiver: dict[str, Any]
) -> None:
    now = time.time()
    for i in range(10):
        make_trace(workspace.engine, started_at=now - 600 + i, refused=i < 8)
    added = cli(
        workspace,
        "monitor",
        "add-rule",
        "handbook-rag",
        "refusal_rate > 0.5 over 15m",
        "--notify",
        f"webhook:{receiver['url']}",
    )
    assert added.exit_code == 0, added.output
    assert "refusal_rate > 0.5 for 0s over 15m" in added.output
    first = cli(workspace, "monitor", "check")
    assert "firing" in first.output, first.output
    again = cli(workspace, "monitor", "check")
    assert "0 transitions" in again.output  # still firing: no second event
    assert [r["state"] for r in receiver["received"]] == ["firing"]
    assert receiver["received"][0]["value"] == pytest.approx(0.8)
    for i in range(40):  # the refusals age out behind answered traffic
        make_trace(workspace.engine, started_at=now - 100 + i, refused=False)
    resolved = cli(workspace, "monitor", "check")
    assert "resolved" in resolved.output
    assert [r["state"] for r in receiver["received"]] == ["firing", "resolved"]
    events = cli(workspace, "monitor", "events")
    assert "firing" in events.output and "resolved" in events.output and "ok" in events.output
    assert "ok" in cli(workspace, "monitor", "rules").output
    assert "refusal_rate" in failure(workspace, "monitor", "add-rule", "x", "refusal_rat > 0.5")
    assert cli(workspace, "monitor", "remove-rule", "1").exit_code == 0


def test_prune_keeps_the_figures_of_the_hours_it_deletes(workspace: Workspace) -> None:
    old = time.time() - 10 * 86400
    for i in range(12):
        make_trace(workspace.engine, started_at=old + i * 60, refused=i < 3)
    make_trace(workspace.engine, started_at=time.time() - 60)
    dry = cli(workspace, "monitor", "prune", "--older-than", "7d", "--dry-run")
    assert "would delete 12 traces" in dry.output
    pruned = cli(workspace, "monitor", "prune", "--older-than", "7d")
    assert "deleted 12 traces" in pruned.output, pruned.output
    shown = cli(
        workspace,
        "monitor",
        "show",
        "handbook-rag",
        "--window",
        "14d",
        "--last",
        "14d",
        "--no-drift",
    )
    # one window over both: 3 refusals in 13 answers, 12 of them from the pruned hours' rollup
    assert "23%" in shown.output and " 13 " in shown.output


def test_ratings_become_eval_and_training_datasets(workspace: Workspace) -> None:
    engine = workspace.engine
    wrong = make_trace(engine, question="Which flag pins?", answer="--latest")
    good = make_trace(engine, question="Where are traces?", answer="In slmops.db.")
    cli(workspace, "feedback", "add", wrong, "--score", "0", "--correction", "Use --version N.")
    cli(workspace, "feedback", "add", good, "--score", "1")
    made = cli(
        workspace,
        "eval",
        "dataset",
        "from-traces",
        "handbook-rag",
        "--feedback",
        "negative",
        "--with-corrections",
        "-d",
        "handbook-failures",
    )
    assert made.exit_code == 0, made.output
    assert "handbook-failures@1 committed: 1 cases (1 with a reference)" in made.output
    _, cases = Datasets(workspace).cases("handbook-failures@1")
    assert cases[0].reference == "Use --version N." and cases[0].metadata["trace_id"] == wrong
    trained = cli(
        workspace,
        "train",
        "data",
        "handbook-fixes",
        "--from-traces",
        "handbook-rag",
        "--feedback",
        "positive,corrected",
    )
    assert trained.exit_code == 0, trained.output
    version, examples = TrainDatasets(workspace).examples("handbook-fixes@1")
    replies = sorted(e.messages[-1].content for e in examples)
    assert replies == ["In slmops.db.", "Use --version N."]
    assert version.lineage["feedback"] == "positive,corrected"
    none = failure(workspace, "eval", "dataset", "from-traces", "other", "-d", "x")
    assert "no traces of 'other'" in none
