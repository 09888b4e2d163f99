"""A trace's spans laid out as a waterfall: one row per span, in tree order, each bar placed
by its start and end relative to the whole trace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KIND_ICONS = {
    "chain": "⛓",
    "function": "ƒ",
    "llm": "✦",
    "decision": "◆",
    "concurrent": "⫘",
    "map": "⫘",
    "retrieval": "⌕",
    "cite": "❝",
    "stack": "▣",
}
_IO_KEYS = ("slmops.input", "gen_ai.prompt", "slmops.output")
_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")


@dataclass
class SpanRow:
    """One span as the waterfall draws it (offsets and widths in % of the trace)."""

    span: dict[str, Any]
    depth: int
    offset_pct: float
    width_pct: float
    duration_ms: float
    start_ms: float  # after the trace's first span started
    icon: str
    io: list[tuple[str, Any]]  # (label, stored value) of inputs, prompts and outputs
    attributes: list[tuple[str, Any]]  # everything else worth showing
    tokens: tuple[int, int] | None  # (prompt, completion) of a model call

    @property
    def span_id(self) -> str:
        return str(self.span["span_id"])


def _ordered(span_rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Depth-first: each span followed by its children (by start); orphans at the top."""
    ids = {s["span_id"] for s in span_rows}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in span_rows:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[dict[str, Any], int]] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        ordered.append((span, depth))
        stack += [(child, depth + 1) for child in reversed(children.get(span["span_id"], []))]
    return ordered


def waterfall(span_rows: Sequence[dict[str, Any]]) -> list[SpanRow]:
    """The rows of the waterfall of a trace's spans (as :func:`get_trace` returns them)."""
    if not span_rows:
        return []
    first = min(int(s["start_ns"]) for s in span_rows)
    last = max(int(s["end_ns"]) for s in span_rows)
    total = max(last - first, 1)
    rows = []
    for span, depth in _ordered(span_rows):
        start, end = int(span["start_ns"]), max(int(span["end_ns"]), int(span["start_ns"]))
        attributes = span.get("attributes") or {}
        io = [(key.split(".")[-1], attributes[key]) for key in _IO_KEYS if key in attributes]
        rest = [
            (key, value)
            for key, value in sorted(attributes.items())
            if key not in _IO_KEYS and key not in _TOKEN_KEYS
        ]
        tokens = (
            (
                int(attributes.get(_TOKEN_KEYS[0], 0)),
                int(attributes.get(_TOKEN_KEYS[1], 0)),
            )
            if any(key in attributes for key in _TOKEN_KEYS)
            else None
        )
        offset = (start - first) / total * 100
        rows.append(
            SpanRow(
                span=span,
                depth=depth,
                offset_pct=round(offset, 3),
                # at least a sliver, and never past the right edge
                width_pct=round(min(max((end - start) / total * 100, 0.4), 100 - offset), 3),
                duration_ms=(end - start) / 1e6,
                start_ms=(start - first) / 1e6,
                icon=KIND_ICONS.get(str(span["kind"]), "•"),
                io=io,
                attributes=rest,
                tokens=tokens,
            )
        )
    return rows
