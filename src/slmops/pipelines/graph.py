"""A pipeline's steps as a graph (Mermaid, DOT, SVG through the composition core's Graph),
coloured by a run's step states when a run is given."""

from __future__ import annotations

import re

from slmops.core.graph import Edge, Graph, Node
from slmops.pipelines.records import RunRecord
from slmops.pipelines.spec import PipelineSpec

STATE_COLOURS = {
    "ok": "#c8f0c8",
    "cached": "#dde8dd",
    "running": "#fff2b3",
    "pending": "#f4f4f4",
    "failed": "#f6b8b8",
    "gate_failed": "#f9d3a8",
    "skipped": "#e4e4e4",
    "interrupted": "#f9e0a8",
}


def _node_id(step: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", step)


def pipeline_graph(spec: PipelineSpec, run: RunRecord | None = None) -> Graph:
    graph = Graph()
    for name in spec.order:
        step = spec.steps[name]
        label = f"{name}\n({step.op})"
        fill = None
        record = run.step(name) if run else None
        if record is not None:
            label += f"\n{record.status}"
            if record.duration_s is not None:
                label += f" {record.duration_s:.1f}s"
            fill = STATE_COLOURS.get(record.status)
        graph.nodes.append(Node(_node_id(name), label, "box", None, fill))
    for name in spec.order:
        step = spec.steps[name]
        for upstream in sorted(step.upstream(), key=spec.order.index):
            # an edge that carries outputs (a ${...} reference) is solid; a bare "after" dashed
            carries = upstream in step.references()
            graph.edges.append(Edge(_node_id(upstream), _node_id(name), None, not carries))
    return graph
