"""The stack pages through the ASGI app: the list, a stack's graph, manifest and lock, and the
playground (a whole-page run without JavaScript, the event stream with it, who may run)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slmops.apps.discovery import workspace_stacks
from slmops.apps.lock import write_lock
from slmops.apps.manifest import load_manifest
from slmops.apps.templates import ensure_workspace_stack
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from slmops.store.traces import get_trace
from slmops.ui import create_console
from slmops.ui.app import Console
from slmops.ui.auth import ConsoleAuth
from slmops.ui.stacks import Playground, find_entry
from tests.conftest import requires_graphviz
from tests.ui.conftest import KEY

SCRIPT = "<script>alert(1)</script>"
ECHO = (
    '[stack]\nname = "echo"\ndescription = "Says it back <b>loudly</b>"\n'
    '[[steps]]\nname = "say"\nkind = "function"\ncall = "echo_steps:say"\ninput = "input.text"\n'
)
ADDER = (
    '[stack]\nname = "adder"\n[stack.input]\na = "integer"\nb = "integer"\n'
    '[[steps]]\nname = "add"\nkind = "function"\ncall = "adder_steps:add"\n'
)

ADDER_CODE = (
    "from pydantic import BaseModel\n"
    "class Pair(BaseModel):\n    a: int\n    b: int\n"
    "def add(pair: Pair) -> str:\n    return str(pair.a + pair.b)\n"
)


def write_stack(home: Path, name: str, manifest: str, module: str = "", code: str = "") -> Path:
    folder = home / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slmops.toml").write_text(manifest)
    if module:
        (folder / f"{module}.py").write_text(code)
    return folder


@pytest.fixture
def stacks(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workspace's stacks: echo and adder (Python steps: no model), chatty (the chat
    template), and a folder whose manifest is broken."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current directory holds no stacks
    home = workspace_stacks(workspace)
    write_stack(
        home, "echo", ECHO, "echo_steps", "def say(text: str) -> str:\n    return 'echo: ' + text\n"
    )
    write_stack(home, "adder", ADDER, "adder_steps", ADDER_CODE)
    write_stack(home, "broken", '[stack]\nname = "broken"\n')
    ensure_workspace_stack("chatty", "chat", workspace)
    return home


@pytest.fixture
def stack_client(workspace: Workspace, stacks: Path) -> Iterator[TestClient]:
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        yield client


def events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a response body, as (event, data)."""
    found = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_the_list_shows_every_stack_with_its_template_models_and_lock(stack_client: TestClient):
    page = stack_client.get("/stacks")
    assert page.status_code == 200
    text = page.text
    for name in ("adder", "chatty", "echo"):
        assert f'href="/stacks/{name}"' in text
    row = re.search(r'href="/stacks/chatty">chatty</a></td>(.*?)</tr>', text, re.S)
    assert row is not None
    assert "<td>chat</td>" in row.group(1) and "local:smollm2-135m" in row.group(1)
    assert "keeps the conversation" in row.group(1) and ">no<" in row.group(1)
    assert "broken" in text and "steps" in text  # its problem is named, not a crash
    assert "Says it back &lt;b&gt;loudly&lt;/b&gt;" in text
    assert 'href="/stacks"' in text  # the nav link


def test_a_stack_page_shows_its_graph_manifest_versions_and_playground(stack_client: TestClient):
    page = stack_client.get("/stacks/chatty")
    assert page.status_code == 200
    text = page.text
    assert "flowchart TD" in text and "reply" in text  # the Mermaid text
    assert "[stack]" in text and "template = &#34;chat&#34;" in text  # the manifest
    assert 'href="/prompts/chatty-reply?v=1">chatty-reply@1</a>' in text
    assert "No <code>slmops.lock</code>" in text
    assert 'id="playground"' in text and 'data-stream="/stacks/chatty/stream"' in text
    assert "message (or a JSON object with message, history)" in text
    assert '<script src="/static/playground.js" defer></script>' in text
    adder = stack_client.get("/stacks/adder").text
    assert "input: a JSON object with a, b" in adder
    assert 'placeholder="{&#34;a&#34;: &#34;&#34;, &#34;b&#34;: &#34;&#34;}"' in adder


@requires_graphviz
def test_the_graph_is_an_svg_image_under_a_strict_policy(stack_client: TestClient):
    page = stack_client.get("/stacks/echo").text
    assert '<img src="/stacks/echo/graph.svg"' in page
    svg = stack_client.get("/stacks/echo/graph.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert "<svg" in svg.text and ">say</text>" in svg.text and "<script" not in svg.text


def test_a_broken_manifest_is_shown_with_its_problem(stack_client: TestClient):
    page = stack_client.get("/stacks/broken")
    assert page.status_code == 200
    assert 'class="flash error"' in page.text and "steps" in page.text
    assert 'id="playground"' not in page.text
    assert stack_client.post("/stacks/broken/run", data={"input": "hi"}).status_code == 400


def test_the_lock_is_shown_current_with_newer_references_then_stale(
    stack_client: TestClient, workspace: Workspace, stacks: Path
):
    loaded = load_manifest(stacks / "chatty" / "slmops.toml")
    write_lock(loaded, workspace)
    page = stack_client.get("/stacks/chatty").text
    assert '<span class="status ok">current</span>' in page and "tag locked" in page
    assert re.search(r"<td>prompts</td><td>reply</td><td[^>]*>chatty-reply@1</td>", page)
    assert "(differs)" not in page
    reply = PromptRegistry(workspace).get("chatty-reply")
    PromptRegistry(workspace).add("chatty-reply", reply.template + "Be kind.\n")
    page = stack_client.get("/stacks/chatty").text
    assert "chatty-reply@2 (differs)" in page  # @latest moved on; the lock still pins 1
    assert "chatty-reply@1</a>" in page  # and the stack runs on what the lock pins
    manifest = stacks / "chatty" / "slmops.toml"
    manifest.write_text(manifest.read_text().replace("max_tokens = 160", "max_tokens = 100"))
    page = stack_client.get("/stacks/chatty").text
    assert '<span class="status error">stale</span>' in page
    assert "was made for an earlier version of slmops.toml" in page


def test_a_run_without_javascript_answers_with_the_whole_page(
    stack_client: TestClient, workspace: Workspace
):
    page = stack_client.post("/stacks/echo/run", data={"input": SCRIPT})
    assert page.status_code == 200
    assert 'id="run-answer">echo: &lt;script&gt;alert(1)&lt;/script&gt;</p>' in page.text
    assert SCRIPT not in page.text
    match = re.search(r'trace <a class="mono" href="/traces/([0-9a-f]{32})">', page.text)
    assert match is not None
    trace, spans = get_trace(workspace.engine, match.group(1))
    assert trace["name"] == "echo" and any(s["name"] == "say" for s in spans)
    assert f">{SCRIPT}</textarea>" not in page.text and "&lt;/script&gt;</textarea>" in page.text


def test_the_stream_sends_the_answer_then_its_trace_and_versions(
    stack_client: TestClient, workspace: Workspace
):
    response = stack_client.post("/stacks/echo/stream", data={"input": "hello"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    found = events(response.text)
    assert [name for name, _ in found] == ["start", "token", "done"]
    assert found[1][1] == {"text": "echo: hello"}  # a Python step answers in one piece
    done = found[2][1]
    assert done["answer"] == "echo: hello" and done["citations"] == []
    assert done["trace_url"] == f"/traces/{done['trace_id']}"
    assert get_trace(workspace.engine, done["trace_id"])[0]["status"] == "ok"
    assert stack_client.get(done["trace_url"]).status_code == 200


def test_json_input_fills_several_fields_and_bad_input_is_named(stack_client: TestClient):
    page = stack_client.post("/stacks/adder/run", data={"input": '{"a": 2, "b": 3}'})
    assert page.status_code == 200 and 'id="run-answer">5</p>' in page.text
    bad = stack_client.post("/stacks/adder/run", data={"input": '{"a": 2,'})
    assert bad.status_code == 400
    assert "input looks like JSON but does not parse" in bad.text
    assert "{&#34;a&#34;: 2,</textarea>" in bad.text  # what was typed is kept
    text = stack_client.post("/stacks/adder/run", data={"input": "two and three"})
    assert text.status_code == 400 and "takes JSON input with fields a, b" in text.text
    empty = stack_client.post("/stacks/echo/stream", data={"input": "  "})
    assert empty.status_code == 400 and "input: type a question" in empty.text
    failed = events(stack_client.post("/stacks/adder/stream", data={"input": "{}"}).text)
    assert failed[-1][0] == "error" and "Field required" in failed[-1][1]["message"]


def test_unknown_stacks_are_404_and_a_url_never_names_another_folder(stack_client: TestClient):
    for url in ("/stacks/nope", "/stacks/nope/graph.svg", "/stacks/..%2F..%2Fetc"):
        page = stack_client.get(url)
        assert page.status_code == 404, url
    page = stack_client.get("/stacks/nope")
    assert "no stack named &#39;nope&#39; (stacks: adder, broken, chatty, echo)" in page.text
    assert stack_client.post("/stacks/nope/stream", data={"input": "x"}).status_code == 404


def test_running_needs_the_key_and_a_page_of_this_console(workspace: Workspace, stacks: Path):
    with TestClient(
        create_console(workspace, api_keys=[KEY]), base_url="http://127.0.0.1"
    ) as client:
        assert client.get("/stacks", follow_redirects=False).status_code == 303
        assert client.post("/stacks/echo/stream", data={"input": "hi"}).status_code == 401
        assert client.post("/stacks/echo/run", data={"input": "hi"}).status_code == 401
        bearer = {"Authorization": f"Bearer {KEY}"}
        cross = client.post(
            "/stacks/echo/stream",
            data={"input": "hi"},
            headers={**bearer, "Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        ok = client.post("/stacks/echo/stream", data={"input": "hi"}, headers=bearer)
        assert ok.status_code == 200 and events(ok.text)[-1][0] == "done"


def test_a_stack_is_built_once_per_version(workspace: Workspace, stacks: Path):
    playground = Playground(Console(workspace, ConsoleAuth([])))
    entry = find_entry(playground.console, "echo")
    first = playground.stack(entry)
    assert playground.stack(entry) is first
    (stacks / "echo" / "echo_steps.py").write_text(
        "def say(text: str) -> str:\n    return 'ECHO: ' + text\n"
    )
    edited = playground.stack(entry)
    assert edited is not first and edited.version != first.version
    assert playground.stack(entry) is edited


@pytest.mark.model
def test_the_playground_streams_a_rag_answer_with_sources(
    workspace: Workspace, handbook: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    ensure_workspace_stack("handbook", "rag", workspace, answer="generative")
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        response = client.post(
            "/stacks/handbook/stream", data={"input": "How do I install slmops?"}
        )
    found = events(response.text)
    tokens = [data["text"] for name, data in found if name == "token"]
    assert found[0][0] == "start" and found[-1][0] == "done"
    assert len(tokens) > 3  # the model's text arrived piece by piece
    done = found[-1][1]
    assert done["versions"]["corpora"] == {"docs": "docs@1"}
    assert done["refused"] or done["citations"]
    assert all(".md" in citation["source"] for citation in done["citations"])
    assert get_trace(workspace.engine, done["trace_id"])[0]["name"] == "handbook"
