"""``slmops clean``: remove what killed writers left in a workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from slmops.cli.common import WorkspaceOption, console, open_workspace


def clean_command(
    older_than_hours: float = typer.Option(
        24.0,
        "--older-than-hours",
        min=0.0,
        help="Remove leftovers whose writer cannot be checked from here once this old.",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Remove the scratch folders and half-written files that killed processes left (every
    command already removes those of dead processes of this machine; this also walks the
    whole workspace and artifact store for older kinds, removed by age). A live writer's
    files are never removed."""
    with open_workspace(workspace) as ws:
        swept = ws.sweep_debris(deep=True, max_age_s=older_than_hours * 3600)
    for path in swept.removed:
        console.print(f"removed {path}")
    console.print(
        f"{len(swept.removed)} leftovers removed ({swept.freed_bytes / 1e6:.1f} MB); "
        f"{len(swept.kept)} kept (a live writer's, or too young to tell)"
    )
