"""What every command shares: the console, the workspace option and error reporting."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    import sqlite3

    from slmops.core.runtime import Runtime
    from slmops.store.settings import Settings
    from slmops.store.workspace import Workspace

console = Console()
error_console = Console(stderr=True)

WorkspaceOption = typer.Option(
    None,
    "--workspace",
    "-w",
    help="Workspace folder (default: $SLMOPS_HOME, else ./.slmops).",
    show_default=False,
)


ExecutorOption = typer.Option(
    "local", "--executor", help="Where the heavy work runs: local (this process) or ray."
)
AddressOption = typer.Option(
    None,
    "--address",
    help="With --executor ray: the cluster (ray://HOST:10001, HOST:6379; default "
    "$SLMOPS_RAY_ADDRESS; 'local' starts a private Ray here).",
    show_default=False,
)


def check_executor(executor: str) -> None:
    if executor not in ("local", "ray"):
        raise typer.BadParameter(
            f"{executor!r} is not an executor: use local or ray", param_hint="--executor"
        )


def when(seconds: float) -> str:
    """A stored unix time as local date and time, the way every listing shows it."""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def open_workspace(workspace: Path | None) -> Workspace:
    from slmops.store.workspace import Workspace

    return Workspace.open(workspace)


def open_runtime(workspace: Path | None) -> Runtime:
    from slmops.core.runtime import Runtime

    return Runtime.from_workspace(open_workspace(workspace))


@dataclass(frozen=True)
class QuickRead:
    """What a listing needs of a workspace it does not open: see :func:`read_database`."""

    home: Path
    settings: Settings
    db: sqlite3.Connection


@contextlib.contextmanager
def read_database(workspace: Path | None) -> Iterator[QuickRead | None]:
    """A read-only connection (the standard library's ``sqlite3``) to the workspace's
    database, for the listings: opening the workspace costs them SQLAlchemy, fsspec and the
    debris sweep, about 0.25 s of a 0.55 s command (bench/bench_cli.py), to run one SELECT.
    A listing read this way does not sweep debris; the next command that opens does.

    None, and the listing opens the workspace as every command does (``open_workspace``),
    whenever this is not certainly the same database at the same schema: a ``database_url``
    (Postgres and the like stay on SQLAlchemy), no database yet (opening creates it), a
    schema that is not the head of the shipped migrations (opening migrates it), a file
    that cannot be opened or read. Settings are loaded (and refused) as by opening."""
    import sqlite3

    from slmops.store.settings import load_settings
    from slmops.store.workspace import _shipped_head, resolve_home

    home = resolve_home(workspace)
    path = home / "slmops.db"
    head = _shipped_head() if path.is_file() else None
    settings = load_settings(home) if head is not None else None
    if settings is None or settings.database_url:
        yield None
        return
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error:
        yield None
        return
    try:
        try:
            revisions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error:
            revisions = []
        yield QuickRead(home, settings, connection) if revisions == [(head,)] else None
    finally:
        connection.close()
