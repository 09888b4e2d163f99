"""``slmops trace list`` and ``slmops trace show ID``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from slmops.cli.common import WorkspaceOption, console, open_workspace, read_database, when

if TYPE_CHECKING:
    import sqlite3

app = typer.Typer(help="Inspect stored run traces.", no_args_is_help=True)

_KIND_ICONS = {
    "chain": "⛓",
    "function": "ƒ",
    "llm": "✦",
    "decision": "◆",
    "concurrent": "⫘",
    "map": "⫘",
    "retrieval": "⌕",
}
_SUMMARY_KEYS = {
    "gen_ai.usage.input_tokens": "in",
    "gen_ai.usage.output_tokens": "out",
    "slmops.cache.hit": "cache hit",
    "slmops.decision.branch": "branch",
    "slmops.attempts": "attempts",
    "slmops.fallback.used": "fallback",
    "slmops.prompt.version": "prompt",
    "slmops.retrieval.corpus": "corpus",
    "slmops.retrieval.version": "version",
}


@app.command("list")
def list_command(
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many, newest first."),
    errors_only: bool = typer.Option(False, "--errors", help="Only failed runs."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """List the newest traces."""
    status = "error" if errors_only else None
    with read_database(workspace) as quick:
        if quick is not None:
            rows = newest_traces(quick.db, limit=limit, status=status)
    if quick is None:
        from slmops.store.traces import list_traces

        with open_workspace(workspace) as ws:
            rows = list_traces(ws.engine, limit=limit, status=status)
    if not rows:
        console.print("No traces yet: run something first (e.g. 'slmops quickstart').")
        return
    table = Table("name", "status", "started", "ms", "spans")
    table.add_column("trace id", no_wrap=True, min_width=32)
    for row in rows:
        status = "[green]ok[/]" if row["status"] == "ok" else "[red]error[/]"
        table.add_row(
            row["name"],
            status,
            when(row["started_at"]),
            f"{row['duration_ms']:.1f}",
            str(row["span_count"]),
            row["trace_id"],
        )
    console.print(table)


def newest_traces(
    db: sqlite3.Connection, *, limit: int, status: str | None
) -> list[dict[str, Any]]:
    """The columns of :func:`slmops.store.traces.list_traces` that the listing shows, by the
    same query, from a :func:`read_database` connection."""
    where = "WHERE status = ? " if status else ""
    cursor = db.execute(
        "SELECT trace_id, name, status, started_at, duration_ms, span_count FROM traces "
        f"{where}ORDER BY started_at DESC LIMIT ? OFFSET 0",
        (status, limit) if status else (limit,),
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def _span_label(span: dict[str, Any], show_io: bool) -> str:
    attributes = span["attributes"]
    icon = _KIND_ICONS.get(span["kind"], "•")
    ms = (span["end_ns"] - span["start_ns"]) / 1e6
    status = "[green]✓[/]" if span["status"] == "ok" else "[red]✗[/]"
    facts = [f"{_SUMMARY_KEYS[k]}={attributes[k]}" for k in _SUMMARY_KEYS if k in attributes]
    if "gen_ai.request.model" in attributes:
        facts.insert(0, str(attributes["gen_ai.request.model"]))
    label = f"{status} {icon} [bold]{span['name']}[/] [dim]{span['kind']} {ms:.1f} ms[/]"
    if facts:
        label += f"  [cyan]{' '.join(facts)}[/]"
    retries = [e for e in span["events"] if e["name"] == "retry"]
    for event in retries:
        label += (
            f"\n  [yellow]retry after attempt {event['attributes'].get('attempt')}: "
            f"{event['attributes'].get('error')}[/]"
        )
    sources = attributes.get("slmops.retrieval.sources")
    if sources:  # lineage: where a retrieval's passages came from
        label += "\n  [dim]sources:[/] " + "; ".join(escape(str(s)) for s in sources)
    if span["error"]:
        label += f"\n  [red]{span['error']}[/]"
    if show_io:
        for key in ("slmops.input", "slmops.output"):
            if key in attributes:
                label += f"\n  [dim]{key.split('.')[-1]}:[/] {attributes[key]}"
    return label


@app.command("show")
def show_command(
    trace_id: str = typer.Argument(..., help="Trace id, or a unique prefix of 6+ characters."),
    io: bool = typer.Option(False, "--io", help="Also print each span's input and output."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw trace as JSON."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Show one trace as a tree of spans."""
    from slmops.store.traces import get_trace

    with open_workspace(workspace) as ws:
        trace, spans = get_trace(ws.engine, trace_id)
    if as_json:
        console.print_json(json.dumps({"trace": trace, "spans": spans}, default=str))
        return
    status = "[green]ok[/]" if trace["status"] == "ok" else "[red]error[/]"
    tree = Tree(
        f"[bold]{trace['name']}[/] {status} {trace['duration_ms']:.1f} ms  "
        f"[dim]{trace['trace_id']} · {when(trace['started_at'])}[/]"
    )
    nodes: dict[str | None, Tree] = {}
    for span in spans:  # ordered by start, so parents come before their children
        parent = nodes.get(span["parent_id"], tree)
        nodes[span["span_id"]] = parent.add(_span_label(span, io))
    console.print(tree)
