"""What every command shares: the console, the workspace option and error reporting."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from slmops.core.runtime import Runtime
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
