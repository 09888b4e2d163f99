"""``slmops monitor``: figures per window, drift, online scoring, alert rules, retention."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.common import WorkspaceOption, console, open_runtime, open_workspace, when
from slmops.errors import ConfigError

app = typer.Typer(
    help="Watch live traffic: quality, refusals, latency, drift, alerts.", no_args_is_help=True
)


def known_figures() -> list[str]:
    """Every figure an alert rule can watch (imports the monitor's figure modules)."""
    from slmops.monitor.figures import BASE_FIGURES
    from slmops.monitor.online import ONLINE_METRICS
    from slmops.monitor.shifts import DRIFT_FIGURES

    return [*BASE_FIGURES, *ONLINE_METRICS, "judge", *DRIFT_FIGURES]


_SPARK = "▁▂▃▄▅▆▇█"

_COLUMNS: list[tuple[str, str, str]] = [  # figure, header, format
    ("requests", "req", "{:.0f}"),
    ("error_rate", "errors", "{:.0%}"),
    ("refusal_rate", "refused", "{:.0%}"),
    ("p50_latency_ms", "p50 ms", "{:.0f}"),
    ("p95_latency_ms", "p95 ms", "{:.0f}"),
    ("mean_completion_tokens", "out tok", "{:.0f}"),
    ("low_relevance_share", "low rel", "{:.0%}"),
    ("faithfulness", "faithful", "{:.2f}"),
    ("citation_support", "support", "{:.2f}"),
    ("feedback_positive_rate", "👍 rate", "{:.0%}"),
    ("feedback_count", "rated", "{:.0f}"),
]


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def sparkline(values: list[float | None]) -> str:
    """One character per window, scaled between the smallest and largest value."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    return "".join(
        " " if v is None else _SPARK[int((v - low) / span * (len(_SPARK) - 1))] for v in values
    )


def _embedder(workspace: Any) -> Any:
    from slmops.models.loading import load_embedder

    return load_embedder(workspace.settings.embedder).embed


@app.command("show")
def show_command(
    stack: str = typer.Argument(..., help="The stack (as its traces name it)."),
    window: str = typer.Option("1h", "--window", help="Window length: 15m, 1h, 1d..."),
    last: str = typer.Option("24h", "--last", help="How far back to show."),
    drift: bool = typer.Option(True, "--drift/--no-drift", help="Compare the newest window."),
    baseline: str = typer.Option(
        "previous",
        "--baseline",
        help="Drift baseline: previous (the window before), corpus (query embeddings vs the "
        "corpus' chunks), or a duration (the same window that long ago, e.g. 7d).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Figures per window (traffic, errors, refusals, latency, tokens, relevance, online
    scores, feedback) with a sparkline per figure, and drift of the newest window."""
    from slmops.monitor.alerts import parse_duration
    from slmops.monitor.figures import window_figures, windows

    step, span = parse_duration(window), parse_duration(last)
    if step <= 0:
        raise ConfigError(f"--window {window} must be longer than 0s")
    if span < step:
        raise ConfigError(f"--last {last} is shorter than one --window {window}")
    if span / step > 500:
        raise ConfigError(f"--last {last} / --window {window} is over 500 windows; widen one")
    now = time.time()
    with open_workspace(workspace) as ws:
        bounds = windows(now - span, now, step)
        rows = [window_figures(ws.engine, stack, start, end) for start, end in bounds]
        if not any(r["requests"] for r in rows):
            console.print(f"No traces of {stack!r} in the last {last}.")
            return
        table = Table("window", *[header for _, header, _ in _COLUMNS], title=f"{stack}")
        for (start, _end), figures in zip(bounds, rows, strict=True):
            if not figures["requests"] and not figures["feedback_count"]:
                continue
            table.add_row(
                when(start)[5:16], *[_cell(figures.get(f), fmt) for f, _, fmt in _COLUMNS]
            )
        table.add_section()
        table.add_row(
            "trend", *[sparkline([r.get(f) for r in rows]) for f, _, _ in _COLUMNS], style="cyan"
        )
        console.print(table)
        if drift:
            _print_drift(ws, stack, bounds[-1], baseline)


def _print_drift(ws: Any, stack: str, current: tuple[float, float], baseline: str) -> None:
    from slmops.monitor.alerts import parse_duration
    from slmops.monitor.shifts import drift_report

    start, end = current
    against_corpus = baseline == "corpus"
    if baseline in ("previous", "corpus"):
        before: tuple[float, float] = (2 * start - end, start)
    else:
        ago = parse_duration(baseline)
        before = (start - ago, end - ago)
    report = drift_report(
        ws, stack, current, before, embed=_embedder(ws), against_corpus=against_corpus
    )
    table = Table(
        "measure",
        "baseline",
        "current",
        "distance",
        "threshold",
        "p",
        "",
        title=f"drift: {when(start)[5:16]} window vs {baseline}",
    )
    for shift in report.shifts:
        table.add_row(
            shift.measure,
            _cell(shift.baseline, "{:.3g}"),
            _cell(shift.current, "{:.3g}"),
            f"{shift.statistic:.3g}",
            f"{shift.threshold:g}",
            _cell(shift.p_value, "{:.3f}"),
            "[red]DRIFT[/]" if shift.drifted else "[green]ok[/]",
        )
    for measure, reason in report.skipped.items():
        table.add_row(measure, "", "", "", "", "", f"[dim]skipped: {escape(reason)}[/]")
    console.print(table)


@app.command("score")
def score_command(
    stack: str = typer.Argument(..., help="The stack whose stored traces are scored."),
    since: str | None = typer.Option(None, "--since", help="Only traces of the last 24h, 7d..."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many."),
    rescore: bool = typer.Option(False, "--rescore", help="Score traces scored before, again."),
    judge: str | None = typer.Option(
        None, "--judge", help="Also grade answers with this judge stack (a model call each)."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Score stored traces with the online metrics (the server scores a share of live ones
    itself): a backfill, or a judge that must not share the serving model."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from slmops.apps.build import build_stack
    from slmops.core.runtime import use_runtime
    from slmops.monitor.alerts import parse_duration
    from slmops.monitor.online import score_traces

    start = time.time() - parse_duration(since) if since else None
    runtime = open_runtime(workspace)
    ws = runtime.workspace
    assert ws is not None
    judge_stack = build_stack(judge, ws) if judge else None
    with (
        use_runtime(runtime),
        Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), console=console) as bar,
    ):
        task = bar.add_task("scoring", total=None)
        done = score_traces(
            ws,
            stack,
            since=start,
            limit=limit,
            rescore=rescore,
            embed=_embedder(ws),
            judge=judge_stack,
            progress=lambda n, total: bar.update(task, completed=n, total=total),
        )
    console.print(f"{done} traces of {stack} scored")


@app.command("add-rule")
def add_rule_command(
    stack: str = typer.Argument(..., help="The stack the rule watches."),
    expression: str = typer.Argument(
        ..., help='FIGURE OP NUMBER [for DURATION] [over WINDOW], e.g. "refusal_rate > 0.5 for 15m"'
    ),
    notify: list[str] = typer.Option(
        [], "--notify", help="webhook:URL (repeatable); events always go to the log."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Add an alert rule; the server (or 'slmops monitor check') evaluates it."""
    from slmops.monitor.alerts import add_rule, format_duration, list_rules

    with open_workspace(workspace) as ws:
        rule_id = add_rule(ws.engine, stack, expression, notify, known_figures())
        rule = next(r for r in list_rules(ws.engine) if r["id"] == rule_id)
    console.print(
        f"rule {rule_id}: {rule['figure']} {rule['op']} {rule['threshold']:g} "
        f"for {format_duration(rule['for_s'])} over {format_duration(rule['window_s'])} "
        f"on {stack} → {', '.join(rule['notify'])}"
    )


@app.command("rules")
def rules_command(
    stack: str | None = typer.Option(None, "--stack", "-s"),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Alert rules and their state."""
    from slmops.monitor.alerts import list_rules

    with open_workspace(workspace) as ws:
        rows = list_rules(ws.engine, stack)
    if not rows:
        console.print("No alert rules; add one with 'slmops monitor add-rule'.")
        return
    table = Table("id", "stack", "rule", "state", "since", "notify")
    colors = {"firing": "red", "pending": "yellow", "ok": "green"}
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["stack"],
            escape(row["expression"]),
            f"[{colors.get(row['state'], 'white')}]{row['state']}[/]",
            when(row["since"]) if row["since"] else "",
            escape(", ".join(row["notify"])),
        )
    console.print(table)


@app.command("remove-rule")
def remove_rule_command(
    rule_id: int = typer.Argument(...), workspace: Path | None = WorkspaceOption
) -> None:
    """Delete an alert rule (and its events)."""
    from slmops.monitor.alerts import remove_rule

    with open_workspace(workspace) as ws:
        remove_rule(ws.engine, rule_id)
    console.print(f"rule {rule_id} removed")


@app.command("events")
def events_command(
    stack: str | None = typer.Option(None, "--stack", "-s"),
    limit: int = typer.Option(20, "--limit", "-n", min=1),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Alert events (firing and resolved), newest first, with their deliveries."""
    from slmops.monitor.alerts import list_events

    with open_workspace(workspace) as ws:
        rows = list_events(ws.engine, stack=stack, limit=limit)
    if not rows:
        console.print("No alert events.")
        return
    table = Table("when", "rule", "stack", "state", "value", "deliveries")
    for row in rows:
        state = "[red]firing[/]" if row["state"] == "firing" else "[green]resolved[/]"
        deliveries = ", ".join(f"{k}: {v}" for k, v in (row["deliveries"] or {}).items())
        table.add_row(
            when(row["at"]),
            escape(f"{row['rule_id']}: {row['expression']}"),
            row["stack"],
            state,
            _cell(row["value"], "{:.3g}"),
            escape(deliveries),
        )
    console.print(table)


@app.command("check")
def check_command(
    watch: float | None = typer.Option(
        None, "--watch", help="Evaluate again every this many seconds (Ctrl-C stops)."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Evaluate every alert rule now (the server does this on its own every 30 s)."""
    from slmops.monitor.alerts import Notifier, evaluate_rules, list_rules
    from slmops.monitor.shifts import DRIFT_FIGURES
    from slmops.serve.monitoring import figure_of

    if watch is not None and watch <= 0:
        raise ConfigError("--watch needs a number of seconds above 0")
    with open_workspace(workspace) as ws:
        notifier = Notifier()
        embed = (
            _embedder(ws)
            if any(r["figure"] in DRIFT_FIGURES for r in list_rules(ws.engine))
            else None
        )
        while True:
            events = evaluate_rules(ws.engine, figure_of(ws, embed), notifier=notifier)
            for event in events:
                console.print(
                    f"{when(event.at)} rule {event.rule_id} {event.state}: "
                    f"{escape(event.expression)} ({event.figure} = {_cell(event.value, '{:.3g}')})"
                )
            if watch is None:
                states = {r["state"] for r in list_rules(ws.engine)}
                console.print(f"{len(events)} transitions; states now: {', '.join(sorted(states))}")
                return
            time.sleep(watch)


@app.command("prune")
def prune_command(
    older_than: str = typer.Option(..., "--older-than", help="Delete traces older than 30d..."),
    stack: str | None = typer.Option(None, "--stack", "-s", help="Only this stack's traces."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count only."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Retention: delete old traces (spans, online scores), keeping hourly aggregates so the
    monitor's figures for those hours stay; feedback is kept."""
    from slmops.monitor.alerts import parse_duration
    from slmops.monitor.retention import prune_traces

    days = parse_duration(older_than) / 86400
    with open_workspace(workspace) as ws:
        result = prune_traces(ws.engine, older_than_days=days, stack=stack, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {result.traces} traces ({result.spans} spans, {result.scores} scores) before "
        f"{when(result.cutoff)}; {result.hours} hours rolled up"
    )
