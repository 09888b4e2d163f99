"""The Ray executor on a real Ray cluster (`.ci/run` starts a head and a worker on
127.0.0.1 and sets SLMOPS_TEST_RAY_ADDRESS): ingest embedding, eval cases and pipeline steps
give what the local executor gives, and a worker killed mid-job loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import func, select

from slmops.apps.build import build_stack
from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import init_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.runner import EvalRun, build_metrics, load_run
from slmops.pipelines import PipelineRunner, load_pipeline
from slmops.pipelines.ray_executor import RayEmbedding, run_eval_cases
from slmops.store import Workspace
from slmops.store.schema import eval_results

ADDRESS = os.environ.get("SLMOPS_TEST_RAY_ADDRESS")
pytestmark = pytest.mark.skipif(
    not ADDRESS, reason="no Ray cluster: .ci/run starts one and sets SLMOPS_TEST_RAY_ADDRESS"
)
METRICS = ["contains_answer", "faithfulness", "hit_rate"]


def vectors(workspace: Workspace, ref: str) -> dict[str, np.ndarray]:
    rows = corpora_for(workspace).rows(ref, ("text", "vector"))
    return {row["text"]: np.array(row["vector"]) for row in rows}


def test_ingest_on_ray_commits_the_same_vectors_as_a_local_ingest(
    workspace: Workspace, shipped_embedder: object
) -> None:
    corpora = corpora_for(workspace)
    local = corpora.ingest("local", [bundled_docs()])
    with RayEmbedding(workspace.settings.embedder, address=ADDRESS) as spread:
        assert len(spread.actors) == 2  # one per CPU of the two nodes
        remote = corpora.ingest("remote", [bundled_docs()], embed_batches=spread, batch_size=8)
    assert remote.embedded == local.embedded == local.chunks > 8  # several batches
    a, b = vectors(workspace, "local@1"), vectors(workspace, "remote@1")
    assert a.keys() == b.keys()
    for text, vector in a.items():
        cosine = float(vector @ b[text] / np.linalg.norm(vector) / np.linalg.norm(b[text]))
        assert cosine >= 0.9999, text


def questions() -> list[EvalCase]:
    asked = [
        ("How do I version a prompt?", "prompt add"),
        ("What does a workspace hold?", "workspace"),
        ("How are traces stored?", "trace"),
        ("Which file declares a stack?", "slmops.toml"),
        ("How do I search a corpus?", "search"),
        ("What is a chain?", "chain"),
        ("How is a corpus versioned?", "version"),
        ("What does ingest do?", "ingest"),
    ]
    return [EvalCase(id=f"q{i}", input=q, reference=r) for i, (q, r) in enumerate(asked)]


@pytest.fixture
def evaluated(workspace: Workspace, handbook: object, stacks_dir: Path) -> EvalRun:
    init_stack("hb", "rag", workspace, directory=stacks_dir, corpus="docs")
    Datasets(workspace).add("hb-qa", questions())
    return EvalRun(
        workspace, build_stack("hb", workspace), build_metrics(METRICS, "local:all-minilm-l6-v2")
    )


def scores_of(workspace: Workspace, run_id: str) -> dict[str, dict[str, float | None]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(eval_results.c.case_id, eval_results.c.scores).where(
                eval_results.c.run_id == run_id
            )
        ).all()
    return {row.case_id: row.scores for row in rows}


def test_eval_on_ray_scores_like_a_local_run(workspace: Workspace, evaluated: EvalRun) -> None:
    _, cases = Datasets(workspace).cases("hb-qa")
    local = evaluated.start("hb-qa", 1)
    asyncio.run(evaluated.execute(local, cases, Runtime.from_workspace(workspace)))
    remote = evaluated.start("hb-qa", 1)
    seen: list[int] = []
    run_eval_cases(
        home=str(workspace.home),
        stack=str(evaluated.stack.manifest.path),
        models={},
        metrics=METRICS,
        run_id=remote,
        cases=cases,
        address=ADDRESS,
        on_progress=lambda done, total: seen.append(done),
    )
    summary = evaluated.finish(remote)
    assert seen[-1] == len(cases) and summary["cases"] == len(cases)
    assert scores_of(workspace, remote) == scores_of(workspace, local)  # temperature 0: same
    assert load_run(workspace, remote)["status"] == "complete"


def _case_runner_pids() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("_CaseRunner" in part for part in (p.info["cmdline"] or []))
    ]


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    workspace: Workspace, evaluated: EvalRun
) -> None:
    _, cases = Datasets(workspace).cases("hb-qa")
    run_id = evaluated.start("hb-qa", 1)
    killed: list[int] = []

    def recorded() -> int:
        with workspace.engine.connect() as connection:
            query = select(func.count()).where(eval_results.c.run_id == run_id)
            return int(connection.execute(query).scalar_one())

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            pids = _case_runner_pids()
            if pids and recorded() >= 2:  # mid-job: some cases done, others to go
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    run_eval_cases(
        home=str(workspace.home),
        stack=str(evaluated.stack.manifest.path),
        models={},
        metrics=METRICS,
        run_id=run_id,
        cases=cases,
        address=ADDRESS,
    )
    killer.join(timeout=5)
    assert killed, "no worker was killed (the run finished before two cases were recorded?)"
    summary = evaluated.finish(run_id)
    assert recorded() == len(cases) == summary["cases"]  # every case once: none lost, none twice
    assert sorted(scores_of(workspace, run_id)) == sorted(c.id for c in cases)
    assert summary["errors"] == 0


def test_pipeline_steps_run_as_ray_tasks(workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(
        textwrap.dedent(
            """
            import os

            def where(ctx):
                return {"pid": os.getpid()}

            def double(ctx, pid):
                return {"same": pid, "twice": 2}
            """
        )
    )
    (tmp_path / "pipeline.toml").write_text(
        '[pipeline]\nname = "remote"\n'
        '[steps.where]\nop = "python"\ncall = "steps:where"\n'
        '[steps.double]\nop = "python"\ncall = "steps:double"\nargs = { pid = "${where.pid}" }\n'
    )
    spec = load_pipeline(tmp_path / "pipeline.toml")
    outcome = PipelineRunner(workspace, executor="ray", address=ADDRESS).run(spec)
    assert outcome.status == "complete", [(s.step, s.error) for s in outcome.record.steps]
    pid = outcome.record.step("where").outputs["pid"]  # type: ignore[union-attr]
    assert pid != os.getpid()  # it ran in a Ray worker
    assert outcome.record.executor == "ray"
    again = PipelineRunner(workspace, executor="ray", address=ADDRESS).run(spec)
    assert {s.status for s in again.record.steps} == {"cached"}


def test_no_cluster_named_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from slmops.pipelines.ray_executor import connect\n"
        "try:\n    connect(None)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SLMOPS_RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    ).stdout
    assert out.startswith("RayExecutorError no Ray cluster given: pass --address ray://")


def test_batch_on_ray_answers_like_a_local_batch(
    workspace: Workspace, evaluated: EvalRun, tmp_path: Path
) -> None:
    from slmops.apps.batch import BatchRecord, run_batch, run_locally
    from slmops.core.runtime import use_runtime
    from slmops.pipelines.ray_executor import batch_results

    records = [BatchRecord(c.id, c.input) for c in questions()[:4]]
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    with use_runtime(Runtime.from_workspace(workspace)):
        run_batch(run_locally(evaluated.stack, records), local)
    results = batch_results(
        home=str(workspace.home),
        stack=str(evaluated.stack.manifest.path),
        records=records,
        address=ADDRESS,
    )
    assert run_batch(results, remote) == 4

    def answers(path: Path) -> dict[str, object]:
        import json

        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return {row["id"]: row["output"]["answer"] for row in rows}

    assert answers(remote) == answers(local)
