from __future__ import annotations

from typing import Literal

import pytest

from slmops.core import Chain, Concurrent, Decision, Function, LLMCall, Map, Retry
from slmops.errors import GraphRenderError
from tests.conftest import requires_graphviz
from tests.fakes import ScriptedChatModel


def prep(x: str) -> str:
    return x


def left(x: str) -> str:
    return x


def right(x: str) -> str:
    return x


def pick(x: str) -> Literal["left", "right"]:
    return "left"


def backup(x: str) -> str:
    return x


def build() -> Chain:
    llm = LLMCall(
        "generate",
        model=ScriptedChatModel(["x"]),
        prompt="{{ input }}",
        input_type=str,
        retry=Retry(attempts=3),
        cache=True,
    )
    return Chain(
        "app",
        [
            Function(prep, fallback=Function(backup)),
            Concurrent("both", [Function(left), llm], max_concurrency=2),
            Function(
                lambda pair: pair[0], name="first", input_type=tuple[str, str], output_type=str
            ),
            Decision("route", pick, {"left": Function(left), "right": Function(right)}),
        ],
    )


def test_mermaid_shows_sequence_fan_out_decisions_and_model_calls():
    text = build().graph().mermaid()
    assert text.startswith("flowchart TD")
    assert 'subgraph c1["chain: app"]' in text
    assert '{{"generate<br/>str → str<br/>[retry x3, cached]<br/>model: fake:scripted"}}' in text
    assert '{"route<br/>router: pick"}' in text
    assert "both<br/>fan-out (max 2)" in text
    assert "-->|left|" in text and "-->|right|" in text
    assert "-.->|on failure|" in text


def test_edges_follow_the_structure():
    graph = build().graph()
    label = {n.id: n.label.split("\n")[0] for n in graph.nodes}
    edges = {(label[e.source], label[e.target]) for e in graph.edges}
    assert ("input", "prep") in edges
    assert ("prep", "both") in edges and ("backup", "both") in edges
    assert ("both", "left") in edges and ("both", "generate") in edges
    assert ("left", "join") in edges and ("generate", "join") in edges
    assert ("join", "first") in edges and ("first", "route") in edges
    assert ("route", "right") in edges and ("right", "output") in edges


def test_dot_output_is_valid_graphviz_text():
    dot = build().graph().dot()
    assert dot.startswith("digraph slmops {") and dot.rstrip().endswith("}")
    assert "subgraph cluster_c1" in dot and "shape=hexagon" in dot and "shape=diamond" in dot


def test_map_draws_its_item_step():
    graph = Map("each", Function(prep)).graph()
    assert "for each item" in graph.mermaid() and "-->|item|" in graph.mermaid()


@requires_graphviz
def test_render_svg_and_png(tmp_path):
    graph = build().graph()
    svg = graph.render(tmp_path / "app.svg").read_text()
    assert "<svg" in svg and "generate" in svg
    png = graph.render(tmp_path / "app.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_render_refuses_unknown_formats(tmp_path):
    with pytest.raises(GraphRenderError, match="use a .svg or .png"):
        build().graph().render(tmp_path / "app.gif")
