"""Pipelines: declaration checks, caching (a changed input reruns exactly what reads it),
gates, resume after a killed run, the Python API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmops.apps.templates import init_stack
from slmops.errors import ConfigError
from slmops.pipelines import (
    Pipeline,
    PipelineError,
    PipelineRecords,
    PipelineRunner,
    load_pipeline,
)
from slmops.pipelines.graph import pipeline_graph
from slmops.pipelines.spec import parse_pipeline
from slmops.store import Workspace

STEPS = textwrap.dedent(
    """
    import json
    from pathlib import Path

    def count(ctx, ref):
        # remembers each call, so tests see exactly which steps ran
        log = Path(ctx.directory, "calls.log")
        log.write_text(log.read_text() + "count\\n" if log.exists() else "count\\n")
        return {"seen": ref, "n": 1}

    def report(ctx, seen):
        log = Path(ctx.directory, "calls.log")
        log.write_text(log.read_text() + "report\\n")
        return {"line": f"saw {seen}"}

    def alone(ctx):
        log = Path(ctx.directory, "calls.log")
        log.write_text(log.read_text() + "alone\\n" if log.exists() else "alone\\n")
        return {"ok": True}
    """
)

PIPELINE = textwrap.dedent(
    """
    [pipeline]
    name = "refresh"

    [steps.ingest]
    op = "ingest"
    corpus = "kb"
    paths = ["docs"]

    [steps.count]
    op = "python"
    call = "steps:count"
    args = { ref = "${ingest.ref}" }

    [steps.report]
    op = "python"
    call = "steps:report"
    args = { seen = "${count.seen}" }

    [steps.alone]
    op = "python"
    call = "steps:alone"
    """
)


@pytest.fixture
def project(tmp_path: Path, shipped_embedder: object) -> Path:
    folder = tmp_path / "project"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "a.md").write_text("# Alpha\n\nAlpha is the first letter.\n")
    (folder / "docs" / "b.md").write_text("# Beta\n\nBeta comes after alpha.\n")
    (folder / "steps.py").write_text(STEPS)
    (folder / "pipeline.toml").write_text(PIPELINE)
    return folder


def calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def states(outcome: object) -> dict[str, str]:
    return {step.step: step.status for step in outcome.record.steps}  # type: ignore[attr-defined]


def test_unchanged_steps_are_cached_and_a_change_reruns_exactly_its_downstream(
    workspace: Workspace, project: Path
) -> None:
    spec = load_pipeline(project / "pipeline.toml")
    assert spec.order == ("ingest", "alone", "count", "report")
    runner = PipelineRunner(workspace)

    first = runner.run(spec)
    assert first.status == "complete"
    assert states(first) == {"ingest": "ok", "count": "ok", "report": "ok", "alone": "ok"}
    assert sorted(calls(project)) == ["alone", "count", "report"]
    assert first.record.step("ingest").outputs["ref"] == "kb@1"  # type: ignore[union-attr]
    assert first.record.step("report").outputs == {"line": "saw kb@1"}  # type: ignore[union-attr]

    second = runner.run(spec)
    assert set(states(second).values()) == {"cached"}
    assert calls(project) == []

    # a document changes: ingest commits kb@2, count sees a new ref, report a new value;
    # "alone" reads nothing that changed and stays cached
    (project / "docs" / "b.md").write_text("# Beta\n\nBeta is the second letter.\n")
    third = runner.run(spec)
    assert states(third) == {"ingest": "ok", "count": "ok", "report": "ok", "alone": "cached"}
    assert sorted(calls(project)) == ["count", "report"]
    assert third.record.step("report").outputs == {"line": "saw kb@2"}  # type: ignore[union-attr]

    # editing a step's code reruns that step (and what reads its outputs, when they change)
    (project / "steps.py").write_text(STEPS + "\n# edited\n")
    fourth = runner.run(spec)
    assert states(fourth)["ingest"] == "cached"
    assert states(fourth)["count"] == "ok" and states(fourth)["alone"] == "ok"
    assert states(fourth)["report"] == "ok"  # its own code changed too (same file)

    # --force reruns a cached step; a corpus version committed by hand invalidates ingest
    assert states(runner.run(spec, force={"alone"}))["alone"] == "ok"
    runs = PipelineRecords(workspace).list("refresh")
    assert len(runs) == 5 and runs[0].status == "complete"


def test_a_manual_commit_to_the_corpus_makes_ingest_run_again(
    workspace: Workspace, project: Path
) -> None:
    from slmops.data.corpus import corpora_for

    spec = load_pipeline(project / "pipeline.toml")
    runner = PipelineRunner(workspace)
    runner.run(spec)
    calls(project)
    extra = project / "extra"
    extra.mkdir()
    (extra / "c.md").write_text("# Gamma\n\nGamma is third.\n")
    corpora_for(workspace).ingest("kb", [extra], add=True)  # kb@2, by hand
    again = runner.run(spec)
    # the pipeline brings kb back to exactly its documents: kb@3, and downstream reruns
    assert states(again)["ingest"] == "ok"
    assert again.record.step("ingest").outputs["ref"] == "kb@3"  # type: ignore[union-attr]
    assert states(again)["alone"] == "cached"


def test_a_failed_step_skips_its_downstream_and_independent_steps_go_on(
    workspace: Workspace, project: Path
) -> None:
    (project / "steps.py").write_text(
        STEPS.replace('return {"seen": ref, "n": 1}', 'raise RuntimeError("disk full")')
    )
    outcome = PipelineRunner(workspace).run(load_pipeline(project / "pipeline.toml"))
    assert outcome.status == "failed"
    assert states(outcome) == {
        "ingest": "ok",
        "count": "failed",
        "report": "skipped",
        "alone": "ok",
    }
    count = outcome.record.step("count")
    assert count is not None and "RuntimeError: disk full" in (count.error or "")
    assert "upstream step 'count' failed" in (outcome.record.step("report").error or "")  # type: ignore[union-attr]
    assert outcome.error is not None and outcome.error.startswith("step 'count'")


def test_a_reference_to_an_output_that_does_not_exist_fails_that_step(
    workspace: Workspace, project: Path
) -> None:
    text = PIPELINE.replace("${count.seen}", "${count.nothing}")
    (project / "pipeline.toml").write_text(text)
    outcome = PipelineRunner(workspace).run(load_pipeline(project / "pipeline.toml"))
    error = outcome.record.step("report").error or ""  # type: ignore[union-attr]
    assert "step 'count' has no output 'nothing' (its outputs: n, seen)" in error


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[pipeline]\nname = "p"\n', "has no steps"),
        ('[steps.a]\nop = "ingest"\n', "no [pipeline] table"),
        ('[pipeline]\nname = "Bad Name"\n[steps.a]\nop="x"\n', "pipeline name 'Bad Name'"),
        ('[pipeline]\nname = "p"\n[steps.a]\ncorpus = "x"\n', 'needs op = "..."'),
        (
            '[pipeline]\nname = "p"\n[steps.a]\nop = "python"\ncall = "m:f"\nafter = ["b"]\n',
            "names step 'b' (after), which does not exist",
        ),
        (
            '[pipeline]\nname = "p"\n[steps.a]\nop = "python"\nx = "${b.y}"\n'
            '[steps.b]\nop = "python"\nafter = ["a"]\n',
            "has a cycle",
        ),
        ('[pipeline]\nname = "p"\nschedule = "every day"\n[steps.a]\nop = "x"\n', "not a cron"),
        ('[pipeline]\nname = "p"\nwatch = "docs"\n[steps.a]\nop = "x"\n', "watch must be a list"),
        ('[pipeline]\nname = "p"\ncolour = 1\n[steps.a]\nop = "x"\n', "unknown key(s) colour"),
    ],
)
def test_malformed_declarations_are_refused_with_the_problem_named(
    tmp_path: Path, toml: str, message: str
) -> None:
    import tomllib

    with pytest.raises(PipelineError) as raised:
        parse_pipeline(tomllib.loads(toml), directory=tmp_path, where="p.toml")
    assert message in str(raised.value)


def test_unknown_ops_and_bad_parameters_fail_their_step_with_the_field_named(
    workspace: Workspace, tmp_path: Path
) -> None:
    pipeline = Pipeline("checks", directory=tmp_path)
    pipeline.step("mystery", "teleport")
    pipeline.step("typo", "ingest", corpus="kb", pathz=["docs"])
    pipeline.step("negative", "synth", corpus="kb", n=-1)
    outcome = pipeline.run(workspace)
    errors = {s.step: s.error or "" for s in outcome.record.steps}
    assert "unknown op 'teleport'; ops: ingest, dataset, synth" in errors["mystery"]
    assert "paths: Field required" in errors["typo"] and "pathz: Extra inputs" in errors["typo"]
    assert "n: Input should be greater than or equal to 1" in errors["negative"]
    with pytest.raises(PipelineError, match="already has a step 'typo'"):
        pipeline.step("typo", "ingest")


def test_gates_stop_the_pipeline_and_a_changed_gate_rechecks_without_rerunning(
    workspace: Workspace, project: Path, stacks_dir: Path
) -> None:
    init_stack("kb-rag", "rag", workspace, directory=stacks_dir, corpus="kb")
    (project / "qa.jsonl").write_text(
        '{"input": "What is alpha?", "reference": "the first letter"}\n'
        '{"input": "What comes after alpha?", "reference": "Beta"}\n'
    )
    pipeline = Pipeline("gated", directory=project)
    pipeline.step("ingest", "ingest", corpus="kb", paths=["docs"])
    pipeline.step("qa", "dataset", name="kb-qa", file="qa.jsonl")
    pipeline.step(
        "eval",
        "eval",
        stack="kb-rag",
        dataset="${qa.dataset}",
        after=["ingest"],
        metrics=["contains_answer", "faithfulness"],
        gates=["contains_answer>=1.01"],
    )

    @pipeline.function(after=["eval"])
    def publish(ctx: object) -> dict[str, str]:
        return {"published": "yes"}

    failed = pipeline.run(workspace)
    assert failed.status == "failed"
    assert states(failed) == {
        "ingest": "ok",
        "qa": "ok",
        "eval": "gate_failed",
        "publish": "skipped",
    }
    evaluated = failed.record.step("eval")
    assert evaluated is not None and "contains_answer>=1.01" in (evaluated.error or "")
    assert "failed a gate" in (failed.record.step("publish").error or "")  # type: ignore[union-attr]
    run_id = evaluated.outputs["run"]
    assert set(evaluated.outputs["figures"]) >= {"contains_answer", "faithfulness"}

    # a gate the run meets: the same eval run is re-checked (cached), publish now runs
    pipeline._steps["eval"].params["gates"] = ["faithfulness>=0.0"]
    passed = pipeline.run(workspace)
    assert passed.status == "complete", [(s.step, s.status, s.error) for s in passed.record.steps]
    assert states(passed)["eval"] == "cached" and states(passed)["publish"] == "ok"
    assert passed.record.step("eval").outputs["run"] == run_id  # type: ignore[union-attr]


KILLER = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path

    def first(ctx):
        return {"value": 41}

    def fragile(ctx, value):
        ctx.save_progress({"half": value})
        marker = Path(ctx.directory, "died-once")
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)  # the machine dies mid-step
        return {"value": value + 1, "resumed_from": ctx.progress.get("half")}

    def last(ctx, value):
        return {"final": value}
    """
)


def test_a_killed_run_resumes_from_the_step_it_died_in(
    workspace: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / "steps.py").write_text(KILLER)
    (folder / "pipeline.toml").write_text(
        textwrap.dedent(
            """
            [pipeline]
            name = "fragile"
            [steps.first]
            op = "python"
            call = "steps:first"
            [steps.fragile]
            op = "python"
            call = "steps:fragile"
            args = { value = "${first.value}" }
            [steps.last]
            op = "python"
            call = "steps:last"
            args = { value = "${fragile.value}" }
            """
        )
    )
    script = (
        "from slmops.store import Workspace\n"
        "from slmops.pipelines import PipelineRunner, load_pipeline\n"
        f"ws = Workspace.open({str(workspace.home)!r})\n"
        f"PipelineRunner(ws).run(load_pipeline(__import__('pathlib').Path({str(folder)!r}) "
        "/ 'pipeline.toml'))\n"
    )
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert died.returncode == -9, died.stderr.decode()

    records = PipelineRecords(workspace)
    [stopped] = records.list("fragile")
    assert stopped.status == "running" and not stopped.alive()
    assert [s.status for s in stopped.steps] == ["ok", "running", "pending"]
    assert stopped.step("fragile").progress == {"half": 41}  # type: ignore[union-attr]

    resumed = PipelineRunner(workspace).resume(stopped.id[:8])
    assert resumed.run_id == stopped.id and resumed.status == "complete"
    fragile = resumed.record.step("fragile")
    assert fragile is not None and fragile.outputs == {"value": 42, "resumed_from": 41}
    assert resumed.record.step("last").outputs == {"final": 42}  # type: ignore[union-attr]
    assert [s.status for s in resumed.record.steps] == ["ok", "ok", "ok"]
    with pytest.raises(PipelineError, match="is complete; nothing to resume"):
        PipelineRunner(workspace).resume(stopped.id)


def test_a_live_run_cannot_be_resumed_twice(workspace: Workspace, tmp_path: Path) -> None:
    pipeline = Pipeline("live", directory=tmp_path)
    pipeline.step("a", "python", call="os:getcwd")
    spec = pipeline.spec()
    run_id = PipelineRecords(workspace).create(spec, trigger="manual", executor="local")
    with pytest.raises(PipelineError, match=f"still running \\(pid {os.getpid()}"):
        PipelineRunner(workspace).resume(run_id)


def test_python_steps_must_return_json_dicts(workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "def number(ctx):\n    return 3\n\ndef obj(ctx):\n    return {'x': object()}\n"
    )
    pipeline = Pipeline("bad", directory=tmp_path)
    pipeline.step("number", "python", call="bad:number")
    pipeline.step("obj", "python", call="bad:obj")
    pipeline.step("missing", "python", call="bad:nothing")
    pipeline.step("nomodule", "python", call="nowhere_at_all:f")
    errors = {s.step: s.error or "" for s in pipeline.run(workspace).record.steps}
    assert "bad:number returned int; return a dict or None" in errors["number"]
    assert "outputs that are not JSON" in errors["obj"]
    assert "'bad' has no function 'nothing'" in errors["missing"]
    assert "cannot import 'nowhere_at_all'" in errors["nomodule"]


def test_the_graph_shows_steps_edges_and_a_runs_states(workspace: Workspace, project: Path) -> None:
    spec = load_pipeline(project / "pipeline.toml")
    outcome = PipelineRunner(workspace).run(spec)
    text = pipeline_graph(spec, outcome.record).mermaid()
    assert "s_ingest --> s_count" in text and "s_count --> s_report" in text
    assert "style s_ingest fill:#c8f0c8" in text
    dot = pipeline_graph(spec).dot()
    assert "s_ingest -> s_count" in dot


def test_force_must_name_steps_of_the_pipeline(workspace: Workspace, tmp_path: Path) -> None:
    pipeline = Pipeline("p", directory=tmp_path)
    pipeline.step("a", "python", call="os:getcwd")
    with pytest.raises(PipelineError, match="--force names no step of 'p': b"):
        PipelineRunner(workspace).run(pipeline.spec(), force={"b"})
    with pytest.raises(ConfigError):
        Pipeline("Bad Name")


def test_a_run_whose_process_died_shows_as_crashed() -> None:
    import socket
    import subprocess
    import sys

    from slmops.pipelines.records import RunRecord

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()

    def record(status: str, host: str, pid: int) -> RunRecord:
        return RunRecord(
            id="r1", pipeline="p", spec={}, status=status, trigger="manual", executor="local",
            host=host, pid=pid, started_at=0.0, finished_at=None, error=None, steps=[],
        )  # fmt: skip

    here = socket.gethostname()
    assert record("running", here, child.pid).state == "crashed"
    assert record("running", here, os.getpid()).state == "running"
    assert record("running", "another-host", child.pid).state == "running"  # cannot tell
    assert record("complete", here, child.pid).state == "complete"
