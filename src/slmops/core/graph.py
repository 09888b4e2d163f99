"""Graphs of composed steps, drawn from their declared structure: Mermaid text, Graphviz
DOT, and SVG/PNG rendered locally by Graphviz (never by an online service)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slmops.errors import GraphRenderError

if TYPE_CHECKING:
    from slmops.core.step import Step

ImageFormat = Literal["svg", "png"]


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    shape: str  # box | hexagon | diamond | fork | terminal
    cluster: str | None
    fill: str | None = None  # a background colour (#rrggbb), e.g. a pipeline step's state


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None
    dashed: bool = False


@dataclass(frozen=True)
class Cluster:
    id: str
    label: str
    parent: str | None


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)

    def __str__(self) -> str:
        return self.mermaid()

    # --- Mermaid -------------------------------------------------------------------------

    def mermaid(self) -> str:
        lines = ["flowchart TD"]

        def emit(cluster_id: str | None, indent: str) -> None:
            for node in self.nodes:
                if node.cluster == cluster_id:
                    lines.append(f"{indent}{node.id}{_mermaid_shape(node)}")
            for cluster in self.clusters:
                if cluster.parent == cluster_id:
                    lines.append(f'{indent}subgraph {cluster.id}["{_mermaid_text(cluster.label)}"]')
                    emit(cluster.id, indent + "  ")
                    lines.append(f"{indent}end")

        emit(None, "  ")
        for edge in self.edges:
            arrow = "-.->" if edge.dashed else "-->"
            label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
            lines.append(f"  {edge.source} {arrow}{label} {edge.target}")
        lines.extend(f"  style {node.id} fill:{node.fill}" for node in self.nodes if node.fill)
        return "\n".join(lines) + "\n"

    # --- Graphviz ------------------------------------------------------------------------

    def dot(self) -> str:
        lines = [
            "digraph slmops {",
            '  rankdir=TB; graph [fontname="Helvetica", fontsize=12];',
            '  node [fontname="Helvetica", fontsize=11]; edge [fontname="Helvetica", fontsize=10];',
        ]

        def emit(cluster_id: str | None, indent: str) -> None:
            for node in self.nodes:
                if node.cluster == cluster_id:
                    style = _DOT_SHAPES[node.shape]
                    if node.fill:
                        style += f', style="rounded,filled", fillcolor="{node.fill}"'
                    lines.append(f"{indent}{node.id} [label={_dot_text(node.label)}, {style}];")
            for cluster in self.clusters:
                if cluster.parent == cluster_id:
                    lines.append(f"{indent}subgraph cluster_{cluster.id} {{")
                    label = _dot_text(cluster.label)
                    lines.append(f'{indent}  label={label}; style="rounded,dashed"; color=gray50;')
                    emit(cluster.id, indent + "  ")
                    lines.append(f"{indent}}}")

        emit(None, "  ")
        for edge in self.edges:
            attributes = []
            if edge.label:
                attributes.append(f"label={_dot_text(edge.label)}")
            if edge.dashed:
                attributes.append("style=dashed, color=firebrick")
            suffix = f" [{', '.join(attributes)}]" if attributes else ""
            lines.append(f"  {edge.source} -> {edge.target}{suffix};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render_bytes(self, fmt: ImageFormat = "svg") -> bytes:
        """The graph as an SVG or PNG image, rendered by the local Graphviz ``dot``."""
        import graphviz

        try:
            return graphviz.Source(self.dot()).pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise GraphRenderError(
                "Graphviz's 'dot' program is not installed; install it (Debian/Ubuntu: "
                "apt-get install graphviz, macOS: brew install graphviz) or use the Mermaid text"
            ) from None
        except graphviz.CalledProcessError as exc:
            raise GraphRenderError(f"Graphviz failed: {exc}") from exc

    def render(self, path: str | Path) -> Path:
        """Write the image to ``path``; its suffix (.svg or .png) picks the format."""
        target = Path(path)
        fmt = target.suffix.lstrip(".").lower()
        if fmt not in ("svg", "png"):
            raise GraphRenderError(f"cannot render to {target.name}: use a .svg or .png name")
        target.write_bytes(self.render_bytes(fmt))  # type: ignore[arg-type]
        return target

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, str]:  # Jupyter
        return {"text/markdown": f"```mermaid\n{self.mermaid()}```", "text/plain": self.mermaid()}


_DOT_SHAPES = {
    "box": 'shape=box, style="rounded,filled", fillcolor="#eef4ff"',
    "hexagon": 'shape=hexagon, style=filled, fillcolor="#fff2cc"',
    "diamond": 'shape=diamond, style=filled, fillcolor="#fde2e2"',
    "fork": 'shape=box, style="filled", fillcolor="#e2f0d9", height=0.3',
    "terminal": 'shape=oval, style=filled, fillcolor="#dddddd"',
    "retrieval": 'shape=cylinder, style=filled, fillcolor="#e8e0f5"',
}
_MERMAID_SHAPES = {
    "box": ('["', '"]'),
    "hexagon": ('{{"', '"}}'),
    "diamond": ('{"', '"}'),
    "fork": ('[["', '"]]'),
    "terminal": ('(["', '"])'),
    "retrieval": ('[("', '")]'),
}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def _mermaid_shape(node: Node) -> str:
    left, right = _MERMAID_SHAPES[node.shape]
    return f"{left}{_mermaid_text(node.label)}{right}"


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class GraphBuilder:
    """Collects nodes, edges and clusters while steps draw themselves."""

    def __init__(self) -> None:
        self.graph = Graph()
        self._cluster_stack: list[str] = []

    def node(self, label: str, shape: str = "box") -> str:
        node_id = f"n{len(self.graph.nodes) + 1}"
        parent = self._cluster_stack[-1] if self._cluster_stack else None
        self.graph.nodes.append(Node(node_id, label, shape, parent))
        return node_id

    def edge(
        self, source: str, target: str, *, label: str | None = None, dashed: bool = False
    ) -> None:
        self.graph.edges.append(Edge(source, target, label, dashed))

    @contextmanager
    def cluster(self, label: str) -> Iterator[str]:
        cluster_id = f"c{len(self.graph.clusters) + 1}"
        parent = self._cluster_stack[-1] if self._cluster_stack else None
        self.graph.clusters.append(Cluster(cluster_id, label, parent))
        self._cluster_stack.append(cluster_id)
        try:
            yield cluster_id
        finally:
            self._cluster_stack.pop()

    def add(self, step: Step[Any, Any]) -> tuple[list[str], list[str]]:
        """Draw ``step`` (and its fallback, joined by a dashed 'on failure' edge)."""
        entries, exits = step.draw(self)
        if step.fallback is None:
            return entries, exits
        fallback_entries, fallback_exits = self.add(step.fallback)
        for source in exits:
            for target in fallback_entries:
                self.edge(source, target, label="on failure", dashed=True)
        return entries, exits + fallback_exits

    def sequence(self, label: str, steps: Sequence[Step[Any, Any]]) -> tuple[list[str], list[str]]:
        """Draw ``steps`` one after another inside a cluster named ``label``."""
        with self.cluster(label):
            entries: list[str] = []
            exits: list[str] = []
            for step in steps:
                step_entries, step_exits = self.add(step)
                for source in exits:
                    for target in step_entries:
                        self.edge(source, target)
                entries = entries or step_entries
                exits = step_exits
        return entries, exits

    def branches(
        self, label: str, branches: Mapping[str, Step[Any, Any]]
    ) -> tuple[list[str], list[str]]:
        """Draw a diamond named ``label`` with one labelled edge to each branch."""
        decision = self.node(label, "diamond")
        exits: list[str] = []
        for key, branch in branches.items():
            entries, branch_exits = self.add(branch)
            for target in entries:
                self.edge(decision, target, label=key)
            exits.extend(branch_exits)
        return [decision], exits


def build_graph(step: Step[Any, Any]) -> Graph:
    builder = GraphBuilder()
    start = builder.node("input", "terminal")
    end = builder.node("output", "terminal")
    entries, exits = builder.add(step)
    for target in entries:
        builder.edge(start, target)
    for source in exits:
        builder.edge(source, end)
    return builder.graph
