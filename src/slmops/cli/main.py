"""The ``slmops`` entry point."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from slmops.cli import (
    batch,
    clean,
    data,
    evaluate,
    feedback,
    graph,
    model,
    monitor,
    pipeline,
    prompt,
    quickstart,
    review,
    serve,
    stacks,
    trace,
    train,
    ui,
)
from slmops.cli.common import error_console
from slmops.errors import SlmopsError

app = typer.Typer(
    name="slmops",
    help="Operate small language models end to end.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("quickstart")(quickstart.quickstart_command)
app.command("graph")(graph.graph_command)
app.command("init")(stacks.init_command)
app.command("run")(stacks.run_command)
app.command("batch")(batch.batch_command)
app.command("clean")(clean.clean_command)
app.command("chat")(stacks.chat_command)
app.command("serve")(serve.serve_command)
app.command("review")(review.review_command)
app.command("ui")(ui.ui_command)
app.add_typer(stacks.app, name="stack")
app.add_typer(trace.app, name="trace")
app.add_typer(data.app, name="data")
app.add_typer(prompt.app, name="prompt")
app.add_typer(evaluate.app, name="eval")
app.add_typer(train.app, name="train")
app.add_typer(model.app, name="model")
app.add_typer(feedback.app, name="feedback")
app.add_typer(monitor.app, name="monitor")
app.add_typer(pipeline.app, name="pipeline")


def main() -> None:
    """Run the CLI; slmops errors become one red line and exit status 1. Usage errors are
    reported by Typer itself (exit status 2)."""
    try:
        app()
    except SlmopsError as exc:
        error_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
