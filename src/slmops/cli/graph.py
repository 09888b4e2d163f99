"""``slmops graph MODULE:OBJECT``: draw any composed step."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from slmops.cli.common import console
from slmops.errors import SlmopsError

if TYPE_CHECKING:
    from slmops.core.graph import Graph
    from slmops.core.step import Step


def load_step(reference: str) -> Step[Any, Any]:
    """Import ``module:attribute`` (a step, or a function of no arguments returning one)."""
    from slmops.core.step import Step

    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise SlmopsError(f"{reference!r} is not of the form 'module:object'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users point at modules in their project
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SlmopsError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise SlmopsError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, Step) and callable(target):
        target = target()
    if not isinstance(target, Step):
        raise SlmopsError(f"{reference} is a {type(target).__name__}, not an slmops step")
    return target


def graph_command(
    reference: str = typer.Argument(
        ..., help="module:object, e.g. slmops.apps.quickstart:build_quickstart"
    ),
    fmt: str = typer.Option("mermaid", "--format", "-f", help="mermaid, dot, svg or png."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Draw a composed step as Mermaid, DOT, SVG or PNG."""
    write_graph(load_step(reference).graph(), fmt, output, default=Path("graph"))


def write_graph(graph: Graph, fmt: str, output: Path | None, *, default: Path) -> None:
    """Print a graph as Mermaid or DOT text, or write it to a file (SVG/PNG: an image)."""
    if fmt in ("svg", "png"):
        target = (output or default).with_suffix(f".{fmt}")
        graph.render(target)
        console.print(f"wrote {target}")
        return
    if fmt not in ("mermaid", "dot"):
        raise SlmopsError(f"unknown format {fmt!r}: use mermaid, dot, svg or png")
    text = graph.mermaid() if fmt == "mermaid" else graph.dot()
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        console.print(text, markup=False, highlight=False, end="", soft_wrap=True)
