"""The ``slmops`` entry point."""

from __future__ import annotations

import sys

import typer

from slmops.cli import graph, quickstart, trace
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
app.add_typer(trace.app, name="trace")


def main() -> None:
    """Run the CLI; slmops errors become one red line and exit status 1."""
    try:
        app(standalone_mode=False)
    except SlmopsError as exc:
        error_console.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        error_console.print("[red]interrupted[/]")
        sys.exit(130)
    except (typer.Exit, typer.Abort) as exc:
        sys.exit(getattr(exc, "exit_code", 1))
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
