"""The stored record of pipeline runs: one row per run, one per step, written as each step
changes state (in its own transaction), so a killed run leaves an exact account of what
finished and what to resume."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, select, update

from slmops.errors import NotFoundError
from slmops.pipelines.spec import PipelineError, PipelineSpec
from slmops.store.owners import pid_alive
from slmops.store.schema import pipeline_runs, pipeline_steps
from slmops.store.workspace import Workspace

FINISHED = ("ok", "cached")  # a step whose outputs later steps can use
REUSABLE = ("ok", "cached", "gate_failed")  # a finished result the cache can hand back


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    step: str
    op: str
    status: str
    key: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    progress: dict[str, Any]
    started_at: float | None
    finished_at: float | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline: str
    spec: dict[str, Any]
    status: str
    trigger: str
    executor: str
    host: str
    pid: int
    started_at: float
    finished_at: float | None
    error: str | None
    steps: list[StepRecord]

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.step == name), None)

    @property
    def state(self) -> str:
        """The status as recorded, or ``crashed``: marked running, but its process is gone
        from this machine (``kill -9``, out of memory, a power cut); resume it."""
        return "crashed" if self.status == "running" and not self.alive() else self.status

    def alive(self) -> bool:
        """Whether the process running it may still be there: on this host, whether its pid
        lives; on another host, assumed (it cannot be checked from here)."""
        if self.status != "running":
            return False
        return self.host != socket.gethostname() or pid_alive(self.pid)


class PipelineRecords:
    def __init__(self, workspace: Workspace) -> None:
        self.engine = workspace.engine

    def create(self, spec: PipelineSpec, *, trigger: str, executor: str) -> str:
        run_id = uuid.uuid4().hex
        with self.engine.begin() as connection:
            connection.execute(
                insert(pipeline_runs).values(
                    id=run_id,
                    pipeline=spec.name,
                    spec=spec.to_dict(),
                    spec_sha256=spec.sha256(),
                    status="running",
                    trigger=trigger,
                    executor=executor,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=time.time(),
                )
            )
            for name in spec.order:
                connection.execute(
                    insert(pipeline_steps).values(
                        run_id=run_id,
                        step=name,
                        op=spec.steps[name].op,
                        status="pending",
                        inputs={},
                        outputs={},
                        progress={},
                    )
                )
        return run_id

    def claim(self, run_id: str) -> None:
        """Take over a stopped run in this process (a resume)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == run_id)
                .values(
                    status="running",
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    finished_at=None,
                    error=None,
                )
            )

    def update_step(self, run_id: str, step: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(pipeline_steps)
                .where(and_(pipeline_steps.c.run_id == run_id, pipeline_steps.c.step == step))
                .values(**values)
            )

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == run_id)
                .values(status=status, error=error, finished_at=time.time())
            )

    def cached(self, key: str) -> StepRecord | None:
        """The newest finished step with this key, in any run."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(pipeline_steps)
                .where(and_(pipeline_steps.c.key == key, pipeline_steps.c.status.in_(REUSABLE)))
                .order_by(pipeline_steps.c.finished_at.desc())
                .limit(1)
            ).first()
        return StepRecord(**row._mapping) if row is not None else None

    def resolve(self, ref: str) -> str:
        """The run id a full id or a prefix of 6+ characters names."""
        if len(ref) < 6:
            raise PipelineError(f"run id {ref!r} is too short: give 6 or more characters")
        with self.engine.connect() as connection:
            ids = (
                connection.execute(
                    select(pipeline_runs.c.id).where(pipeline_runs.c.id.startswith(ref)).limit(2)
                )
                .scalars()
                .all()
            )
        if not ids:
            raise NotFoundError(f"no pipeline run {ref!r}; see: slmops pipeline runs")
        if len(ids) > 1:
            raise PipelineError(f"run id prefix {ref!r} is ambiguous; give more characters")
        return str(ids[0])

    def load(self, ref: str) -> RunRecord:
        run_id = self.resolve(ref)
        with self.engine.connect() as connection:
            run = connection.execute(
                select(pipeline_runs).where(pipeline_runs.c.id == run_id)
            ).one()
            steps = connection.execute(
                select(pipeline_steps).where(pipeline_steps.c.run_id == run_id)
            ).all()
        values = dict(run._mapping)
        values.pop("spec_sha256")
        order = {s["name"]: i for i, s in enumerate(values["spec"]["steps"])}
        records = sorted(
            (StepRecord(**row._mapping) for row in steps), key=lambda s: order.get(s.step, 0)
        )
        return RunRecord(**values, steps=records)

    def list(self, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        query = select(pipeline_runs.c.id).order_by(pipeline_runs.c.started_at.desc())
        if pipeline is not None:
            query = query.where(pipeline_runs.c.pipeline == pipeline)
        with self.engine.connect() as connection:
            ids = connection.execute(query.limit(limit)).scalars().all()
        return [self.load(run_id) for run_id in ids]
