"""``slmops train ...``: training data, fine-tuning runs (tracked in MLflow), exports."""

from __future__ import annotations

import hashlib
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.choices import FORMATS
from slmops.cli.common import WorkspaceOption, console, open_workspace, when
from slmops.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from slmops.train.checkpoints import TrainState
    from slmops.train.sources import BuiltExamples

app = typer.Typer(help="Fine-tune models: training data, runs, exports.", no_args_is_help=True)


def _field_help() -> dict[str, str]:
    """The description of each field of TrainArgs and LoraArgs, which the options' help repeats.

    Pydantic makes those descriptions from the fields' docstrings; reading the docstrings
    from slmops/train/args.py's syntax tree the same way (the text that follows each
    annotated field, cleaned like inspect.cleandoc) gives the same text without importing
    pydantic and building the models whenever ``slmops`` starts. tests/cli/test_startup.py
    checks that both agree. Without the source file (a compiled-only install) the models are
    asked."""
    import ast
    import inspect

    source = Path(__file__).parents[1] / "train" / "args.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        from slmops.train.args import LoraArgs, TrainArgs

        fields = {**TrainArgs.model_fields, **LoraArgs.model_fields}
        return {name: field.description or "" for name, field in fields.items()}
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in ("TrainArgs", "LoraArgs"):
            docs = found.setdefault(node.name, {})
            for field, after in zip(node.body, [*node.body[1:], None], strict=True):
                if not (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)):
                    continue
                docs[field.target.id] = ""  # pydantic: a field without a docstring has none
                if (
                    isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    docs[field.target.id] = inspect.cleandoc(after.value.value)
    return {**found.get("TrainArgs", {}), **found.get("LoraArgs", {})}


_HELP = _field_help()


@app.command("data")
def data_command(
    name: str = typer.Argument(..., help="Training dataset name."),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="JSONL: {messages: [...]} or {prompt, completion} per line."
    ),
    from_dataset: str | None = typer.Option(
        None, "--from-dataset", help="An eval dataset (REF): its cases through --stack's prompt."
    ),
    from_traces: str | None = typer.Option(
        None, "--from-traces", help="A stack whose stored, unrefused runs become examples."
    ),
    feedback: str | None = typer.Option(
        None,
        "--feedback",
        help="With --from-traces: only traces rated so, comma-separated: positive, corrected, "
        "reviewed, negative, any (corrections replace the model's answer; a trace rated bad "
        "without a correction is never used).",
    ),
    stack: str | None = typer.Option(
        None, "--stack", "-s", help="With --from-dataset: the stack whose prompt is rendered."
    ),
    node: str | None = typer.Option(
        None, "--node", help="The model step trained (default: the stack's answering step)."
    ),
    grounded_only: bool = typer.Option(
        False,
        "--grounded-only",
        help="With --from-dataset: only cases whose reference is in "
        "the passages the stack retrieves.",
    ),
    split: float = typer.Option(0.8, "--split", help="Share of examples in the training split."),
    message: str = typer.Option("", "--message", "-m", help="Version message."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Store a version of fine-tuning examples, split by example id into train and held-out."""
    import asyncio

    from slmops.apps.build import build_stack
    from slmops.core.runtime import Runtime, use_runtime
    from slmops.core.tracing import Tracer
    from slmops.monitor.feedback import parse_kinds
    from slmops.monitor.trace_data import training_choice
    from slmops.train.datasets import TrainDatasets, read_examples
    from slmops.train.sources import BuiltExamples, examples_from_eval_dataset, examples_from_traces

    sources = [s for s in (file, from_dataset, from_traces) if s is not None]
    if len(sources) != 1:
        raise typer.BadParameter("give exactly one of --file, --from-dataset, --from-traces")
    with open_workspace(workspace) as ws:
        built: BuiltExamples
        if file is not None:
            built, source = BuiltExamples(read_examples(file), lineage={"file": str(file)}), "file"
        elif from_dataset is not None:
            if stack is None:
                raise typer.BadParameter("--from-dataset needs --stack: whose prompt to train on")
            built_stack = build_stack(stack, ws)
            # the steps before the model run for real, but are not stored as traces: they
            # are no answers anyone got (and would become examples of --from-traces)
            rendering = Runtime(tracer=Tracer(), workspace=ws)
            with _bar("Rendering") as bar, use_runtime(rendering):
                task = bar.add_task("rendering", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                built = asyncio.run(
                    examples_from_eval_dataset(
                        ws,
                        from_dataset,
                        built_stack,
                        node=node,
                        grounded_only=grounded_only,
                        on_progress=progress,
                    )
                )
            source = "dataset"
        else:
            assert from_traces is not None
            keep: set[str] | None = None
            replies: dict[str, str] = {}
            if feedback is not None:
                keep, replies = training_choice(ws.engine, from_traces, parse_kinds(feedback))
            built = examples_from_traces(
                ws,
                from_traces,
                node=node,
                keep=None if keep is None else lambda trace, _spans: trace["trace_id"] in keep,
                replies=replies,
            )
            if feedback is not None:
                built.lineage.update(feedback=feedback, corrected=len(replies))
            source = "traces"
        version, created = TrainDatasets(ws).add(
            name,
            built.examples,
            split=split,
            message=message,
            source=source,  # type: ignore[arg-type]
            lineage=built.lineage,
        )
    for reason, count in built.skipped.items():
        console.print(f"[yellow]left out[/] {count}: {escape(reason)}")
    verb = "committed" if created else "unchanged, already"
    console.print(
        f"{version.ref} {verb}: {version.examples} {version.format} examples "
        f"({version.train} train, {version.heldout} held out)"
    )


@app.command("datasets")
def datasets_command(workspace: Path | None = WorkspaceOption) -> None:
    """Training datasets with their versions."""
    from slmops.train.datasets import TrainDatasets

    with open_workspace(workspace) as ws:
        datasets = TrainDatasets(ws)
        versions = [v for name in datasets.names() for v in datasets.log(name)]
    if not versions:
        console.print("No training datasets yet. Make one with: slmops train data NAME --file F")
        return
    table = Table("dataset", "format", "examples", "train", "held out", "source", "created")
    for v in versions:
        table.add_row(
            v.ref,
            v.format,
            str(v.examples),
            str(v.train),
            str(v.heldout),
            v.source,
            when(v.created_at),
        )
    console.print(table)


@app.command("examples")
def examples_command(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@latest."),
    limit: int = typer.Option(5, "--limit", "-n", help="Examples to show."),
    as_json: bool = typer.Option(False, "--json", help="Print them as JSONL."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """The examples of a training dataset version, as the model will see them."""
    from slmops.train.datasets import TrainDatasets

    with open_workspace(workspace) as ws:
        version, examples = TrainDatasets(ws).examples(ref)
    if as_json:
        for example in examples[:limit]:
            print(example.model_dump_json(exclude_none=True))
        return
    lineage = ", ".join(f"{k}={v}" for k, v in version.lineage.items()) or "-"
    console.print(
        f"[bold]{version.ref}[/]: {version.examples} {version.format} examples "
        f"({version.train} train, {version.heldout} held out), from {version.source}: "
        f"{escape(lineage)}"
    )
    for example in examples[:limit]:
        console.rule(f"{example.id} ({example.split})", style="dim")
        if example.messages is not None:
            for message in example.messages:
                style = "green" if message.role == "assistant" else "dim"
                console.print(f"[{style}]{message.role}:[/] {escape(message.content)}")
        else:
            console.print(f"[dim]prompt:[/] {escape(example.prompt or '')}")
            console.print(f"[green]completion:[/] {escape(example.completion or '')}")
    if len(examples) > limit:
        console.print(f"... {len(examples) - limit} more (--limit)")


def _bar(label: str) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"{label:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class _RichProgress:
    """Training progress as a Rich bar: step, loss, tokens/s and time left."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: TaskID | None = None

    def status(self, text: str) -> None:
        console.print(f"[dim]{escape(text)}...[/]")

    def begin(self, run_id: str, total_steps: int, done_steps: int) -> None:
        console.print(f"Run [bold]{run_id}[/]: {total_steps} optimizer steps")
        self.bar.start()
        self.task = self.bar.add_task(
            "training", total=total_steps, completed=done_steps, loss="-", speed="-"
        )

    def step(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                completed=state.step,
                loss=f"{metrics['train_loss']:.3f}",
                speed=f"{metrics['tokens_per_s']:.0f}",
            )

    def epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        if "heldout_loss" in metrics:
            self.bar.console.print(
                f"epoch {state.epoch + 1}: held-out loss {metrics['heldout_loss']:.4f}"
            )

    def stop(self) -> None:
        self.bar.stop()


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM): finish the current step, write a checkpoint, stop. A second
    Ctrl-C stops at once (the last checkpoint still holds)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()
        console.print("[yellow]Stopping after this step (Ctrl-C again to stop now)...[/]")

    def __enter__(self) -> _StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@app.command("run")
def run_command(
    base: str = typer.Option("local:smollm2-135m", "--base", "-b", help="Base model URI."),
    data: str | None = typer.Option(None, "--data", "-d", help="Training dataset (NAME@N)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Experiment (default: data name)."),
    resume: str | None = typer.Option(None, "--resume", help="Continue this run (id or prefix)."),
    method: str = typer.Option("lora", "--method", help=_HELP["method"]),
    epochs: int = typer.Option(2, "--epochs", help=_HELP["epochs"]),
    learning_rate: float = typer.Option(2e-4, "--lr", help=_HELP["learning_rate"]),
    micro_batch_size: int = typer.Option(4, "--batch-size", help=_HELP["micro_batch_size"]),
    grad_accumulation: int = typer.Option(
        2, "--grad-accumulation", help=_HELP["grad_accumulation"]
    ),
    max_seq_tokens: int = typer.Option(1024, "--max-seq-tokens", help=_HELP["max_seq_tokens"]),
    lora_r: int = typer.Option(16, "--lora-r", help=_HELP["r"]),
    lora_alpha: int = typer.Option(32, "--lora-alpha", help=_HELP["alpha"]),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help=_HELP["dropout"]),
    seed: int = typer.Option(0, "--seed", help=_HELP["seed"]),
    checkpoint_every: int = typer.Option(20, "--checkpoint-every", help=_HELP["checkpoint_every"]),
    patience: int | None = typer.Option(2, "--patience", help=_HELP["early_stop_patience"]),
    precision: str = typer.Option("auto", "--precision", help=_HELP["precision"]),
    threads: int | None = typer.Option(None, "--threads", help=_HELP["threads"]),
    max_steps: int | None = typer.Option(None, "--max-steps", help=_HELP["max_steps"]),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Fine-tune a base model on a training dataset (LoRA by default), tracked in MLflow.
    Ctrl-C stops after the current step with a checkpoint; --resume continues it."""
    from slmops.train.args import check_args
    from slmops.train.runs import Training

    progress = _RichProgress()
    with open_workspace(workspace) as ws, _StopOnSignal() as stop:
        training = Training(ws)
        try:
            if resume is not None:
                outcome = training.resume(
                    resume, progress=progress, should_stop=stop.requested.is_set
                )
            else:
                if data is None:
                    raise typer.BadParameter("give --data NAME@VERSION (or --resume RUN)")
                args = check_args(
                    {
                        "method": method,
                        "epochs": epochs,
                        "learning_rate": learning_rate,
                        "micro_batch_size": micro_batch_size,
                        "grad_accumulation": grad_accumulation,
                        "max_seq_tokens": max_seq_tokens,
                        "seed": seed,
                        "checkpoint_every": checkpoint_every,
                        "early_stop_patience": patience,
                        "precision": precision,
                        "threads": threads,
                        "max_steps": max_steps,
                        "lora": {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout},
                    }
                )
                outcome = training.start(
                    base=base,
                    data=data,
                    args=args,
                    name=name,
                    progress=progress,
                    should_stop=stop.requested.is_set,
                )
        finally:
            progress.stop()
    short = outcome.run_id[:12]
    if outcome.status == "interrupted":
        console.print(
            f"[yellow]Stopped[/] at step {outcome.state.step} with a checkpoint. "
            f"Continue with: slmops train run --resume {short}"
        )
        return
    figures = outcome.metrics
    heldout = figures.get("best_heldout_loss")
    console.print(
        f"[green]Run {outcome.run_id} finished[/] ({outcome.state.stop_reason}): "
        f"{outcome.state.step} steps, final loss {figures.get('final_train_loss', 0):.4f}"
        + (f", best held-out loss {heldout:.4f}" if heldout is not None else "")
    )
    console.print(f"Result: {outcome.output}")
    console.print(f"Export it: slmops train export {short} --format gguf-q8_0")


@app.command("runs")
def runs_command(
    limit: int = typer.Option(20, "--limit", "-n", help="Runs to show."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Training runs, newest first (read from the MLflow tracking store)."""
    from slmops.train.runs import Training, state_of

    with open_workspace(workspace) as ws:
        training = Training(ws)
        runs = training.runs(limit)
        steps = {run.run_id: training.tracker.history(run.run_id, "train_loss") for run in runs}
    if not runs:
        console.print("No training runs yet. Start one with: slmops train run --data NAME@1")
        return
    table = Table(
        "run",
        "experiment",
        "base",
        "data",
        "state",
        "steps",
        "final loss",
        "held-out",
        "tok/s",
        "last eval",
    )
    for run in runs:
        metrics = run.metrics
        table.add_row(
            run.run_id[:12],
            run.experiment,
            run.params.get("base", ""),
            run.params.get("data", ""),
            state_of(run),
            str(steps[run.run_id][-1][0]) if steps[run.run_id] else "0",
            _figure(metrics.get("final_train_loss", metrics.get("train_loss"))),
            _figure(metrics.get("best_heldout_loss", metrics.get("heldout_loss"))),
            _figure(metrics.get("train_tokens_per_s"), "{:.0f}"),
            escape(run.tags.get("slmops.eval.last", "")),
        )
    console.print(table)


def _figure(value: float | None, pattern: str = "{:.4f}") -> str:
    return "" if value is None else pattern.format(value)


@app.command("show")
def show_command(
    run_id: str = typer.Argument(..., help="Run id or a 6+ character prefix."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the loss curve (SVG)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """One run: parameters, lineage, figures, loss curve, checkpoints and artifacts."""
    from slmops.train.runs import Training, read_run_file, run_dir, state_of

    with open_workspace(workspace) as ws:
        training = Training(ws)
        run = training.run(run_id)
        history = training.tracker.history(run.run_id, "train_loss")
        heldout = training.tracker.history(run.run_id, "heldout_loss")
        artifacts = training.tracker.artifacts(run.run_id)
        folder = run_dir(ws, run.run_id)
        checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("step-*"))
        if plot is not None:
            training.write_plot(run.run_id, plot)
        spec = read_run_file(ws, run.run_id) if (folder / "run.json").is_file() else {}
    console.print(
        f"[bold]Run {run.run_id}[/] ({run.experiment}) {state_of(run)}, {when(run.started_at)}"
    )
    lineage = spec.get("dataset", {}).get("lineage", {})
    rows = [
        ("base", f"{run.params.get('base')} ({run.params.get('base_digest', '')[:19]})"),
        ("data", f"{run.params.get('data')} (sha256 {run.params.get('data_sha256', '')[:12]})"),
        ("lineage", ", ".join(f"{k}={v}" for k, v in lineage.items()) or "-"),
        (
            "method",
            f"{run.params.get('method')} r={run.params.get('lora.r')} "
            f"alpha={run.params.get('lora.alpha')}",
        ),
        (
            "schedule",
            f"{run.params.get('epochs')} epochs, lr {run.params.get('learning_rate')}, "
            f"batch {run.params.get('micro_batch_size')}x"
            f"{run.params.get('grad_accumulation')}, seed {run.params.get('seed')}",
        ),
        (
            "examples",
            f"{run.params.get('train_examples')} train, "
            f"{run.params.get('heldout_examples')} held out, "
            f"{run.params.get('left_out_examples')} left out",
        ),
        ("code", str(spec.get("code", "-"))),
    ]
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(f"[dim]{key}[/]", escape(str(value)))
    console.print(table)
    figures = Table("figure", "value")
    for metric, figure in sorted(run.metrics.items()):
        figures.add_row(metric, f"{figure:.4f}" if abs(figure) < 1e4 else f"{figure:.0f}")
    console.print(figures)
    if history:
        console.print("loss: " + _sparkline([v for _, v in history]))
    for epoch, (step, loss) in enumerate(heldout, start=1):
        console.print(f"held-out loss after epoch {epoch} (step {step}): {loss:.4f}")
    console.print(f"checkpoints: {', '.join(checkpoints) or 'none'} in {folder / 'checkpoints'}")
    console.print(f"artifacts ({run.artifact_uri}): {', '.join(artifacts) or 'none'}")
    if plot is not None:
        console.print(f"Loss curve written to {plot}")


def _sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    step = max(1, len(values) // 60)
    sampled = values[::step]
    span = (high - low) or 1.0
    line = "".join(bars[min(7, int((v - low) / span * 7.999))] for v in sampled)
    return f"{values[0]:.3f} {line} {values[-1]:.3f}"


@app.command("export")
def export_command(
    run_id: str = typer.Argument(..., help="Run id or a 6+ character prefix."),
    fmt: str = typer.Option("gguf-q8_0", "--format", help=f"One of: {', '.join(FORMATS)}."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write it."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Export a finished run: a GGUF model llama.cpp runs (f16 or quantized), the LoRA
    adapter as a llama.cpp adapter GGUF, or a merged transformers checkpoint (hf)."""
    from slmops.train.export import RunExporter
    from slmops.train.runs import Training

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    with open_workspace(workspace) as ws:
        training = Training(ws)
        run = training.run(run_id)
        with console.status(f"Exporting {run.run_id[:12]} as {fmt}..."):
            result = RunExporter(ws, run.run_id).export(fmt, output)
        # one tag per exported file (a second export of one format goes elsewhere)
        key = f"slmops.export.{fmt}.{hashlib.sha256(str(result.path).encode()).hexdigest()[:8]}"
        training.tracker.set_tags(
            run.run_id, {key: str(result.path), f"{key}.sha256": result.sha256}
        )
    console.print(
        f"[green]{fmt}[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, "
        f"sha256 {result.sha256[:12]})"
    )
    console.print(f"Use it as: {result.model_uri}")
