"""No request outlives the server's request timeout: the 600 s soak saw generations on an
overloaded machine take minutes (15 requests with no answer in 60 s). Past the deadline a
request still in line gets 429 ``queue_timeout`` with Retry-After; a generation is stopped
between two tokens and answered 504 ``generation_timeout`` (as an ``error`` event once a
stream has begun), and its slot goes to the next request.

Over uvicorn on a loopback port with a model that says a word every 0.1 s; the waiting-line
case in-process, holding the one slot the way the console's playground does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from slmops.core.runtime import Runtime
from slmops.models.base import ChatChunk, ChatMessage, GenerationParams
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.serve.server import running_server
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import free_port

SLOW, FAST = "local:slow", "local:fast"
WORDS = " ".join(f"w{i}" for i in range(40))  # 4 s at 0.1 s a word
TIMEOUT_S = 0.6


class WordByWord(ScriptedChatModel):
    """A word every ``pause`` seconds; counts the words it was asked for, so a test can see
    that a stopped generation stops."""

    def __init__(self, uri: str, pause: float) -> None:
        super().__init__([WORDS], uri=uri)
        self.pause = pause
        self.words = 0

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        for chunk in super().stream(messages, params):
            time.sleep(self.pause)
            self.words += 1
            yield chunk


def chat(model: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WordByWord]]:
    root = tmp_path_factory.mktemp("request-timeout")
    workspace = Workspace.open(root / "ws")
    slow = WordByWord(SLOW, pause=0.1)
    catalog = Catalog(chat_models={SLOW: slow, FAST: WordByWord(FAST, pause=0.0)})
    # one generation at a time: a slot a stopped generation did not give back blocks the next
    config = ServeConfig(
        monitor=None, local_concurrency=1, max_queue=4, request_timeout_s=TIMEOUT_S
    )
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), config, port=free_port()
        ) as url:
            yield url, slow
    finally:
        workspace.close()


def test_a_whole_answer_past_the_timeout_is_stopped_with_504(
    served: tuple[str, WordByWord],
) -> None:
    url, slow = served
    before = slow.words
    started = time.monotonic()
    response = httpx.post(url + "/v1/chat/completions", json=chat(SLOW), timeout=30)
    took = time.monotonic() - started
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "generation_timeout"
    assert error["type"] == "server_error"
    assert f"{TIMEOUT_S:g} s" in error["message"]
    assert TIMEOUT_S <= took < TIMEOUT_S + 1.5
    time.sleep(0.5)  # a generation that went on would say ~5 more words meanwhile
    assert slow.words - before <= TIMEOUT_S / 0.1 + 2
    # the slot came back: the next request is answered at once
    answered = httpx.post(url + "/v1/chat/completions", json=chat(FAST), timeout=30)
    assert answered.status_code == 200
    assert answered.json()["choices"][0]["message"]["content"].startswith("w0 w1")


def test_a_stream_past_the_timeout_ends_with_an_error_event(
    served: tuple[str, WordByWord],
) -> None:
    url, _ = served
    events: list[str] = []
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=chat(SLOW, stream=True), timeout=30
    ) as response:
        assert response.status_code == 200  # the first word came before the deadline
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "generation_timeout"
    words = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert 1 <= len(words) <= TIMEOUT_S / 0.1 + 2
    answered = httpx.post(url + "/v1/chat/completions", json=chat(FAST), timeout=30)
    assert answered.status_code == 200


def test_answers_within_the_timeout_are_untouched(served: tuple[str, WordByWord]) -> None:
    url, _ = served
    response = httpx.post(url + "/v1/chat/completions", json=chat(FAST), timeout=30)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].strip() == WORDS


def test_a_request_whose_slot_does_not_come_free_in_time_gets_429(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    catalog = Catalog(chat_models={FAST: WordByWord(FAST, pause=0.0)})
    config = ServeConfig(monitor=None, local_concurrency=1, max_queue=4, request_timeout_s=0.3)
    app = create_app(catalog, Runtime.from_workspace(workspace), config)

    async def scenario() -> tuple[httpx.Response, float, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with app.state.local_admission.slot():  # the one slot is busy meanwhile
                started = time.monotonic()
                refused = await client.post("/v1/chat/completions", json=chat(FAST))
                waited = time.monotonic() - started
            after = await client.post("/v1/chat/completions", json=chat(FAST))
        return refused, waited, after

    try:
        refused, waited, after = asyncio.run(scenario())
    finally:
        workspace.close()
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "queue_timeout"
    assert int(refused.headers["Retry-After"]) >= 1
    assert 0.3 <= waited < 2.0
    assert after.status_code == 200  # the line holds no ghost of the refused request
    assert app.state.local_admission.waiting == 0


def test_no_timeout_when_turned_off(tmp_path: Path) -> None:
    """``request_timeout_s=None`` (``serve --request-timeout 0``): a long answer finishes."""
    workspace = Workspace.open(tmp_path / "ws")
    model = WordByWord(SLOW, pause=0.02)  # 0.8 s in all, past a 0.6 s timeout were there one
    catalog = Catalog(chat_models={SLOW: model})
    config = ServeConfig(monitor=None, local_concurrency=1, request_timeout_s=None)
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), config, port=free_port()
        ) as url:
            response = httpx.post(url + "/v1/chat/completions", json=chat(SLOW), timeout=30)
    finally:
        workspace.close()
    assert response.status_code == 200
    assert model.words == 41  # 40 words and the closing chunk


def test_serve_refuses_a_negative_request_timeout() -> None:
    from typer.testing import CliRunner

    from slmops.cli.main import app
    from slmops.errors import ConfigError

    result = CliRunner().invoke(app, ["serve", "--request-timeout", "-1"])
    assert isinstance(result.exception, ConfigError)  # before any model loads
    assert "--request-timeout must be 0 (no limit) or above" in str(result.exception)


class SlowEmbedder:
    """Takes ``seconds`` per call: a call in progress holds the one embedding thread."""

    def __init__(self, uri: str, seconds: float) -> None:
        self.uri = uri
        self.seconds = seconds

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.seconds)
        return np.ones((len(texts), 4), dtype="float32")


@pytest.mark.parametrize(
    ("max_queue", "timeout_s", "code"), [(0, 30.0, "queue_full"), (4, 0.3, "queue_timeout")]
)
def test_embeddings_wait_in_a_bounded_line_too(
    tmp_path: Path, max_queue: int, timeout_s: float, code: str
) -> None:
    """They had no line of their own: every request queued behind the embedding thread, with
    no 429 and no bound on the wait."""
    workspace = Workspace.open(tmp_path / "ws")
    uri = "local:slow-embedder"
    catalog = Catalog(embedders={uri: SlowEmbedder(uri, 1.0)})  # type: ignore[dict-item]
    config = ServeConfig(monitor=None, max_queue=max_queue, request_timeout_s=timeout_s)
    app = create_app(catalog, Runtime.from_workspace(workspace), config)
    body = {"model": uri, "input": ["a text"]}

    async def scenario() -> tuple[httpx.Response, httpx.Response, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/embeddings", json=body))
            await asyncio.sleep(0.1)  # the first one is embedding now
            started = time.monotonic()
            second = await client.post("/v1/embeddings", json=body)
            waited = time.monotonic() - started
            return await first, second, waited

    try:
        first, second, waited = asyncio.run(scenario())
    finally:
        workspace.close()
    assert first.status_code == 200, first.text
    assert len(first.json()["data"]) == 1
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == code
    assert int(second.headers["Retry-After"]) >= 1
    assert waited < 0.9  # refused before the first one finished: not queued behind it
