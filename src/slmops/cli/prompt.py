"""``slmops prompt ...``: versioned prompt templates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.common import WorkspaceOption, console, open_workspace
from slmops.errors import SlmopsError

app = typer.Typer(help="Version prompt templates (Jinja2).", no_args_is_help=True)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlmopsError(f"cannot read the {what} file {path}: {exc}") from None


@app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Prompt name, e.g. qa."),
    template: Path = typer.Argument(..., help="File holding the Jinja2 user-message template."),
    system: Path | None = typer.Option(None, "--system", help="File holding a system prompt."),
    message: str = typer.Option("", "--message", "-m", help="What changed."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Store a new version of a prompt (nothing happens if it is unchanged)."""
    from slmops.prompts.registry import PromptRegistry

    text = _read(template, "template")
    system_text = _read(system, "system prompt") if system else None
    with open_workspace(workspace) as ws:
        version, created = PromptRegistry(ws).add(name, text, system=system_text, message=message)
    if created:
        console.print(
            f"[green]{version.ref}[/] stored; variables: {', '.join(version.variables) or 'none'}"
        )
    else:
        console.print(f"{version.ref} unchanged: no new version")


@app.command("list")
def list_command(workspace: Path | None = WorkspaceOption) -> None:
    """List prompts with their latest version."""
    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        registry = PromptRegistry(ws)
        table = Table("prompt", "latest", "variables", "tags")
        for name in registry.names():
            latest, tags = registry.get(name), registry.tags(name)
            table.add_row(
                name,
                str(latest.version),
                ", ".join(latest.variables),
                ", ".join(f"{t}@{v}" for t, v in sorted(tags.items())),
            )
    console.print(table if table.rows else "No prompts yet: slmops prompt add NAME FILE")


@app.command("log")
def log_command(name: str = typer.Argument(...), workspace: Path | None = WorkspaceOption) -> None:
    """Show a prompt's versions, newest first."""
    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        registry = PromptRegistry(ws)
        versions, tags = registry.log(name), registry.tags(name)
    table = Table("version", "date", "tags", "variables", "message")
    for v in versions:
        table.add_row(
            str(v.version),
            dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M"),
            ", ".join(t for t, n in tags.items() if n == v.version),
            ", ".join(v.variables),
            escape(v.message),
        )
    console.print(table)


@app.command("show")
def show_command(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@TAG."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Print one version of a prompt."""
    from rich.syntax import Syntax

    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        version = PromptRegistry(ws).get(ref)
    console.print(f"[bold]{version.ref}[/] {escape(version.message)}")
    if version.system:
        console.print("[dim]system:[/]")
        console.print(Syntax(version.system, "jinja", word_wrap=True))
    console.print("[dim]template:[/]")
    console.print(Syntax(version.template, "jinja", word_wrap=True))


@app.command("export")
def export_command(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@TAG."),
    directory: Path = typer.Argument(Path(), help="Folder to write the files into."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Write a version's template (NAME.j2) and system prompt (NAME.system.j2) as files to
    edit; store the edit with: slmops prompt add NAME NAME.j2 --system NAME.system.j2."""
    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        version = PromptRegistry(ws).get(ref)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        files = {directory / f"{version.name}.j2": version.template}
        if version.system:
            files[directory / f"{version.name}.system.j2"] = version.system
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SlmopsError(f"cannot write the prompt files into {directory}: {exc}") from None
    console.print(f"{version.ref} written to {', '.join(str(path) for path in files)}")


@app.command("diff")
def diff_command(
    name: str = typer.Argument(...),
    old: int = typer.Argument(...),
    new: int = typer.Argument(...),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """A unified diff between two versions."""
    from rich.syntax import Syntax

    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        text = PromptRegistry(ws).diff(name, old, new)
    console.print(Syntax(text or "(identical)", "diff", word_wrap=True))


@app.command("tag")
def tag_command(
    name: str = typer.Argument(...),
    version: int = typer.Argument(...),
    tag: str = typer.Argument(..., help="e.g. production"),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Name a version (use it as NAME@TAG); an existing tag moves."""
    from slmops.prompts.registry import PromptRegistry

    with open_workspace(workspace) as ws:
        PromptRegistry(ws).tag(name, version, tag)
    console.print(f"tagged {name}@{version} as {tag}")
