"""An eval run whose process is gone shows as crashed; a resume takes it over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from slmops.cli.evaluate import app
from slmops.errors import BusyError
from slmops.eval.runner import EvalRun, list_runs, load_run, run_state
from slmops.store import Workspace
from slmops.store.owners import machine_id
from slmops.store.schema import eval_runs


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def record(workspace: Workspace, pid: int, machine: str | None = None, **config: Any) -> str:
    run_id = uuid.uuid4().hex
    process = {"host": socket.gethostname(), "machine": machine or machine_id(), "pid": pid}
    with workspace.engine.begin() as connection:
        connection.execute(
            insert(eval_runs).values(
                id=run_id,
                stack="echo",
                dataset="qs@1",
                status="running",
                started_at=time.time(),
                versions={},
                config={"metrics": ["exact_match"], "process": process, **config},
                summary={},
            )
        )
    return run_id


def test_a_run_whose_process_is_gone_is_crashed(workspace: Workspace) -> None:
    crashed = record(workspace, dead_pid())
    live = record(workspace, os.getpid())
    elsewhere = record(workspace, dead_pid(), machine="0badf00d")  # cannot be checked here
    states = {run["id"]: run_state(run) for run in list_runs(workspace)}
    assert states == {crashed: "crashed", live: "running", elsewhere: "running"}
    assert run_state(load_run(workspace, crashed)) == "crashed"

    result = CliRunner().invoke(app, ["runs", "--workspace", str(workspace.home)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if crashed[:12] in line)
    assert "crashed" in line
    assert f"slmops eval run --resume {crashed[:12]}" in result.output


def test_a_run_recorded_before_runs_named_their_process_shows_as_recorded(
    workspace: Workspace,
) -> None:
    run_id = record(workspace, 0)
    with workspace.engine.begin() as connection:
        connection.execute(
            eval_runs.update().where(eval_runs.c.id == run_id).values(config={"metrics": []})
        )
    assert run_state(load_run(workspace, run_id)) == "running"


def test_a_resume_stamps_its_own_process(workspace: Workspace) -> None:
    run_id = record(workspace, dead_pid())
    EvalRun(workspace, None, []).claim(run_id)  # type: ignore[arg-type]  # claim uses no stack
    run = load_run(workspace, run_id)
    assert run["config"]["process"]["pid"] == os.getpid()
    assert run["config"]["metrics"] == ["exact_match"]  # the rest of its config stands
    assert run_state(run) == "running"


def test_a_run_still_running_in_another_process_is_not_taken_over(
    workspace: Workspace, tmp_path: Path
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_id = record(workspace, other.pid)
        with pytest.raises(BusyError, match="still running"):
            EvalRun(workspace, None, []).claim(run_id)  # type: ignore[arg-type]
    finally:
        other.kill()
        other.wait()
    EvalRun(workspace, None, []).claim(run_id)  # type: ignore[arg-type]  # gone: taken over
    assert load_run(workspace, run_id)["config"]["process"]["pid"] == os.getpid()


def test_a_report_of_a_crashed_run_says_how_to_resume(workspace: Workspace) -> None:
    from slmops.cli.evaluate import stopped_note

    run_id = record(workspace, dead_pid())
    note = stopped_note(load_run(workspace, run_id))
    assert note is not None and "crashed" in note and f"--resume {run_id[:12]}" in note
    assert stopped_note(load_run(workspace, record(workspace, os.getpid()))) is None
