"""``slmops ui``: the web console over the workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from slmops.cli.common import WorkspaceOption, console, open_workspace
from slmops.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes it)."),
    port: int = typer.Option(8765, help="Port."),
    api_key: list[str] = typer.Option(
        [], "--api-key", envvar="SLMOPS_API_KEY", help="Key that unlocks the console (repeatable)."
    ),
    keys_file: Path | None = typer.Option(None, help="File of API keys, one per line."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Serve the web console: traces as waterfalls with their passages and feedback, and the
    monitor's figures, alerts and drift. With a key, every page needs it."""
    import uvicorn

    from slmops.serve.server import read_keys_file, uvicorn_config
    from slmops.ui import create_console

    keys = [*api_key, *(read_keys_file(keys_file) if keys_file else [])]
    if host not in LOOPBACK and not keys:
        raise ConfigError(f"refusing to serve on {host} without an API key (--api-key/--keys-file)")
    ws = open_workspace(workspace)
    app = create_console(ws, api_keys=keys)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"slmops console on http://{shown}:{port}/ (workspace {ws.home}); Ctrl-C stops")
    uvicorn.Server(uvicorn_config(app, host, port)).run()
