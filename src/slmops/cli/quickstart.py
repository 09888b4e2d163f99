"""``slmops quickstart``: the main job on the shipped defaults."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.panel import Panel

from slmops.apps.quickstart import DEFAULT_QUESTION, build_quickstart
from slmops.cli.common import WorkspaceOption, console, open_runtime
from slmops.core.runtime import use_runtime
from slmops.errors import GraphRenderError


def quickstart_command(
    question: str = typer.Argument(DEFAULT_QUESTION, help="The question to answer."),
    model: str = typer.Option("local:smollm2-135m", "--model", "-m", help="Chat model URI."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Answer a question with a small composed app on the shipped model; print its answer,
    graph and trace id."""
    app = build_quickstart(model)
    runtime = open_runtime(workspace)
    with console.status("Loading the model and answering..."), use_runtime(runtime):
        result = app.invoke({"question": question})
    console.print(Panel(result.output, title=f"[bold]{question}[/]", border_style="green"))
    graph = app.graph()
    console.print("[bold]Graph[/] (Mermaid):")
    console.print(graph.mermaid(), markup=False, highlight=False, soft_wrap=True)
    assert runtime.workspace is not None
    image = runtime.workspace.home / "graphs" / "quickstart.svg"
    try:
        image.parent.mkdir(parents=True, exist_ok=True)
        graph.render(image)
        console.print(f"Graph image: {image}")
    except GraphRenderError as exc:
        console.print(f"[yellow]No graph image: {exc}[/]")
    console.print(f"Trace id: [bold]{result.trace_id}[/]  ({result.duration_ms:.0f} ms)")
    console.print(f"See it with: slmops trace show {result.trace_id[:12]}")
