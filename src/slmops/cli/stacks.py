"""App stack commands: ``slmops init``, ``run``, ``chat`` and ``slmops stack ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from slmops.cli.choices import DEFAULT_ANSWER_MODE, DEFAULT_MODEL, TEMPLATES
from slmops.cli.common import WorkspaceOption, console, open_workspace
from slmops.errors import ConfigError, GraphRenderError

if TYPE_CHECKING:
    from slmops.apps.citations import SourcedAnswer
    from slmops.apps.stack import Stack
    from slmops.store.workspace import Workspace

app = typer.Typer(help="List, draw and lock app stacks.", no_args_is_help=True)

ModelOption = typer.Option(
    [], "--model", "-m", help="Replace a model: ALIAS=URI (e.g. chat=gguf:/models/m.gguf)."
)
NoLockOption = typer.Option(
    False, "--no-lock", help="Ignore slmops.lock and use the manifest's references as written."
)
SetOption = typer.Option(
    [], "--set", help="Replace a setting: KEY=VALUE (e.g. answer=hybrid for a rag stack)."
)


def init_command(
    name: str = typer.Argument(..., help="Stack name (also its folder name)."),
    template: str = typer.Option(
        "rag", "--template", "-t", help=f"One of: {', '.join(TEMPLATES)}."
    ),
    directory: Path = typer.Option(Path(), "--dir", help="Where to create the stack folder."),
    corpus: str = typer.Option("docs", "--corpus", "-c", help="Corpus the stack reads."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Chat model URI."),
    answer: str = typer.Option(
        DEFAULT_ANSWER_MODE,
        "--answer",
        help="A rag stack's answer mode: extractive, hybrid or generative (settings.answer).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Write a working app stack from a template and register its prompts."""
    from slmops.apps.templates import init_stack

    with open_workspace(workspace) as ws:
        created = init_stack(
            name, template, ws, directory=directory, corpus=corpus, model=model, answer=answer
        )
    for stack in created:
        console.print(
            f"Created stack [bold]{stack.name}[/] ({stack.template}) in {stack.path.parent}"
            f"  prompts: {', '.join(stack.prompts)}"
        )
    first = created[0]
    needs_corpus = first.template in ("rag", "synth", "router")
    console.print("Next:")
    if needs_corpus:
        console.print(f"  slmops data ingest PATH --corpus {corpus}   # your documents")
    example = {
        "synth": "'{\"n\": 5}'",
        "redteam": "'{\"n\": 2}'",
        "judge": '\'{"question": "...", "answer": "...", "reference": "..."}\'',
    }.get(first.template, '"your question"')
    console.print(f"  slmops run {name} {example}")
    if first.template in ("rag", "chat", "router"):
        console.print(f"  slmops chat {name}")


def ensure_stack(ws: Workspace, name: str, template: str, **values: str) -> None:
    """Write a workspace stack from a template the first time a command needs it."""
    from slmops.apps.templates import ensure_workspace_stack

    created = ensure_workspace_stack(name, template, ws, **values)
    if created is not None:
        console.print(f"Created stack [bold]{name}[/] in {created.path.parent.parent}")


def print_versions(stack: Stack) -> None:
    summary = stack.resolved.summary()
    pinned = "locked" if stack.resolved.locked else "unlocked"
    parts = [
        *(f"corpus {ref}" for ref in summary["corpora"].values()),
        *(f"prompt {ref}" for ref in summary["prompts"].values()),
        *(f"model {uri}" for uri in dict.fromkeys(summary["models"].values())),
    ]
    console.print(f"Versions ({pinned}): " + ", ".join(parts), highlight=False)


def print_sources(answer: SourcedAnswer) -> None:
    if answer.refused:
        console.print(f"[yellow]Refused:[/] {escape(answer.reason or '')}")
        return
    # an extracted answer's sentences are cited with their match to the question
    measure = "score" if answer.extracted else "support"
    table = Table("#", "source", measure, "excerpt", box=None, show_header=True)
    for citation in answer.citations:
        table.add_row(
            f"[{citation.n}]", citation.source, f"{citation.support:.2f}", citation.excerpt
        )
    console.print("[bold]Sources[/]")
    console.print(table)


def print_output(output: Any, title: str) -> None:
    from pydantic import BaseModel
    from rich.json import JSON

    from slmops.apps.citations import SourcedAnswer
    from slmops.apps.stack import to_plain

    if isinstance(output, SourcedAnswer):
        style = "yellow" if output.refused else "green"
        how = "the passages' own sentences" if output.extracted else None
        console.print(
            Panel(
                escape(output.answer),
                title=f"[bold]{escape(title)}[/]",
                subtitle=how,
                border_style=style,
            )
        )
        print_sources(output)
    elif isinstance(output, str):
        console.print(
            Panel(escape(output), title=f"[bold]{escape(title)}[/]", border_style="green")
        )
    else:
        plain = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
        console.print(JSON(json.dumps(to_plain(plain), ensure_ascii=False)))


def model_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        alias, sep, uri = pair.partition("=")
        if not sep or not alias or not uri:
            raise ConfigError(f"--model {pair!r}: write ALIAS=URI, e.g. chat=local:smollm2-135m")
        overrides[alias] = uri
    return overrides


def setting_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as settings; a VALUE that parses as JSON (a number, true, a
    list) is that value, anything else is text."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. answer=hybrid")
        try:
            overrides[key.strip()] = json.loads(text)
        # Not only JSONDecodeError: json.loads raises a plain ValueError for an integer over
        # 4300 digits and RecursionError for deep nesting. Such a value is text, as documented.
        except (ValueError, RecursionError):
            overrides[key.strip()] = text
    return overrides


def _build(ref: str, ws: Workspace, no_lock: bool, models: list[str], settings: list[str]) -> Stack:
    from slmops.apps.build import build_stack

    overrides = model_overrides(models)
    with console.status(f"Building stack {ref}..."):
        return build_stack(
            ref, ws, use_lock=not no_lock, models=overrides, settings=setting_overrides(settings)
        )


def run_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    input_text: str = typer.Argument(..., metavar="INPUT", help="Text, or a JSON object."),
    model: list[str] = ModelOption,
    setting: list[str] = SetOption,
    no_lock: bool = NoLockOption,
    as_json: bool = typer.Option(False, "--json", help="Print the output as JSON only."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Run a stack once on an input; print its output, sources, versions and trace id."""
    from slmops.apps.stack import parse_stack_input, to_plain
    from slmops.core.runtime import Runtime, use_runtime

    value = parse_stack_input(input_text)
    with open_workspace(workspace) as ws:
        built = _build(stack, ws, no_lock, model, setting)
        with console.status("Running..."), use_runtime(Runtime.from_workspace(ws)):
            result = built.invoke(value)
    if as_json:
        plain = to_plain(result.output)
        print(json.dumps({"output": plain, "trace_id": result.trace_id}, ensure_ascii=False))
        return
    print_output(result.output, input_text if isinstance(value, str) else built.stack_name)
    print_versions(built)
    console.print(f"Trace id: [bold]{result.trace_id}[/]  ({result.duration_ms:.0f} ms)")
    console.print(f"See it with: slmops trace show {result.trace_id[:12]}")


def chat_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    model: list[str] = ModelOption,
    setting: list[str] = SetOption,
    no_lock: bool = NoLockOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Chat with a stack in the terminal: answers stream as they are generated, with their
    sources. Ctrl-D or /exit ends the chat."""
    import asyncio

    from slmops.apps.citations import SourcedAnswer
    from slmops.core.runtime import Runtime, use_runtime

    with open_workspace(workspace) as ws:
        built = _build(stack, ws, no_lock, model, setting)
        runtime = Runtime.from_workspace(ws)
        field = built.text_field()
        if field is None:
            raise ConfigError(
                f"stack {built.stack_name} takes structured input "
                f"({', '.join(built.input_type.model_fields)}); use slmops run"
            )
        keeps_history = "history" in built.input_type.model_fields
        history: list[dict[str, str]] = []
        console.print(f"Chatting with [bold]{built.stack_name}[/]. Ctrl-D or /exit to leave.")
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ").strip()
            except EOFError:
                console.print()
                return
            if line in ("/exit", "/quit"):
                return
            if not line:
                continue
            value: dict[str, Any] = {field: line}
            if keeps_history:
                value["history"] = list(history)
            with use_runtime(runtime):
                output, trace_id = asyncio.run(_stream_turn(built, value))
            if isinstance(output, SourcedAnswer):
                print_sources(output)
            console.print(f"[dim]trace {trace_id[:12]}[/]")
            if keeps_history:
                reply = output.answer if isinstance(output, SourcedAnswer) else str(output)
                history += [
                    {"role": "user", "content": line},
                    {"role": "assistant", "content": reply},
                ]


async def _stream_turn(stack: Stack, value: dict[str, Any]) -> tuple[Any, str]:
    from slmops.apps.citations import SourcedAnswer
    from slmops.apps.stack import to_plain

    finished: list[tuple[Any, str]] = []
    console.print("[bold green]bot>[/] ", end="")
    streamed = False
    async for piece in stack.astream(value, on_finish=lambda out, tid: finished.append((out, tid))):
        streamed = True
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    output, trace_id = finished[0]
    if not streamed:  # nothing streamed (e.g. a classify stack): show the whole output
        shown = output.answer if isinstance(output, SourcedAnswer) else output
        console.print(
            shown if isinstance(shown, str) else json.dumps(to_plain(shown)), markup=False
        )
    else:
        console.print()
        if isinstance(output, SourcedAnswer) and output.refused:
            console.print(f"[yellow]{escape(output.answer)}[/]")
        elif isinstance(output, SourcedAnswer) and output.extracted:
            # the draft failed its check; the passages' own sentences answer instead
            console.print(f"[dim]from the passages:[/] {escape(output.answer)}")
    return output, trace_id


@app.command("list")
def list_command(workspace: Path | None = WorkspaceOption) -> None:
    """Stacks in the current directory and in the workspace's stacks/ folder."""
    from slmops.apps.discovery import list_stacks, stack_roots

    with open_workspace(workspace) as ws:
        found = list_stacks(stack_roots(ws))
    if not found:
        console.print("No stacks yet. Create one with: slmops init NAME --template rag")
        return
    table = Table("stack", "template", "steps", "depends on", "locked", "description / problem")
    for item in found:
        if item.manifest is None:
            table.add_row(
                item.path.parent.name, "", "", "", "", f"[red]{escape(item.problem or '')}[/]"
            )
            continue
        manifest = item.manifest.manifest
        locked = (item.path.parent / "slmops.lock").exists()
        table.add_row(
            manifest.stack.name,
            manifest.stack.template or "",
            str(len(manifest.steps)),
            ", ".join(manifest.stack.depends_on),
            "yes" if locked else "no",
            manifest.stack.description,
        )
    console.print(table)


@app.command("graph")
def graph_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write an .svg or .png image."),
    no_lock: bool = NoLockOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Draw a stack and the stacks inside it (Mermaid text, or an image with --out)."""
    from slmops.apps.build import build_stack

    with open_workspace(workspace) as ws:
        graph = build_stack(stack, ws, use_lock=not no_lock).graph()
    if out is None:
        console.print(graph.mermaid(), markup=False, highlight=False, soft_wrap=True)
        return
    try:
        console.print(f"Wrote {graph.render(out)}")
    except GraphRenderError as exc:
        raise ConfigError(str(exc)) from None


@app.command("lock")
def lock_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Pin every corpus and prompt reference of a stack (and of the stacks it uses) to the
    versions they name now, in slmops.lock beside each manifest."""
    from slmops.apps.build import build_stack
    from slmops.apps.lock import write_lock

    with open_workspace(workspace) as ws:
        built = build_stack(stack, ws, use_lock=False)
        for member in _stacks_in(built):
            lock = write_lock(member.manifest, ws)
            pins = [*lock.corpora.values(), *lock.prompts.values()]
            console.print(
                f"Locked [bold]{lock.stack}[/]: {', '.join(pins) or 'nothing versioned'}"
                f"  -> {member.manifest.directory / 'slmops.lock'}"
            )


def _stacks_in(stack: Stack) -> list[Stack]:
    """The stack and every stack nested in it, each once."""
    from slmops.apps.stack import Stack

    found: dict[Path, Stack] = {}
    pending: list[Any] = [stack]
    while pending:
        step = pending.pop()
        if isinstance(step, Stack):
            found.setdefault(step.manifest.path, step)
        pending.extend(step.children())
    return list(found.values())


@app.command("show")
def show_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Print a stack's manifest and what its references resolve to now."""
    from slmops.apps.build import build_stack
    from slmops.apps.manifest import load_manifest

    with open_workspace(workspace) as ws:
        built = build_stack(stack, ws)
    loaded = load_manifest(built.manifest.path)
    console.print(f"[bold]{loaded.path}[/]")
    console.print(loaded.path.read_text(encoding="utf-8"), markup=False, highlight=False)
    print_versions(built)
