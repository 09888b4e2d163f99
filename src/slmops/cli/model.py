"""``slmops model ...``: the model registry (versions, aliases, cards, gated promotion)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from slmops.cli.common import (
    WorkspaceOption,
    console,
    error_console,
    open_workspace,
    read_database,
    when,
)
from slmops.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import TaskID

app = typer.Typer(
    help="The model registry: versions, aliases, model cards, gated promotion.",
    no_args_is_help=True,
)


@app.command("register")
def register_command(
    name: str = typer.Argument(..., help="Registered model name."),
    uri: str | None = typer.Argument(None, help="A model URI (gguf:, local:, hf:, openai:)."),
    from_run: str | None = typer.Option(None, "--from-run", help="A finished training run."),
    fmt: str = typer.Option("gguf-q8_0", "--format", help="With --from-run: the export kept."),
    intended_use: str = typer.Option("", "--intended-use", help="For the model card."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Register a new version: a copy of a model's weights (checksummed), or a training
    run's export with its lineage. Prints NAME@VERSION."""
    from slmops.registry.registration import register_run, register_uri
    from slmops.registry.store import ModelRegistry

    if (uri is None) == (from_run is None):
        raise typer.BadParameter("give a model URI or --from-run RUN (one of them)")
    with open_workspace(workspace) as ws:
        registry = ModelRegistry(ws)
        with console.status(f"Registering {name}..."):
            if from_run is not None:
                version = register_run(
                    registry, name=name, run_id=from_run, fmt=fmt, intended_use=intended_use
                )
            else:
                assert uri is not None
                version = register_uri(registry, name=name, uri=uri, intended_use=intended_use)
    digest = (version.sha256 or "")[:19]
    console.print(f"[green]{version.ref}[/] registered: {version.uri} {digest}")
    console.print(f"Use it as: registry:{version.ref}")


@app.command("list")
def list_command(workspace: Path | None = WorkspaceOption) -> None:
    """Registered models: latest version and aliases."""
    # From the workspace's own MLflow file when it can be, without importing MLflow.
    from slmops.registry.listing import list_local_models, list_models

    with read_database(workspace) as quick:
        rows = list_local_models(quick.home, quick.settings) if quick is not None else None
    if rows is None:
        with open_workspace(workspace) as ws:
            rows = list_models(ws)
    if not rows:
        console.print("No registered models yet: slmops model register NAME URI")
        return
    table = Table("model", "versions", "latest", "aliases", "latest registered")
    for name, versions, aliases in rows:
        latest = versions[0] if versions else None
        table.add_row(
            name,
            str(len(versions)),
            str(latest.version) if latest else "-",
            ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "-",
            when(latest.created_at) if latest else "-",
        )
    console.print(table)


@app.command("log")
def log_command(
    name: str = typer.Argument(..., help="Registered model name."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """A model's versions and the audit log of its aliases."""
    from slmops.registry.promotion import alias_events
    from slmops.registry.store import ModelRegistry

    with open_workspace(workspace) as ws:
        registry = ModelRegistry(ws)
        versions = registry.versions(name)
        aliases = registry.aliases(name)
        events = alias_events(ws, name)
    table = Table("version", "aliases", "format", "from", "sha256", "registered")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "-",
            v.tags.get("slmops.format", "?"),
            escape(
                v.tags.get("slmops.train_run", "")[:12]
                or v.tags.get("slmops.registered_from", v.source)
            ),
            (v.sha256 or "-")[7:19],
            when(v.created_at),
        )
    console.print(table)
    if not events:
        console.print("No alias moves yet.")
        return
    log = Table("when", "alias", "move", "action", "who", "why", "evidence")
    for e in events:
        move = f"{e['from_version'] or '-'} -> {e['to_version'] or '(removed)'}"
        evidence = e["evidence"]
        runs = [evidence.get("candidate_run", ""), *evidence.get("holder_runs", {}).values()]
        log.add_row(
            when(e["created_at"]),
            e["alias"],
            move,
            e["action"],
            e["actor"],
            escape(e["reason"] or "-"),
            ", ".join(r[:12] for r in runs if r) or f"undoes #{evidence.get('undoes')}",
        )
    console.print(log)
    drift = [
        a
        for a, v in aliases.items()
        if not any(e["alias"] == a and e["to_version"] == v for e in reversed(events))
    ]
    for alias in drift:
        console.print(
            f"[yellow]{alias} -> {aliases[alias]} was set outside slmops (not in the log)[/]"
        )


@app.command("show")
def show_command(
    ref: str = typer.Argument(..., help="NAME@VERSION, NAME@ALIAS or NAME (latest)."),
    card: Path | None = typer.Option(None, "--card", help="Write the model card to this file."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """One version: weights, lineage, aliases, evaluations and its model card."""
    from rich.markdown import Markdown

    from slmops.registry.store import ModelRegistry

    with open_workspace(workspace) as ws:
        version = ModelRegistry(ws).resolve(ref)
    console.print(
        f"[bold]{version.ref}[/] {', '.join(version.aliases)}  {when(version.created_at)}"
    )
    console.print(
        f"loads: {version.uri}\nsha256: {version.sha256 or '-'}\nsource: {version.source}"
    )
    if version.run_id:
        console.print(f"training run: {version.run_id}")
    evals = {
        k.removeprefix("slmops.eval."): v
        for k, v in version.tags.items()
        if k.startswith("slmops.eval.")
    }
    if evals:
        console.print(
            "evaluated by: " + ", ".join(f"{run} ({data})" for run, data in evals.items())
        )
    if card is not None:
        card.write_text(version.card, encoding="utf-8")
        console.print(f"Card written to {card}")
    console.print(Markdown(version.card or "_no card_"))


@app.command("card")
def card_command(
    ref: str = typer.Argument(..., help="NAME@VERSION or NAME@ALIAS."),
    edit: bool = typer.Option(False, "--edit", help="Edit it in $EDITOR."),
    source: Path | None = typer.Option(None, "--from", help="Replace it with this Markdown file."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Print, edit or replace a version's model card (kept with the version, in MLflow)."""
    from slmops.registry.store import ModelRegistry

    with open_workspace(workspace) as ws:
        registry = ModelRegistry(ws)
        version = registry.resolve(ref)
        if source is not None:
            try:
                text = source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {source}: {exc}") from None
        elif edit:
            text = _edit(version.card)
        else:
            print(version.card)
            return
        if not text.strip():
            raise ConfigError("the card is empty: nothing was changed")
        registry.set_card(version, text)
    console.print(f"Card of {version.ref} updated")


def _edit(text: str) -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False, encoding="utf-8") as f:
        f.write(text)
    try:
        subprocess.run([*editor.split(), f.name], check=True)
        return Path(f.name).read_text(encoding="utf-8")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(f"the editor {editor!r} failed: {exc}") from None
    finally:
        Path(f.name).unlink(missing_ok=True)


@app.command("promote")
def promote_command(
    ref: str = typer.Argument(..., help="The candidate: NAME@VERSION."),
    alias: str = typer.Option(..., "--alias", "-a", help="The alias to move, e.g. champion."),
    stack: str = typer.Option(..., "--stack", "-s", help="The stack it is evaluated in."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The eval dataset (REF)."),
    gate: list[str] = typer.Option(
        [],
        "--gate",
        "-g",
        help="METRIC OP VALUE, or METRIC OP CHANGE vs ALIAS [at 95%] (repeatable).",
    ),
    model_alias: str = typer.Option("chat", "--model-alias", help="The stack's model alias."),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the audit log)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Evaluate the candidate (and the alias' holder), check the gates, and move the alias
    only if every gate passes. Exit 1 when a gate fails (the alias is left untouched)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from slmops.registry.promotion import promote
    from slmops.registry.store import ModelRegistry

    bar = Progress(
        TextColumn("eval {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    with open_workspace(workspace) as ws, bar:
        result = promote(
            ws,
            ModelRegistry(ws),
            ref=ref,
            alias=alias,
            stack=stack,
            dataset=dataset,
            gates=gate,
            model_alias=model_alias,
            reason=reason,
            on_progress=progress,
        )
    holder = f"{result.candidate.name}@{result.holder.version}" if result.holder else "nobody"
    console.print(
        f"Candidate {result.candidate.ref} (eval run {result.candidate_run[:12]}); "
        f"{alias} held by {holder}"
    )
    for check in result.checks:
        style = "green" if check.passed else "red"
        verdict = "passed" if check.passed else "FAILED"
        console.print(f"[{style}]gate {escape(check.gate)} {verdict}[/]: {escape(check.detail)}")
    if result.promoted:
        console.print(
            f"[green]{result.candidate.name}@{alias} -> version {result.candidate.version}[/]"
        )
        return
    error_console.print(
        f"[red]{alias} unchanged[/] ({holder}): {len(result.failed)} gate(s) failed"
    )
    raise typer.Exit(1)


@app.command("rollback")
def rollback_command(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option(..., "--alias", "-a", help="The alias to move back."),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the audit log)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Move an alias back to the version it pointed at before its last promotion."""
    from slmops.registry.promotion import rollback
    from slmops.registry.store import ModelRegistry, split_model_ref

    name, _ = split_model_ref(name)
    with open_workspace(workspace) as ws:
        was, now = rollback(ws, ModelRegistry(ws), name=name, alias=alias, reason=reason)
    target = f"version {now}" if now is not None else "nothing (removed)"
    console.print(f"[green]{name}@{alias}[/]: version {was} -> {target}")
