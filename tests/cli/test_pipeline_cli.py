"""``slmops pipeline`` from the command line: init, run (cached the second time), runs,
show, graph, a failing gate's exit status, resume after SIGTERM, schedule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from slmops.apps.quickstart import bundled_docs
from tests.cli.test_cli import assert_one_line_error, python_in, slmops


def test_init_run_cached_rerun_show_graph_and_a_failing_gate(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    project = tmp_path / "project"
    docs = project / "docs"
    docs.mkdir(parents=True)
    for source in sorted(bundled_docs().glob("*.md"))[:3]:
        (docs / source.name).write_text(source.read_text())
    (project / "qa.jsonl").write_text(
        '{"input": "What is a workspace?", "reference": "workspace"}\n'
    )
    assert slmops("init", "docs-rag", "--corpus", "docs", home=home, cwd=project).returncode == 0

    made = slmops("pipeline", "init", "refresh", home=home, cwd=project)
    assert "ingest -> synth -> eval" in made.stdout, made.stderr
    text = (project / "refresh" / "pipeline.toml").read_text()
    assert 'paths = ["../docs"]' in text and 'stack = "docs-rag"' in text
    again = slmops("pipeline", "init", "refresh", home=home, cwd=project)
    assert_one_line_error(again, "already exists")

    # a quick pipeline of our own (the template's synth step runs the model: seconds more)
    (project / "quick").mkdir()
    (project / "quick" / "pipeline.toml").write_text(
        textwrap.dedent(
            """
            [pipeline]
            name = "quick"
            [steps.ingest]
            op = "ingest"
            corpus = "docs"
            paths = ["../docs"]
            [steps.qa]
            op = "dataset"
            name = "docs-qa"
            file = "../qa.jsonl"
            [steps.eval]
            op = "eval"
            stack = "docs-rag"
            dataset = "${qa.dataset}"
            after = ["ingest"]
            metrics = ["contains_answer"]
            gates = ["contains_answer>=0"]
            """
        )
    )
    first = slmops("pipeline", "run", "quick", home=home, cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "complete: 3 ok" in first.stdout
    second = slmops("pipeline", "run", "quick", home=home, cwd=project)
    assert "complete: 3 cached" in second.stdout, second.stdout + second.stderr

    runs = slmops("pipeline", "runs", home=home, cwd=project).stdout
    assert runs.count("quick") == 2 and "3 cached" in runs and "3 ok" in runs
    run_id = python_in(
        home,
        "from slmops.store import Workspace; from slmops.pipelines import PipelineRecords; "
        "print(PipelineRecords(Workspace.open()).list('quick')[1].id)",
    )[:12]  # the first run: its steps ran
    shown = slmops("pipeline", "show", run_id, home=home).stdout
    assert "ref=docs@1" in shown and "passed gate" in shown, shown
    graph = slmops("pipeline", "graph", "quick", "--run", run_id, home=home, cwd=project).stdout
    assert "s_qa --> s_eval" in graph and "s_ingest -.-> s_eval" in graph

    # a gate the run cannot meet: exit 1, the eval run is reused, the reason is printed
    quick = project / "quick" / "pipeline.toml"
    quick.write_text(quick.read_text().replace("contains_answer>=0", "contains_answer>=2"))
    failed = slmops("pipeline", "run", "quick", home=home, cwd=project)
    assert failed.returncode == 1
    assert "gate_failed" in failed.stdout and "contains_answer>=2" in failed.stderr
    assert "--resume" in failed.stderr
    assert_one_line_error(
        slmops("pipeline", "run", "nope", home=home, cwd=project), "no pipeline 'nope'"
    )
    assert_one_line_error(slmops("pipeline", "show", "abcdef", home=home), "no pipeline run")


def test_sigterm_interrupts_and_resume_finishes(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "steps.py").write_text(
        textwrap.dedent(
            """
            import time
            from pathlib import Path

            def wait(ctx):
                marker = Path(ctx.directory, "waited")
                if not marker.exists():
                    Path(ctx.directory, "started").write_text("x")
                    marker.write_text("x")
                    time.sleep(60)
                return {"done": True}

            def after(ctx, done):
                return {"after": done}
            """
        )
    )
    (folder / "pipeline.toml").write_text(
        '[pipeline]\nname = "slow"\n[steps.wait]\nop = "python"\ncall = "steps:wait"\n'
        '[steps.after]\nop = "python"\ncall = "steps:after"\nargs = { done = "${wait.done}" }\n'
    )
    env = {**os.environ, "SLMOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "slmops.cli.main", "pipeline", "run", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not (folder / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "resume with: slmops pipeline run slow --resume" in err
    run_id = err.split("--resume")[1].split()[0]

    shown = slmops("pipeline", "show", run_id, home=home).stdout
    assert "interrupted" in shown
    resumed = slmops("pipeline", "run", str(folder), "--resume", run_id, home=home)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "complete: 2 ok" in resumed.stdout


def test_schedule_runs_when_the_watched_folder_changes(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    folder = tmp_path / "watched"
    (folder / "inbox").mkdir(parents=True)
    (folder / "steps.py").write_text("def count(ctx):\n    return {'n': 1}\n")
    (folder / "pipeline.toml").write_text(
        '[pipeline]\nname = "watched"\nwatch = ["inbox"]\n'
        '[steps.count]\nop = "python"\ncall = "steps:count"\n'
    )
    env = {**os.environ, "SLMOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slmops.cli.main",
            "pipeline",
            "schedule",
            str(folder),
            "--poll",
            "0.2",
            "--max-runs",
            "1",
            "--for",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # printed once it has read the folder's state
    assert first.startswith("Scheduling watched"), first
    (folder / "inbox" / "new.md").write_text("a new document")
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, out + err
    assert "watch:inbox" in out and "complete" in out and "after 1 run(s)" in out
    line = slmops(
        "pipeline", "schedule", str(folder), "--crontab", "--cron", "*/5 * * * *", home=home
    )
    assert line.stdout.startswith("*/5 * * * * mkdir -p"), line.stdout + line.stderr
