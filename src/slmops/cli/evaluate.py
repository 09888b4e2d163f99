"""``slmops eval ...``: evaluation datasets (and, as they land, runs, gates and reports)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

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
from slmops.cli.data import ingest_with_progress
from slmops.cli.stacks import ModelOption, model_overrides
from slmops.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress

    from slmops.eval.datasets import EvalCase
    from slmops.eval.generated import GeneratedDataset
    from slmops.eval.runner import EvalRun

app = typer.Typer(help="Evaluate stacks: test sets, metrics, gates, reports.", no_args_is_help=True)
dataset_app = typer.Typer(help="Versioned evaluation datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("add")
def dataset_add_command(
    name: str = typer.Argument(..., help="Dataset name."),
    file: Path = typer.Argument(..., help="JSONL file: one case per line."),
    message: str = typer.Option("", "--message", "-m", help="Version message."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Store the cases of a JSONL file as a new dataset version."""
    from slmops.eval.datasets import Datasets, read_cases

    cases = read_cases(file)
    with open_workspace(workspace) as ws:
        version, created = Datasets(ws).add(name, cases, message=message)
    verb = "committed" if created else "unchanged, already"
    console.print(f"{version.ref} {verb}: {version.cases} cases")


@dataset_app.command("from-traces")
def dataset_from_traces_command(
    stack: str = typer.Argument(..., help="The stack whose rated traces become cases."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name to version."),
    feedback: str = typer.Option(
        "negative",
        "--feedback",
        help="Which rated traces, comma-separated: negative, positive, corrected, reviewed, any.",
    ),
    with_corrections: bool = typer.Option(
        False, "--with-corrections", help="Only traces someone corrected (the reference)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many cases."),
    message: str = typer.Option("", "--message", "-m", help="Version message."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Store rated production traces as a dataset version: input, the correction (or an
    answer rated good) as reference, labels as tags, trace and retrieved chunks kept."""
    from slmops.eval.datasets import Datasets
    from slmops.monitor.feedback import parse_kinds
    from slmops.monitor.trace_data import cases_from_traces

    kinds = parse_kinds(feedback)
    with open_workspace(workspace) as ws:
        cases, chosen = cases_from_traces(
            ws.engine, stack, kinds, with_corrections=with_corrections, limit=limit
        )
        note = message or f"{len(cases)} {'/'.join(kinds)} traces of {stack}"
        version, created = Datasets(ws).add(dataset, cases, message=note, source="feedback")
    for reason, count in chosen.skipped.items():
        console.print(f"[yellow]left out[/] {count}: {escape(reason)}")
    with_reference = sum(case.reference is not None for case in cases)
    verb = "committed" if created else "unchanged, already"
    console.print(
        f"{version.ref} {verb}: {version.cases} cases ({with_reference} with a reference)"
    )


@dataset_app.command("list")
def dataset_list_command(workspace: Path | None = WorkspaceOption) -> None:
    """Datasets with their latest version."""
    from slmops.eval.datasets import Datasets

    with open_workspace(workspace) as ws:
        datasets = Datasets(ws)
        latest = [datasets.log(name)[0] for name in datasets.names()]
    if not latest:
        console.print("No datasets yet. Add one with: slmops eval dataset add NAME FILE.jsonl")
        return
    table = Table("dataset", "latest", "cases", "source", "created", "message")
    for v in latest:
        table.add_row(v.name, str(v.version), str(v.cases), v.source, when(v.created_at), v.message)
    console.print(table)


@dataset_app.command("log")
def dataset_log_command(
    name: str = typer.Argument(..., help="Dataset name."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """A dataset's versions, newest first."""
    from slmops.eval.datasets import Datasets

    with open_workspace(workspace) as ws:
        versions = Datasets(ws).log(name)
    table = Table("version", "cases", "source", "created", "sha256", "message")
    for v in versions:
        table.add_row(
            str(v.version), str(v.cases), v.source, when(v.created_at), v.sha256[:12], v.message
        )
    console.print(table)


@dataset_app.command("show")
def dataset_show_command(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@latest."),
    limit: int = typer.Option(20, "--limit", "-n", help="Cases to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the cases as JSONL."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """The cases of a dataset version."""
    from slmops.eval.datasets import Datasets

    with open_workspace(workspace) as ws:
        version, cases = Datasets(ws).cases(ref)
    if as_json:
        for case in cases[:limit]:
            print(case.model_dump_json())
        return
    console.print(
        f"[bold]{version.ref}[/]: {version.cases} cases ({version.source}) {version.message}"
    )
    table = Table("id", "input", "reference", "sources", "flags")
    for case in cases[:limit]:
        flags = [
            f
            for f, on in (("unanswerable", not case.answerable), ("adversarial", case.adversarial))
            if on
        ]
        table.add_row(
            case.id,
            escape(case.question()[:80]),
            escape((case.reference or "")[:60]),
            ", ".join(case.reference_ids)[:40],
            ", ".join(flags + ([case.category] if case.category else []) + case.tags),
        )
    console.print(table)
    if len(cases) > limit:
        console.print(f"... {len(cases) - limit} more (--limit)")


def print_new_stack(made: GeneratedDataset) -> None:
    if made.new_stack is not None:
        where = made.new_stack.path.parent.parent
        console.print(f"Created stack [bold]{made.new_stack.name}[/] in {where}")


@app.command("synth")
def synth_command(
    corpus: str = typer.Argument(..., help="Corpus to write test cases from."),
    n: int = typer.Option(20, "--n", help="Passages to sample (one case each)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset (CORPUS-synth)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Write question/answer/context cases from a corpus with the synth stack and store them
    as a dataset version (the stack is created in the workspace the first time)."""
    from slmops.eval.generated import synthesize

    if n < 1:
        raise typer.BadParameter("--n must be at least 1")
    with (
        open_workspace(workspace) as ws,
        console.status(f"Writing {n} test cases from {corpus}..."),
    ):
        made = synthesize(ws, corpus, n=n, dataset=dataset)
    print_new_stack(made)
    version = made.version
    console.print(f"{version.ref} {'committed' if made.created else 'unchanged'}: {made.summary}")
    console.print(f"Trace id: {made.trace_id}   See them: slmops eval dataset show {version.ref}")


@app.command("import-squad")
def import_squad_command(
    file: Path = typer.Argument(..., help="A SQuAD v1.1 or v2.0 JSON file."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus for its paragraphs."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset for its questions."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="First N questions."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Import a SQuAD-format set: its paragraphs become a corpus version (the corpus holds
    exactly them; the file is kept in WORKSPACE/imports/CORPUS), its questions a dataset
    version scored against their paragraph."""
    from slmops.eval.datasets import Datasets
    from slmops.eval.squad import read_squad
    from slmops.store.names import name_problem

    for kind, value in (("corpus", corpus), ("dataset", dataset)):
        problem = name_problem(kind, value)  # before the paragraphs are written under it
        if problem:
            raise ConfigError(problem)
    with open_workspace(workspace) as ws:
        documents_file = f"{corpus}.jsonl"
        squad = read_squad(file, documents_file=documents_file, limit=limit)
        # Kept in the workspace at a fixed place: a re-import of the same file changes nothing.
        folder = ws.home / "imports" / corpus
        try:
            folder.mkdir(parents=True, exist_ok=True)
            squad.write_documents(folder / documents_file)
        except OSError as exc:
            raise ConfigError(f"cannot write the paragraphs into {folder}: {exc}") from None
        ingest_with_progress(  # the corpus holds exactly the file's paragraphs, as documented
            ws,
            corpus,
            [folder / documents_file],
            message=f"paragraphs of {file.name}",
            allow_removals=True,
        )
        version, created = Datasets(ws).add(
            dataset, squad.cases, message=f"questions of {file.name}", source="squad"
        )
    unanswerable = sum(not case.answerable for case in squad.cases)
    console.print(
        f"{version.ref} {'committed' if created else 'unchanged'}: {version.cases} questions "
        f"({unanswerable} unanswerable) on {len(squad.documents)} paragraphs"
    )
    console.print(
        f"Next: slmops init {corpus}-rag --template rag --corpus {corpus}   then   "
        f"slmops eval run {corpus}-rag -d {version.ref}"
    )


def _metrics_table(summary: dict[str, Any]) -> Table:
    table = Table("figure", "value", "cases")
    for key, metric in summary["metrics"].items():
        value = "n/a" if metric["mean"] is None else f"{metric['mean']:.3f}"
        table.add_row(key, value, str(metric["cases"]))
    for key in ("p50_latency_ms", "p95_latency_ms", "mean_prompt_tokens", "mean_completion_tokens"):
        if summary.get(key) is not None:
            table.add_row(key, f"{summary[key]:.1f}", "")
    table.add_row("errors", f"{summary['errors']} of {summary['cases']}", "")
    for category, rate in summary.get("attack_success_by_category", {}).items():
        table.add_row(escape(f"attack_success[{category}]"), f"{rate:.3f}", "")
    for owasp, rate in summary.get("attack_success_by_owasp", {}).items():  # OWASP LLM 2025
        table.add_row(escape(f"attack_success[{owasp}]"), f"{rate:.3f}", "")
    return table


def print_summary(summary: dict[str, Any]) -> None:
    """A run's figures, and per tag when its cases carry several tags."""
    console.print(_metrics_table(summary))
    if summary.get("by_tag"):
        console.print(_tags_table(summary["by_tag"]))


def _tags_table(by_tag: dict[str, dict[str, Any]]) -> Table:
    """Each metric's mean per tag (the cases with that tag), with the case count."""
    table = Table("metric", *(escape(tag) for tag in by_tag), title="By tag")
    metrics = next(iter(by_tag.values()))
    for key in metrics:
        cells = [by_tag[tag][key] for tag in by_tag]
        if all(cell["mean"] is None for cell in cells):
            continue
        table.add_row(
            key,
            *("n/a" if c["mean"] is None else f"{c['mean']:.3f} ({c['cases']})" for c in cells),
        )
    return table


def cases_progress() -> Progress:
    """The progress bar of a command that runs a stack over a dataset's cases."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@app.command("run")
def run_command(
    stack: str | None = typer.Argument(None, help="Stack name or folder (not with --resume)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="NAME or NAME@VERSION."),
    metrics: str | None = typer.Option(None, help="Comma-separated metric names (default all)."),
    concurrency: int = typer.Option(
        1,
        help="Cases at once (a local model serves one at a time: latency then includes waiting).",
    ),
    gate: list[str] = typer.Option([], "--gate", "-g", help='e.g. "faithfulness>=0.7".'),
    resume: str | None = typer.Option(None, help="Finish an interrupted run (its id)."),
    judge: str | None = typer.Option(
        None, help="A judge stack (slmops init NAME --template judge): adds the judge metric."
    ),
    no_lock: bool = typer.Option(False, "--no-lock", help="Ignore the stack's slmops.lock."),
    model: list[str] = ModelOption,
    executor: str = ExecutorOption,
    address: str | None = AddressOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Run a stack over a dataset, score every case, record the run; exit 1 if a gate fails.
    With --executor ray the cases run on actors across a Ray cluster (not with --judge)."""
    import asyncio

    from slmops.apps.build import build_stack
    from slmops.core.runtime import Runtime
    from slmops.eval.datasets import Datasets
    from slmops.eval.gates import check_gates, check_names, parse_gate
    from slmops.eval.metrics import JudgeScore
    from slmops.eval.runner import EvalRun, build_metrics, load_run, pin_aliases

    check_executor(executor)
    if executor == "ray" and judge:
        raise typer.BadParameter("a judge stack runs locally only", param_hint="--executor")
    gates = [parse_gate(g) for g in gate]
    with open_workspace(workspace) as ws:
        if resume:
            record = load_run(ws, resume)
            stack_ref, dataset_ref = record["stack"], record["dataset"]
            metric_names: list[str] | None = [
                key.split("@")[0] for key in record["config"]["metrics"] if key != "judge"
            ]
            judge = record["config"].get("judge")
            overrides = record["config"].get("models") or {}
        else:
            if stack is None or dataset is None:
                raise ConfigError("give STACK and --dataset (or --resume RUN_ID)")
            stack_ref, dataset_ref = stack, dataset
            metric_names = [m.strip() for m in metrics.split(",")] if metrics else None
            overrides = model_overrides(model)
        built = build_stack(stack_ref, ws, use_lock=not no_lock, models=overrides)
        pinned = pin_aliases(ws, built.resolved.models)
        if pinned and not resume:  # one version for the whole run, recorded as it is
            overrides = {**(overrides or {}), **pinned}
            built = build_stack(stack_ref, ws, use_lock=not no_lock, models=overrides)
        with console.status("Preparing the metrics..."):
            chosen = build_metrics(metric_names, ws.settings.embedder)
            if judge:
                chosen.append(JudgeScore(build_stack(judge, ws, use_lock=not no_lock)))
        check_names(gates, [metric.key for metric in chosen])
        runner = EvalRun(ws, built, chosen)
        run_id = (
            record["id"]
            if resume
            else runner.start(dataset_ref, concurrency, judge=judge, models=overrides)
        )
        _, cases = Datasets(ws).cases(dataset_ref)
        bar = cases_progress()
        task = bar.add_task(f"eval {built.stack_name} on {dataset_ref}", total=len(cases))
        try:
            with bar:
                if executor == "ray":
                    summary = _execute_on_ray(
                        ws,
                        runner,
                        run_id,
                        cases,
                        overrides,
                        metric_names,
                        address,
                        lambda done, total: bar.update(task, completed=done),
                    )
                else:
                    summary = asyncio.run(
                        runner.execute(
                            run_id,
                            cases,
                            Runtime.from_workspace(ws),
                            concurrency=concurrency,
                            on_progress=lambda done, total: bar.update(task, completed=done),
                        )
                    )
        except KeyboardInterrupt:
            error_console.print(
                f"[yellow]interrupted:[/] run {run_id[:12]} kept its finished cases; "
                f"resume with: slmops eval run --resume {run_id[:12]}"
            )
            raise typer.Exit(130) from None
        recorded = _record_on_models(ws, built.resolved.summary()["models"], run_id, summary)
    console.print(f"[bold]Eval run {run_id[:12]}[/]: {built.stack_name} on {dataset_ref}")
    print_summary(summary)
    for note in recorded:
        console.print(note)
    failed = False
    for result in check_gates(gates, summary):
        if result.passed:
            console.print(f"[green]{escape(result.describe())}[/]")
        else:
            failed = True
            error_console.print(f"[red]{escape(result.describe())}[/]")
    if failed:
        raise typer.Exit(1)


def _execute_on_ray(
    ws: Any,
    runner: EvalRun,
    run_id: str,
    cases: list[EvalCase],
    models: dict[str, str] | None,
    metrics: list[str] | None,
    address: str | None,
    on_progress: Any,
) -> dict[str, Any]:
    """The run's unfinished cases on Ray actors (each records its cases as it goes); then the
    summary, here."""
    from slmops.pipelines.ray_executor import run_eval_cases

    runner.claim(run_id)  # this process drives the run: a kill of it shows as crashed
    done = runner.done_case_ids(run_id)
    pending = [case for case in cases if case.id not in done]
    on_progress(len(done), len(cases))
    run_eval_cases(
        home=str(ws.home),
        stack=str(runner.stack.manifest.path),  # workers look it up by path, not by name
        models=models or {},
        metrics=metrics,
        run_id=run_id,
        cases=pending,
        address=address,
        on_progress=lambda finished, _total: on_progress(len(done) + finished, len(cases)),
    )
    return runner.finish(run_id)


def _record_on_models(
    ws: Any, models: dict[str, str], run_id: str, summary: dict[str, Any]
) -> list[str]:
    """An eval of a registry version is tagged on the version (and its training run); an
    eval of a fine-tuned export lands on its training run. Returns what was recorded where."""
    from slmops.eval.runner import load_run

    local = [
        uri for uri in models.values() if uri.startswith(("gguf:", "hf:")) or "+adapter:" in uri
    ]
    registered = [uri for uri in models.values() if uri.startswith("registry:")]
    from slmops.core.runtime import resolving_in
    from slmops.registry.store import ModelRegistry
    from slmops.train.runs import Training
    from slmops.train.tracking import TrackingError, tracking_uri

    store = tracking_uri(ws)
    if not (local or registered) or (
        store.startswith("sqlite:///") and not Path(store[10:]).exists()
    ):
        return []  # nothing trained or registered in this workspace
    notes = []
    try:
        dataset = load_run(ws, run_id)["dataset"]
        training = Training(ws)
        registry = ModelRegistry(ws, training.tracker)
        for uri in registered:
            with resolving_in(ws):
                version = registry.resolve(uri)
            registry.tag(version, {f"slmops.eval.{run_id[:12]}": dataset})
            notes.append(f"Recorded on model version {version.ref} (slmops model show)")
            if version.run_id:
                training.log_eval(version.run_id, run_id, dataset, summary)
                notes.append(f"Recorded on training run {version.run_id[:12]}")
        for training_run in training.record_eval(local, run_id, dataset, summary):
            notes.append(f"Recorded on training run {training_run[:12]} (slmops train runs)")
    except TrackingError:  # no tracking installed or reachable: the eval run stands alone
        return []
    except Exception as exc:  # the run and its gates stand whatever the tracking store says
        notes.append(f"[yellow]not recorded on the model or training run: {escape(str(exc))}[/]")
    return notes


@app.command("runs")
def runs_command(
    limit: int = typer.Option(20, "--limit", "-n"), workspace: Path | None = WorkspaceOption
) -> None:
    """Recent eval runs. A run whose process is gone (killed, out of memory, a power cut)
    shows as crashed; finish it with slmops eval run --resume RUN_ID."""
    from slmops.eval.runner import list_runs, run_state

    with open_workspace(workspace) as ws:
        runs = list_runs(ws, limit)
    if not runs:
        console.print("No eval runs yet. Start one with: slmops eval run STACK --dataset NAME")
        return
    table = Table("stack", "dataset", "status", "started", "cases", "errors")
    table.columns.insert(0, Column("run", no_wrap=True, min_width=12))
    stopped = []
    for run in runs:
        summary = run["summary"] or {}
        state = run_state(run)
        if state in _RESUMABLE:
            stopped.append(run["id"][:12])
        table.add_row(
            run["id"][:12],
            run["stack"],
            run["dataset"],
            _STATE_STYLES.get(state, "{}").format(state),
            when(run["started_at"]),
            str(summary.get("cases", "")),
            str(summary.get("errors", "")),
        )
    console.print(table)
    if stopped:
        console.print(f"Resume a stopped run with: slmops eval run --resume {stopped[0]}")


_RESUMABLE = ("crashed", "interrupted")
_STATE_STYLES = {"crashed": "[red]{}[/]", "interrupted": "[yellow]{}[/]"}


def stopped_note(run: dict[str, Any]) -> str | None:
    """What to say of a run that stopped before its end (crashed or interrupted), else None."""
    from slmops.eval.runner import run_state

    state = run_state(run)
    if state not in _RESUMABLE:
        return None
    why = "its process is gone" if state == "crashed" else "it was stopped"
    return (
        f"run {run['id'][:12]} is {state} ({why}): finish it with: "
        f"slmops eval run --resume {run['id'][:12]}"
    )


@app.command("compare")
def compare_command(
    run_a: str = typer.Argument(..., help="The baseline run (id or 6+ character prefix)."),
    run_b: str = typer.Argument(..., help="The candidate run."),
    flips: int = typer.Option(10, "--flips", help="Flipped cases to list."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Per-metric change from run A to run B with 95% bootstrap intervals, and the cases
    whose verdict flipped."""
    from slmops.eval.compare import compare_runs

    with open_workspace(workspace) as ws:
        result = compare_runs(ws, run_a, run_b)
    a, b = result.run_a, result.run_b
    console.print(
        f"A {a['id'][:12]} ({a['stack']} on {a['dataset']})  vs  "
        f"B {b['id'][:12]} ({b['stack']} on {b['dataset']}): {result.shared_cases} shared cases"
    )
    console.print(
        "Changed: " + escape("; ".join(result.changes))
        if result.changes
        else "Changed: no version (same stack, corpora, prompts and models)"
    )
    table = Table("metric", "A", "B", "B - A", "95% interval", "cases")
    for d in result.deltas:
        style = "" if not d.significant else ("green" if d.delta > 0 else "red")
        change = f"[{style}]{d.delta:+.3f}[/]" if style else f"{d.delta:+.3f}"
        table.add_row(
            d.metric,
            f"{d.a:.3f}",
            f"{d.b:.3f}",
            change,
            f"[{d.low:+.3f}, {d.high:+.3f}]",
            str(d.cases),
        )
    for key, (before, after) in result.latency.items():
        if before is not None and after is not None:
            table.add_row(key, f"{before:.0f}", f"{after:.0f}", f"{after - before:+.0f}", "", "")
    console.print(table)
    if result.flips:
        console.print(f"[bold]Flipped cases[/] ({len(result.flips)}; regressions first)")
        listing = Table("case", "metric", "A", "B", "question")
        for flip in result.flips[:flips]:
            listing.add_row(
                flip.case_id,
                flip.metric,
                f"{flip.a:.2f}",
                f"{flip.b:.2f}",
                escape(flip.question[:70]),
            )
        console.print(listing)
    else:
        console.print("No case flipped.")


@app.command("redteam")
def redteam_command(
    target: str = typer.Argument(..., help="The stack to attack (name or folder)."),
    n: int = typer.Option(2, "--n", help="Attacks per category."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset (TARGET-redteam)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Write adversarial cases (prompt injection, jailbreak, off-topic, PII extraction) aimed
    at a stack, with the redteam stack, and store them as a dataset version. Evaluate them with
    slmops eval run TARGET -d TARGET-redteam: attack_success is the share answered."""
    from slmops.eval.generated import write_attacks

    if n < 1:
        raise typer.BadParameter("--n must be at least 1")
    with open_workspace(workspace) as ws, console.status(f"Writing {n} attacks per category..."):
        made = write_attacks(ws, target, n=n, dataset=dataset)
    print_new_stack(made)
    version = made.version
    console.print(f"{version.ref} {'committed' if made.created else 'unchanged'}: {made.summary}")
    console.print(f"Run them: slmops eval run {target} --dataset {version.ref}")


@app.command("report")
def report_command(
    run: str = typer.Argument(..., help="Run id (or 6+ character prefix)."),
    html: Path | None = typer.Option(None, "--html", help="Where to write the HTML page."),
    compare: str | None = typer.Option(None, "--compare", help="A baseline run to compare with."),
    worst: int = typer.Option(10, help="Worst cases to show."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Print a run's metrics and write its self-contained HTML report (metrics, distributions,
    comparison, worst cases with their passages and trace ids)."""
    from slmops.eval.report import render_report
    from slmops.eval.runner import load_run

    with open_workspace(workspace) as ws:
        record = load_run(ws, run)
        page = render_report(ws, record["id"], compare_with=compare, worst=worst)
        target = html or ws.home / "reports" / f"eval-{record['id'][:12]}.html"
    note = stopped_note(record)
    if note:
        error_console.print(f"[yellow]{note}[/]")
    if record["summary"]:
        print_summary(record["summary"])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    console.print(f"Report: {target.resolve()}")


@app.command("calibrate")
def calibrate_command(
    stack: str = typer.Argument(..., help="Stack name or folder (with a cite step)."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="NAME[@VERSION]: answerable and unanswerable cases."
    ),
    check: str = typer.Option(
        "sentence",
        help="The threshold to sweep: sentence (min_score), support (min_support) or "
        "relevance (min_relevance).",
    ),
    thresholds: str | None = typer.Option(
        None, help="Comma-separated thresholds to try (default: spread over the scores seen)."
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Write the recommended threshold into the stack's manifest."
    ),
    model: list[str] = ModelOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Sweep a refusal threshold of the stack's cite step on a labelled dataset: answer
    quality against refusal correctness at each threshold, and the one to use."""
    import asyncio

    from slmops.apps.build import build_stack
    from slmops.core.runtime import Runtime, use_runtime
    from slmops.eval.calibrate import (
        apply_threshold,
        calibration,
        cite_node,
        collect,
        with_check_off,
    )
    from slmops.eval.datasets import Datasets

    grid = _threshold_list(thresholds)
    with open_workspace(workspace) as ws:
        built = build_stack(stack, ws, models=model_overrides(model))
        opened, current = with_check_off(built, check)
        _, cases = Datasets(ws).cases(dataset)
        if not any(not case.answerable for case in cases):
            console.print(
                "[yellow]note:[/] the dataset has no unanswerable case (answerable: false), so "
                "refusal correctness cannot favour refusing"
            )
        bar = cases_progress()
        task = bar.add_task(f"{built.stack_name} on {dataset}, {check} check off", total=len(cases))
        with bar, use_runtime(Runtime.from_workspace(ws)):
            collected = asyncio.run(
                collect(opened, check, cases, on_case=lambda: bar.advance(task))
            )
        result = calibration(check, current, collected, grid)
        table = Table(
            "threshold", "answered", "contains_answer", "token_f1", "refusal_correctness", "mean"
        )
        best = result.best
        for row in result.rows:
            style = "bold green" if row is best else None
            label = f"{row.threshold:g}" + (" (now)" if row.threshold == current else "")
            table.add_row(
                label,
                f"{row.answered:.0%}",
                *(
                    "n/a" if v is None else f"{v:.2f}"
                    for v in (row.contains_answer, row.token_f1, row.refusal_correctness)
                ),
                f"{row.balanced:.2f}",
                style=style,
            )
        console.print(table)
        failed = sum(c.error is not None for c in collected)
        if failed:
            error_console.print(f"[yellow]{failed} case(s) failed and were left out[/]")
        node = cite_node(built)
        console.print(
            f"Recommended: {result.option} = {best.threshold:g} on step {node!r} "
            f"(now {current:g}; mean of contains_answer and refusal_correctness "
            f"{best.balanced:.2f} vs {result.at_current.balanced:.2f})"
        )
        if apply:
            apply_threshold(built.manifest.path, node, result.option, best.threshold)
            console.print(f"Wrote {result.option} = {best.threshold:g} to {built.manifest.path}")


def _threshold_list(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--thresholds must be numbers separated by commas, not {text!r}"
        ) from None
