"""Secrets never reach traces, logs or reports (OWASP LLM Top 10: sensitive information
disclosure), and model output is shown as text (insecure output handling).

A server key (``slmops serve --api-key``) and the key of an OpenAI-compatible upstream
(``$SLMOPS_OPENAI_API_KEY``) are configured; requests, stack runs and an eval run go through
a fake upstream on loopback that, like some real servers, echoes the request's headers in
its error messages. Afterwards every file of the workspace (the SQLite database and its
WAL included), the captured log lines, the HTTP responses and the eval report are searched
for the secrets.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slmops.apps.build import build_stack
from slmops.core.llm_call import LLMCall
from slmops.core.runtime import Runtime
from slmops.errors import ModelError, SlmopsError, UnknownModelError
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.metrics import ExactMatch
from slmops.eval.report import render_report
from slmops.eval.runner import EvalRun
from slmops.models.base import ChatMessage
from slmops.models.loading import load_chat_model
from slmops.models.openai_compat import OpenAICompatChatModel
from slmops.models.uri import parse_model_uri
from slmops.prompts.registry import PromptRegistry
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.serve.logs import JSONFormatter
from slmops.store import Workspace
from tests.apps.conftest import write_manifest

SERVE_KEY = "slmops-serve-key-5f1b2c3d4e5f60718293"
REMOTE_KEY = "sk-upstream-9a8b7c6d5e4f3a2b1c0d"
WRONG_KEY = "not-the-key-0f9e8d7c6b5a49382716"
SECRETS = (SERVE_KEY, REMOTE_KEY, WRONG_KEY)
XSS = "<script>alert('answer')</script>"


class _Upstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that wants REMOTE_KEY and tells too much when it fails."""

    def log_message(self, *_args: Any) -> None:  # keep the test output quiet
        pass

    def _send(self, status: int, body: Any, *, stream: bool = False) -> None:
        data = body.encode() if stream else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "text/event-stream" if stream else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "remote", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        presented = self.headers.get("authorization", "")
        if presented != f"Bearer {REMOTE_KEY}":
            self._send(401, {"error": {"message": f"Incorrect API key provided: {presented}"}})
            return
        asked = json.dumps(body.get("messages", ""))
        if "explode" in asked:  # echoes every header, the key among them
            message = f"upstream failed; request headers: {dict(self.headers)}"
            self._send(500, {"error": {"message": message}})
            return
        if "garble" in asked:  # not a completion: slmops quotes it in its error
            self._send(200, {"unexpected": dict(self.headers)})
            return
        text = XSS if "markup" in asked else "remote answer"
        if body.get("stream"):
            chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            events = "".join(f"data: {json.dumps(e)}\n\n" for e in (chunk, last))
            self._send(200, events + "data: [DONE]\n\n", stream=True)
            return
        self._send(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "model": "remote",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2},
            },
        )


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fake upstream's model URI, with its key in the environment."""
    monkeypatch.setenv("SLMOPS_OPENAI_API_KEY", REMOTE_KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"openai:http://127.0.0.1:{server.server_address[1]}/v1#remote"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the process (httpx's, uvicorn's, slmops') as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def leaks(workspace: Workspace, *texts: str) -> list[str]:
    """Where a secret was found: workspace files (bytes, so the database too) and texts."""
    workspace.engine.dispose()  # nothing left only in a connection's memory
    found = []
    for path in sorted(workspace.home.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {s[:12]}..." for s in SECRETS if s.encode() in data]
    for number, text in enumerate(texts):
        found += [f"text {number}: {s[:12]}..." for s in SECRETS if s in text]
    return found


REMOTE_STACK = """
[stack]
name = "remote"
[stack.input]
question = "string"
[models]
chat = "{uri}"
[prompts]
answer = "remote-answer@latest"
[[steps]]
name = "answer"
kind = "llm"
prompt = "answer"
model = "chat"
input = {{ question = "input.question" }}
"""


@pytest.fixture
def remote_stack(workspace: Workspace, stacks_dir: Path, upstream: str) -> Any:
    PromptRegistry(workspace).add("remote-answer", "Answer: {{ question }}")
    write_manifest(stacks_dir, "remote", REMOTE_STACK.format(uri=upstream))
    return build_stack("remote", workspace)


def test_keys_stay_out_of_traces_logs_responses_and_reports(
    workspace: Workspace, runtime: Runtime, upstream: str, remote_stack: Any, captured_logs
) -> None:
    catalog = Catalog(
        chat_models={upstream: load_chat_model(upstream)}, stacks={"stack:remote": remote_stack}
    )
    app = create_app(catalog, runtime, ServeConfig(api_keys=(SERVE_KEY,), monitor=None))
    bodies: list[str] = []

    def chat(model: str, text: str, key: str = SERVE_KEY, **extra: Any) -> Any:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
        )
        bodies.append(response.text)
        return response

    with TestClient(app) as client:
        assert chat(upstream, "hello").json()["choices"][0]["message"]["content"] == "remote answer"
        assert chat("stack:remote", "hello").status_code == 200
        assert "remote answer" in chat(upstream, "hello", stream=True).text
        failed = chat(upstream, "explode")
        assert failed.status_code >= 500 and "[REDACTED:api_key]" in failed.text
        chat(upstream, "garble")  # not a completion: an error or an empty answer
        assert chat("stack:remote", "explode").status_code >= 500
        # failing before its first token, a stream is answered as it would be unstreamed
        streamed = chat(upstream, "explode", stream=True)
        assert streamed.status_code >= 500 and "[REDACTED:api_key]" in streamed.text
        refused = chat(upstream, "hello", key=WRONG_KEY)
        assert refused.status_code == 401
    # a stack run and an eval run outside the server, and the eval's HTML report
    assert remote_stack.run({"question": "hello"}) == "remote answer"
    with pytest.raises(ModelError, match=r"\[REDACTED:api_key\]"):
        remote_stack.run({"question": "explode"})
    Datasets(workspace).add(
        "remote-cases",
        [
            EvalCase(id="ok", input={"question": "hello"}, reference="remote answer"),
            EvalCase(id="boom", input={"question": "explode"}, reference="x"),
        ],
    )
    evaluation = EvalRun(workspace, remote_stack, [ExactMatch()])
    run_id = evaluation.start("remote-cases", 1)
    cases = Datasets(workspace).cases("remote-cases")[1]
    summary = asyncio.run(evaluation.execute(run_id, cases, runtime, concurrency=1))
    assert summary["cases"] == 2 and summary["errors"] == 1
    report = render_report(workspace, run_id)
    assert "REDACTED:api_key" in report  # the failed case's error is in the report, masked
    assert all(s.encode() not in body.encode() for s in SECRETS for body in bodies)
    assert leaks(workspace, captured_logs.getvalue(), report, *bodies) == []
    assert '"path": "/v1/chat/completions"' in captured_logs.getvalue()  # logs were captured


@pytest.mark.parametrize(
    ("broken", "call"), [("explode", "chat"), ("explode", "stream"), ("garble", "chat")]
)
def test_upstream_errors_are_masked_in_every_kind_of_call(
    upstream: str, broken: str, call: str
) -> None:
    model = OpenAICompatChatModel(parse_model_uri(upstream).location, "remote")
    messages = [ChatMessage(role="user", content=broken)]
    with pytest.raises(ModelError) as raised:
        model.chat(messages) if call == "chat" else list(model.stream(messages))
    assert REMOTE_KEY not in str(raised.value)
    assert "[REDACTED:api_key]" in str(raised.value)


def test_a_key_given_directly_is_masked_too(upstream: str, monkeypatch) -> None:
    monkeypatch.delenv("SLMOPS_OPENAI_API_KEY")
    model = OpenAICompatChatModel(parse_model_uri(upstream).location, "remote", api_key=REMOTE_KEY)
    step = LLMCall("ask", prompt="{{ input }}", input_type=str, model=model)
    with pytest.raises(SlmopsError) as raised:
        step.run("explode")
    assert REMOTE_KEY not in str(raised.value)


@pytest.mark.parametrize(
    "uri",
    [
        f"openai:https://user:{REMOTE_KEY}@api.example.com/v1#m",
        f"openai:http://{REMOTE_KEY}@127.0.0.1:8080/v1",
    ],
)
def test_credentials_in_a_model_uri_are_refused_without_repeating_them(uri: str) -> None:
    """A model URI is written on every span, into lock files and registry tags: a key in it
    would be everywhere. It is refused, and the message does not repeat it."""
    with pytest.raises(UnknownModelError, match="SLMOPS_OPENAI_API_KEY") as raised:
        parse_model_uri(uri)
    assert REMOTE_KEY not in str(raised.value)


def test_model_output_is_escaped_in_the_eval_report(
    workspace: Workspace, runtime: Runtime, remote_stack: Any
) -> None:
    Datasets(workspace).add(
        "markup", [EvalCase(id="m", input={"question": "markup please"}, reference="x")]
    )
    evaluation = EvalRun(workspace, remote_stack, [ExactMatch()])
    run_id = evaluation.start("markup", 1)
    cases = Datasets(workspace).cases("markup")[1]
    asyncio.run(evaluation.execute(run_id, cases, runtime, concurrency=1))
    report = render_report(workspace, run_id)
    assert XSS not in report
    assert "&lt;script&gt;" in report


def test_the_console_login_never_echoes_or_stores_the_key(
    workspace: Workspace, captured_logs
) -> None:
    from slmops.ui.app import create_console

    console = create_console(workspace, api_keys=[SERVE_KEY])
    texts = []
    with TestClient(console) as client:
        for key in (WRONG_KEY, SERVE_KEY):
            response = client.post("/login", data={"key": key, "next": "/"}, follow_redirects=False)
            texts += [response.text, json.dumps(dict(response.headers))]
        assert response.status_code == 303 and client.cookies
        texts.append(json.dumps(dict(client.cookies)))
        home = client.get("/")
        assert home.status_code == 200
        texts.append(home.text)
    assert leaks(workspace, captured_logs.getvalue(), *texts) == []
