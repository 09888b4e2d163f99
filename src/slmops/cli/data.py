"""``slmops data ...``: ingest, search and version corpora."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.choices import DEFAULT_WRITE_WAIT
from slmops.cli.common import (
    AddressOption,
    ExecutorOption,
    WorkspaceOption,
    check_executor,
    console,
    open_workspace,
    read_database,
    when,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from slmops.store.workspace import Workspace

app = typer.Typer(help="Ingest, search and version document corpora.", no_args_is_help=True)


def ingest_with_progress(ws: Workspace, corpus: str, paths: list[Path], **options: Any) -> None:
    """Ingest with a progress bar per stage, then print what changed (or that nothing did)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from slmops.data.corpus import check_ingest, corpora_for
    from slmops.models.loading import load_embedder

    check_ingest(corpus, paths)  # a typo fails now, not after seconds of loading the model
    with console.status("Loading the embedder..."):  # torch + the model: seconds, once
        load_embedder(options.get("embedder") or ws.settings.embedder)
    bar = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            label = "waiting for another ingest of this corpus" if stage == "waiting" else stage
            tasks[stage] = bar.add_task(label, total=max(total, 1))
        bar.update(tasks[stage], completed=done, total=max(total, 1))

    with bar:
        report = corpora_for(ws).ingest(corpus, paths, on_progress=on_progress, **options)
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(skipped.path)}: {escape(skipped.reason)}")
    summary = (
        f"{report.documents} documents, {report.chunks} chunks: {report.added} added, "
        f"{report.removed} removed, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.embedded} "
        f"embedded, {report.duplicates} duplicates dropped"
    )
    if report.removed_documents:
        summary += f"; {report.removed_documents} documents removed"
    if report.version is None:
        console.print(f"{corpus}: nothing changed ({summary}); no new version")
    else:
        console.print(f"[green]{corpus}@{report.version}[/] committed: {summary}")


@app.command("ingest")
def ingest_command(
    paths: list[Path] = typer.Argument(..., help="Files and folders (md, txt, html, pdf, jsonl)."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus name."),
    message: str = typer.Option("", "--message", "-m", help="Version message."),
    embedder: str | None = typer.Option(None, "--embedder", help="Embedder URI (new corpora)."),
    chunk_tokens: int = typer.Option(200, help="Chunk budget in embedder tokens (new corpora)."),
    overlap_tokens: int = typer.Option(32, help="Overlap in embedder tokens (new corpora)."),
    add: bool = typer.Option(
        False,
        "--add",
        help="Add or update these documents and keep every other document of the corpus.",
    ),
    allow_removals: bool = typer.Option(
        False,
        "--allow-removals",
        help="Commit even if more than half of the corpus' documents would be removed.",
    ),
    wait: float = typer.Option(
        DEFAULT_WRITE_WAIT,
        "--wait",
        min=0,
        help="Seconds to wait for another ingest of this corpus to finish (inf: no limit).",
    ),
    executor: str = ExecutorOption,
    address: str | None = AddressOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Bring a corpus to exactly these documents (with --add: add them to it) and commit a
    version. Fails, committing nothing, on a path that does not exist or when more than
    half of the documents would be removed (unless --allow-removals)."""
    if math.isnan(wait):  # passes min=0 (no comparison holds) and would wait forever
        raise typer.BadParameter("must be a number of seconds, not nan", param_hint="--wait")
    check_executor(executor)
    with open_workspace(workspace) as ws, contextlib.ExitStack() as stack:
        spread: dict[str, Any] = {}
        if executor == "ray":  # the embedding on Ray actors; the commit stays here
            from slmops.pipelines.ray_executor import RayEmbedding

            with console.status("Starting embedders on the Ray cluster..."):
                spread["embed_batches"] = stack.enter_context(
                    RayEmbedding(embedder or ws.settings.embedder, address=address)
                )
        ingest_with_progress(
            ws,
            corpus,
            paths,
            **spread,
            message=message,
            embedder=embedder,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
            add=add,
            allow_removals=allow_removals,
            wait=wait,
        )


@app.command("search")
def search_command(
    ref: str = typer.Argument(..., help="CORPUS, CORPUS@VERSION, CORPUS@TAG or CORPUS@latest."),
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "--top-k", "-k", min=1, max=100),
    mode: str = typer.Option("hybrid", "--mode", help="vector, fts or hybrid."),
    where: list[str] = typer.Option(
        [], "--where", help="Filter COLUMN=VALUE or metadata.KEY=VALUE (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Search a corpus version."""
    from slmops.data.corpus import DataError, corpora_for, parse_where

    try:
        filters = parse_where(where)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--where") from None
    with open_workspace(workspace) as ws, console.status("Searching (loading the embedder)..."):
        version, hits = corpora_for(ws).search(
            ref,
            query,
            k=k,
            mode=mode,  # type: ignore[arg-type]
            where=filters,
        )
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "corpus": version.corpus,
                    "version": version.version,
                    "hits": [h.model_dump() for h in hits],
                }
            )
        )
        return
    console.print(f"[bold]{version.corpus}@{version.version}[/] {mode} search: {escape(query)}")
    if not hits:
        console.print("no matches")
    for rank, hit in enumerate(hits, start=1):
        console.print(
            f"\n[bold cyan]{rank}.[/] [dim]{hit.score:.3f}[/] "
            f"[green]{escape(hit.citation())}[/] [dim]{escape(hit.section)}[/]"
        )
        console.print(escape(hit.text if len(hit.text) < 600 else hit.text[:600] + " ..."))


@app.command("list")
def list_command(workspace: Path | None = WorkspaceOption) -> None:
    """List corpora with their latest and checked-out versions."""
    with read_database(workspace) as quick:
        if quick is not None:
            rows = [tuple(row) for row in quick.db.execute(CORPUS_ROWS)]
    if quick is None:
        from sqlalchemy import text

        with open_workspace(workspace) as ws, ws.engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(text(CORPUS_ROWS))]
    table = Table("corpus", "latest", "checked out", "chunks", "embedder")
    for name, checked_out, embedder, latest, chunks in rows:
        table.add_row(
            name,
            str(latest if latest is not None else "-"),
            str(checked_out or "latest"),
            str(chunks if latest is not None else 0),
            embedder,
        )
    console.print(table if table.rows else "No corpora yet: slmops data ingest PATH --corpus NAME")


CORPUS_ROWS = """
SELECT c.name, c.checked_out, c.embedder, v.version, v.chunks
FROM corpora c
LEFT JOIN (
    SELECT corpus, MAX(version) AS version FROM corpus_versions GROUP BY corpus
) newest ON newest.corpus = c.name
LEFT JOIN corpus_versions v ON v.corpus = newest.corpus AND v.version = newest.version
ORDER BY c.name
"""
"""(name, checked-out version, embedder, latest version, its chunks) of every corpus, by
name: what ``Corpora.names``, ``info`` and ``log`` tell ``data list``, in one query of the
catalogue tables (plain SQL: SQLite through :func:`read_database`, any other database
through SQLAlchemy), without importing slmops.data (its chunkers, loaders, model modules)."""


@app.command("log")
def log_command(
    corpus: str = typer.Argument(...), workspace: Path | None = WorkspaceOption
) -> None:
    """Show a corpus' versions, newest first."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        corpora = corpora_for(ws)
        versions, tags = corpora.log(corpus), corpora.tags(corpus)
    by_version: dict[int, list[str]] = {}
    for tag, version in tags.items():
        by_version.setdefault(version, []).append(tag)
    table = Table("version", "date", "docs", "chunks", "+", "-", "embedded", "tags", "message")
    for v in versions:
        table.add_row(
            str(v.version),
            when(v.created_at),
            str(v.documents),
            str(v.chunks),
            str(v.stats.get("added", 0)),
            str(v.stats.get("removed", 0)),
            str(v.stats.get("embedded", 0)),
            ", ".join(by_version.get(v.version, [])),
            escape(v.message),
        )
    console.print(table)


@app.command("diff")
def diff_command(
    corpus: str = typer.Argument(...),
    old: int = typer.Argument(..., help="Older version."),
    new: int = typer.Argument(..., help="Newer version."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Documents and chunks added, removed and changed between two versions."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        diff = corpora_for(ws).diff(corpus, old, new)
    colour = {"added": "green", "removed": "red", "changed": "yellow"}
    for change in diff.documents:
        console.print(
            f"[{colour[change.change]}]{change.change:>8}[/] {escape(change.doc_id)} "
            f"[dim](+{change.chunks_added} -{change.chunks_removed} chunks)[/]"
        )
    console.print(
        f"{corpus} {old} → {new}: {len(diff.documents)} documents differ, "
        f"+{diff.chunks_added} -{diff.chunks_removed} chunks"
    )


@app.command("checkout")
def checkout_command(
    ref: str = typer.Argument(..., help="CORPUS@VERSION or CORPUS@TAG; CORPUS@latest to undo."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Make retrieval use this version by default."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        version = corpora_for(ws).checkout(ref)
    console.print(
        f"{version.corpus} now serves version {version.version}: {escape(version.message)}"
    )


@app.command("tag")
def tag_command(
    corpus: str = typer.Argument(...),
    version: int = typer.Argument(...),
    name: str = typer.Argument(..., help="Tag name, e.g. release-1."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Name a version (use it as CORPUS@NAME)."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        corpora_for(ws).tag(corpus, version, name)
    console.print(f"tagged {corpus}@{version} as {name}")


@app.command("export")
def export_command(
    ref: str = typer.Argument(...),
    output: Path = typer.Argument(..., help="File to write (Parquet)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Write one corpus version, vectors included, to a single file."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        path = corpora_for(ws).export(ref, output)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A file written by 'slmops data export'."),
    name: str | None = typer.Option(
        None, "--name", help="Corpus name (default: the exported one)."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Create a corpus from an exported file."""
    from slmops.data.corpus import corpora_for

    with open_workspace(workspace) as ws:
        version = corpora_for(ws).import_(path, name=name)
    console.print(f"imported {version.corpus}@{version.version}: {version.chunks} chunks")
