"""``slmops feedback add`` and ``slmops feedback list``: human ratings of answers."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.common import WorkspaceOption, console, open_workspace, when

app = typer.Typer(help="Rate answers and read the ratings.", no_args_is_help=True)


@app.command("add")
def add_command(
    trace_id: str = typer.Argument(..., help="The answer's trace id (or a 6+ character prefix)."),
    score: int | None = typer.Option(None, "--score", help="0/1 (thumbs) or 1-5 (stars)."),
    stars: bool = typer.Option(False, "--stars", help="Read --score as stars (1-5)."),
    comment: str | None = typer.Option(None, "--comment", "-c", help="What was wrong or right."),
    correction: str | None = typer.Option(None, "--correction", help="The right answer."),
    label: list[str] = typer.Option([], "--label", "-l", help="A label (repeatable)."),
    reviewer: bool = typer.Option(False, "--reviewer", help="Record as a reviewer, not a user."),
    author: str | None = typer.Option(None, "--author", help="Who gives it."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Store one piece of feedback on a traced answer."""
    from slmops.monitor.feedback import record_feedback
    from slmops.store.redaction import Redactor

    with open_workspace(workspace) as ws:
        settings = ws.settings
        redactor = Redactor.from_settings(settings.redact, settings.redact_patterns)
        stored = record_feedback(
            ws.engine,
            {
                "trace_id": trace_id,
                "score": score,
                "scale": "stars" if stars else None,
                "comment": comment,
                "correction": correction,
                "labels": label,
                "source": "reviewer" if reviewer else "user",
                "author": author,
            },
            redact=redactor.redact if redactor else None,
        )
    console.print(
        f"feedback {stored['id']} stored on trace {stored['trace_id']} ({stored['stack']})"
    )


def _kinds(negative: bool, positive: bool, corrected: bool, reviewed: bool) -> list[str]:
    chosen = [
        kind
        for kind, wanted in (
            ("negative", negative),
            ("positive", positive),
            ("corrected", corrected),
            ("reviewed", reviewed),
        )
        if wanted
    ]
    return chosen or ["any"]


@app.command("list")
def list_command(
    stack: str | None = typer.Option(None, "--stack", "-s", help="Only this stack's answers."),
    negative: bool = typer.Option(False, "--negative", help="Rated bad (score < 0.5)."),
    positive: bool = typer.Option(False, "--positive", help="Rated good."),
    corrected: bool = typer.Option(False, "--corrected", help="With a corrected answer."),
    reviewed: bool = typer.Option(False, "--reviewed", help="Given by a reviewer."),
    since: str | None = typer.Option(None, "--since", help="Given in the last 30m, 24h, 7d..."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many, newest first."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Rated answers, with the question, the answer, its sources and the comment."""
    from slmops.monitor.alerts import parse_duration
    from slmops.monitor.feedback import list_feedback
    from slmops.monitor.records import load_records

    start = time.time() - parse_duration(since) if since else None
    with open_workspace(workspace) as ws:
        rows = list_feedback(
            ws.engine,
            stack=stack,
            kinds=_kinds(negative, positive, corrected, reviewed),
            since=start,
            limit=limit,
        )
        records = {r.trace_id: r for r in load_records(ws.engine, [r["trace_id"] for r in rows])}
    if not rows:
        console.print(
            "No feedback matches; rate answers with POST /v1/feedback or 'slmops review'."
        )
        return
    table = Table("when", "score", "question / answer", "sources", "comment / correction")
    for row in rows:
        record = records.get(row["trace_id"])
        score = "-" if row["raw_score"] is None else f"{row['raw_score']} ({row['scale']})"
        color = "green" if (row["score"] or 0) >= 0.5 else "red"
        if row["score"] is None:
            color = "white"
        exchange = (
            f"[bold]{escape(record.question)}[/]\n{escape(record.answer)}"
            + (" [yellow](refused)[/]" if record.refused else "")
            if record
            else f"[dim]trace {row['trace_id'][:12]} deleted[/]"
        )
        notes = "\n".join(
            part
            for part in (
                escape(row["comment"] or ""),
                f"[cyan]→ {escape(row['correction'])}[/]" if row["correction"] else "",
                " ".join(f"#{label}" for label in row["labels"]),
            )
            if part
        )
        table.add_row(
            f"{when(row['created_at'])}\n{row['source']} · {row['trace_id'][:12]}",
            f"[{color}]{score}[/]",
            exchange,
            escape("\n".join(record.sources[:4])) if record else "",
            notes,
        )
    console.print(table)
