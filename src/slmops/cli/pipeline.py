"""``slmops pipeline ...``: declare, run, resume, inspect, draw and schedule pipelines."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.choices import PIPELINE_TEMPLATES
from slmops.cli.common import (
    AddressOption,
    ExecutorOption,
    WorkspaceOption,
    check_executor,
    console,
    error_console,
    open_workspace,
    when,
)
from slmops.cli.graph import write_graph
from slmops.errors import SlmopsError

if TYPE_CHECKING:
    from slmops.pipelines.records import RunRecord
    from slmops.pipelines.runner import RunOutcome, StepEvent
    from slmops.pipelines.schedule import Trigger
    from slmops.pipelines.spec import PipelineSpec
    from slmops.store.workspace import Workspace

app = typer.Typer(
    help="Chain lifecycle steps into declared pipelines: cached, resumable, scheduled.",
    no_args_is_help=True,
)

_STYLES = {
    "ok": "green",
    "cached": "dim green",
    "running": "yellow",
    "pending": "dim",
    "failed": "red",
    "gate_failed": "red",
    "skipped": "dim",
    "interrupted": "yellow",
    "crashed": "red",
}


_STYLES["complete"] = "green"


def _status(status: str) -> str:
    style = _STYLES.get(status)
    return f"[{style}]{status}[/]" if style else escape(status)


def _roots(ws: Workspace) -> list[Path]:
    return [Path.cwd(), ws.home / "pipelines"]


def _load(ws: Workspace, ref: str) -> PipelineSpec:
    from slmops.pipelines.spec import find_pipeline, load_pipeline

    return load_pipeline(find_pipeline(ref, _roots(ws)))


class _View:
    """The live progress table of a run: each step's state, timing and what it produced."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.rows: dict[str, dict[str, Any]] = {
            name: {"status": "pending", "detail": "", "started": None, "took": None}
            for name in spec.order
        }

    def event(self, event: StepEvent) -> None:
        row = self.rows[event.step]
        if event.status == "running":
            row["started"] = time.monotonic()
        elif row["started"] is not None:
            row["took"] = time.monotonic() - row["started"]
        row["status"], row["detail"] = event.status, event.detail

    def progress(self, step: str, what: str, done: int, total: int) -> None:
        self.rows[step]["detail"] = f"{what} {done}/{total}" if total else what

    def __rich__(self) -> Table:
        table = Table("step", "op", "state", "time", "detail", box=None)
        for name, row in self.rows.items():
            took = row["took"]
            if took is None and row["started"] is not None:
                took = time.monotonic() - row["started"]
            table.add_row(
                name,
                self.spec.steps[name].op,
                _status(row["status"]),
                f"{took:.1f}s" if took is not None else "",
                escape(str(row["detail"])[:90]),
            )
        return table


class _StopOnSignal:
    """SIGTERM stops the run like Ctrl-C: the step in progress is marked interrupted."""

    def __enter__(self) -> _StopOnSignal:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *_exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _execute(
    ws: Workspace,
    spec: PipelineSpec,
    *,
    resume: str | None = None,
    trigger: str = "manual",
    force: set[str] | None = None,
    executor: str = "local",
    address: str | None = None,
) -> RunOutcome:
    from rich.live import Live

    from slmops.pipelines.records import PipelineRecords
    from slmops.pipelines.runner import PipelineRunner

    view = _View(spec)
    runner = PipelineRunner(
        ws, on_event=view.event, on_progress=view.progress, executor=executor, address=address
    )
    with Live(view, console=console, refresh_per_second=4, transient=False), _StopOnSignal():
        try:
            if resume:
                outcome = runner.resume(resume)
            else:
                outcome = runner.run(spec, trigger=trigger, force=force)
        except KeyboardInterrupt:
            latest = PipelineRecords(ws).list(spec.name, limit=1)
            run = latest[0].id[:12] if latest else "RUN"
            error_console.print(
                f"[yellow]interrupted:[/] finished steps are kept; resume with: "
                f"slmops pipeline run {spec.name} --resume {run}"
            )
            raise typer.Exit(130) from None
    console.line()
    return outcome


def _report(outcome: RunOutcome) -> None:
    record = outcome.record
    counts: dict[str, int] = {}
    for step in record.steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    if outcome.status == "complete":
        console.print(f"[green]Run {outcome.run_id[:12]} complete[/]: {tally}")
        return
    error_console.print(
        f"[red]Run {outcome.run_id[:12]} failed[/]: {tally}; {escape(outcome.error or '')}"
    )
    error_console.print(
        f"Details: slmops pipeline show {outcome.run_id[:12]}   After a fix, resume with: "
        f"slmops pipeline run {record.pipeline} --resume {outcome.run_id[:12]}"
    )
    raise typer.Exit(1)


@app.command("init")
def init_command(
    name: str = typer.Argument(..., help="Pipeline name (also its folder name)."),
    template: str = typer.Option(
        "rag-refresh", "--template", "-t", help=f"One of: {', '.join(PIPELINE_TEMPLATES)}."
    ),
    directory: Path = typer.Option(Path(), "--dir", help="Where to create the pipeline folder."),
    corpus: str = typer.Option("docs", "--corpus", "-c", help="The corpus it refreshes."),
    stack: str = typer.Option("docs-rag", "--stack", "-s", help="The stack it evaluates."),
    docs: str = typer.Option("docs", "--docs", help="The documents folder it ingests."),
) -> None:
    """Write a pipeline.toml from a template (ingest -> synth -> eval, with gates)."""
    from slmops.pipelines.templates import init_pipeline

    spec = init_pipeline(name, template, directory, corpus=corpus, stack=stack, docs=docs)
    console.print(f"Created pipeline [bold]{name}[/] in {spec.source}: {' -> '.join(spec.order)}")
    console.print(f"Next: slmops pipeline run {name}   (see it: slmops pipeline graph {name})")


@app.command("run")
def run_command(
    pipeline: str = typer.Argument(..., help="Pipeline name, folder or pipeline.toml."),
    resume: str | None = typer.Option(None, "--resume", help="Continue this stopped run."),
    force: list[str] = typer.Option([], "--force", "-f", help="Run this step even if cached."),
    trigger: str = typer.Option("manual", "--trigger", help="Recorded as what started it."),
    executor: str = ExecutorOption,
    address: str | None = AddressOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Run a pipeline: steps whose inputs did not change are reused (cached); a failed step or
    gate stops what depends on it (--executor ray: each step a Ray task). Exit 1 when the run
    fails."""
    from slmops.pipelines.records import PipelineRecords
    from slmops.pipelines.spec import PipelineSpec

    check_executor(executor)
    with open_workspace(workspace) as ws:
        spec = _load(ws, pipeline)
        if resume:
            record = PipelineRecords(ws).load(resume)
            if record.pipeline != spec.name:
                raise SlmopsError(
                    f"run {record.id[:12]} is of pipeline {record.pipeline!r}, not {spec.name!r}"
                )
            spec = PipelineSpec.from_dict(record.spec)
        outcome = _execute(
            ws,
            spec,
            resume=resume,
            trigger=trigger,
            force=set(force),
            executor=executor,
            address=address,
        )
    _report(outcome)


@app.command("runs")
def runs_command(
    pipeline: str | None = typer.Argument(None, help="Only this pipeline's runs."),
    limit: int = typer.Option(20, "--limit", "-n", min=1),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Recent pipeline runs."""
    from slmops.pipelines.records import PipelineRecords

    with open_workspace(workspace) as ws:
        runs = PipelineRecords(ws).list(pipeline, limit)
    if not runs:
        console.print("No pipeline runs yet. Start one with: slmops pipeline run NAME")
        return
    table = Table("run", "pipeline", "status", "trigger", "started", "took", "steps")
    for run in runs:
        took = f"{run.finished_at - run.started_at:.1f}s" if run.finished_at else ""
        states: dict[str, int] = {}
        for step in run.steps:
            states[step.status] = states.get(step.status, 0) + 1
        table.add_row(
            run.id[:12],
            run.pipeline,
            _status(run.state),
            run.trigger,
            when(run.started_at),
            took,
            ", ".join(f"{n} {s}" for s, n in states.items()),
        )
    console.print(table)


def _show_run(run: RunRecord) -> None:
    took = f", {run.finished_at - run.started_at:.1f}s" if run.finished_at else ""
    console.print(
        f"[bold]Run {run.id}[/] of {run.pipeline}: {_status(run.state)} "
        f"({run.trigger}, {run.executor}, started {when(run.started_at)}{took})"
    )
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]")
    table = Table("step", "op", "state", "time", "produced", "note", box=None)
    for step in run.steps:
        produced = {
            k: v for k, v in step.outputs.items() if k not in ("summary", "checks", "metrics")
        }
        shown = ", ".join(f"{k}={v}" for k, v in produced.items() if not isinstance(v, dict))
        figures = step.outputs.get("figures")
        if isinstance(figures, dict):
            metrics = [(k, v) for k, v in figures.items() if k not in ("cases", "errors")]
            shown += "; " + ", ".join(
                f"{k}={v:.3f}" for k, v in metrics[:4] if isinstance(v, int | float)
            )
        checks = step.progress.get("checks") or []
        note = step.error or "; ".join(
            ("passed " if c["passed"] else "FAILED ") + c["text"] for c in checks
        )
        table.add_row(
            step.step,
            step.op,
            _status(step.status),
            f"{step.duration_s:.1f}s" if step.duration_s is not None else "",
            escape(shown[:80]),
            escape(note[:120]),
        )
    console.print(table)


@app.command("show")
def show_command(
    run: str = typer.Argument(..., help="Run id (or a 6+ character prefix)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """One run: each step's state, timing, produced versions and gate results."""
    from slmops.pipelines.records import PipelineRecords

    with open_workspace(workspace) as ws:
        record = PipelineRecords(ws).load(run)
    _show_run(record)


@app.command("graph")
def graph_command(
    pipeline: str = typer.Argument(..., help="Pipeline name, folder or pipeline.toml."),
    run: str | None = typer.Option(None, "--run", help="Colour the steps by this run's states."),
    fmt: str = typer.Option("mermaid", "--format", "-f", help="mermaid, dot, svg or png."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Draw the pipeline's steps and what flows between them (solid: outputs used; dashed:
    only ordered), optionally coloured by a run."""
    from slmops.pipelines.graph import pipeline_graph
    from slmops.pipelines.records import PipelineRecords

    with open_workspace(workspace) as ws:
        spec = _load(ws, pipeline)
        record = PipelineRecords(ws).load(run) if run else None
    write_graph(pipeline_graph(spec, record), fmt, output, default=Path(spec.name))


@app.command("ops")
def ops_command() -> None:
    """The operations a step can run, and their parameters."""
    from slmops.pipelines.ops import OPERATIONS

    table = Table("op", "parameters", "what it does")
    for name, op in OPERATIONS.items():
        fields = ", ".join(
            f"{key}" + ("" if info.is_required() else "?")
            for key, info in op.Params.model_fields.items()
        )
        doc = " ".join((type(op).__doc__ or "").split()).replace("``", "")
        table.add_row(name, fields, doc)
    console.print(table)


@app.command("schedule")
def schedule_command(
    pipeline: str = typer.Argument(..., help="Pipeline name, folder or pipeline.toml."),
    cron: str | None = typer.Option(None, "--cron", help="Cron expression (else the file's)."),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between checks of watched things."),
    max_runs: int | None = typer.Option(None, "--max-runs", min=1, help="Stop after N runs."),
    for_s: float | None = typer.Option(None, "--for", min=0, help="Stop after this many s."),
    crontab: bool = typer.Option(
        False, "--crontab", help="Print a crontab line for the system's cron instead."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Run the pipeline on its cron schedule and whenever a watched path or corpus changes
    (one run at a time), until stopped; or print the crontab line that does the same."""
    from slmops.pipelines.schedule import Scheduler, crontab_line
    from slmops.pipelines.spec import load_pipeline

    with open_workspace(workspace) as ws:
        spec = _load(ws, pipeline)
        if crontab:
            expression = cron or spec.schedule
            if expression is None:
                raise SlmopsError("give --cron or a schedule in the pipeline's [pipeline] table")
            console.print(
                crontab_line(spec, expression, workspace=ws.home), markup=False, highlight=False
            )
            return

        def run(trigger: Trigger) -> None:
            console.print(f"[bold]{when(time.time())}[/] {spec.name}: {trigger.reason}")
            outcome = _execute(
                ws, load_pipeline(spec.source) if spec.source else spec, trigger=trigger.reason
            )
            style = "green" if outcome.status == "complete" else "red"
            console.print(f"[{style}]run {outcome.run_id[:12]} {outcome.status}[/]")

        scheduler = Scheduler(ws, spec, run, cron=cron, poll_s=poll)
        watched = ", ".join(spec.watch) or "nothing"

        def started() -> None:
            console.print(
                f"Scheduling {spec.name}: cron {scheduler.cron or '-'}, watching {watched} "
                "(Ctrl-C stops)"
            )
            console.file.flush()

        until = time.time() + for_s if for_s is not None else None
        try:
            runs = scheduler.serve(max_runs=max_runs, until=until, on_start=started)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    console.print(f"Scheduler stopped after {runs} run(s)")
