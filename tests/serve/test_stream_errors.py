"""A streamed request that fails before its first token is answered like the same request
unstreamed: its own status and OpenAI's error body, not ``200`` and an error event (headers
are sent only once the first piece is there). A failure after the first token still arrives
as an error event in the stream. Either way the generation slot is released, once.

In-process (the real app over scripted models) for the answers; over uvicorn on a loopback
port for a client that leaves before the first token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from slmops.core.runtime import Runtime
from slmops.errors import ModelError
from slmops.models.base import ChatChunk, ChatMessage, ChatResult, GenerationParams
from slmops.serve.app import Catalog, create_app
from slmops.serve.server import running_server
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import ADDER, FAKE_KEY, fake_catalog, fake_config, free_port

AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}
HI = [{"role": "user", "content": "hi"}]
OK, OVERFLOW, BROKEN, MIDWAY, SLOW = (
    "local:ok",
    "local:overflow",
    "local:broken",
    "local:midway",
    "local:slow-start",
)


class OverflowingModel(ScriptedChatModel):
    """Refuses every prompt as too long for its context, before any token."""

    def chat(self, *_args: Any, **_kwargs: Any) -> ChatResult:
        raise ModelError("the prompt (5000 tokens) does not fit the context window (4096)")

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        self.chat(messages, params)
        yield ChatChunk(text="never")


class BrokenModel(OverflowingModel):
    """A bug in the backend, before any token."""

    def chat(self, *_args: Any, **_kwargs: Any) -> ChatResult:
        raise RuntimeError("boom")


class MidwayModel(ScriptedChatModel):
    """Says one word, then fails."""

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        yield ChatChunk(text="Hello ")
        raise ModelError("the backend crashed")


class SlowStartModel(ScriptedChatModel):
    """Takes ``delay`` seconds before its first token; records whether its stream was
    closed (the generation stopped) before it finished."""

    def __init__(self, delay: float) -> None:
        super().__init__(["one two three"], uri=SLOW)
        self.delay = delay
        self.closed = threading.Event()

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        finished = False
        try:
            time.sleep(self.delay)
            for _ in range(100):
                yield ChatChunk(text="word ")
                time.sleep(0.05)
            finished = True
            yield ChatChunk(text="", finish_reason="stop")
        finally:
            if not finished:
                self.closed.set()


def catalog_for(root: Path, workspace: Workspace, *, slow: SlowStartModel | None = None) -> Catalog:
    catalog = fake_catalog(root, workspace)  # (its stacks: echo and adder)
    catalog.chat_models.update(
        {
            OK: ScriptedChatModel(["Paris is the capital of France."], uri=OK),
            OVERFLOW: OverflowingModel([""], uri=OVERFLOW),
            BROKEN: BrokenModel([""], uri=BROKEN),
            MIDWAY: MidwayModel([""], uri=MIDWAY),
        }
    )
    if slow is not None:
        catalog.chat_models[SLOW] = slow
    return catalog


# one generation at a time and nobody may wait: a slot that was not released makes the next
# request a 429
STRICT = {"local_concurrency": 1, "max_queue": 0}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("stream-errors")
    workspace = Workspace.open(root / "ws")
    app = create_app(
        catalog_for(root, workspace), Runtime.from_workspace(workspace), fake_config(**STRICT)
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    workspace.close()


def post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=AUTH)


def chat(client: TestClient, model: str, **fields: Any) -> Any:
    return post(client, "/v1/chat/completions", {"model": model, "messages": HI, **fields})


def events_of(response: Any) -> list[Any]:
    return [
        line.removeprefix("data: ")
        if line == "data: [DONE]"
        else json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


def requests_counted(client: TestClient, model: str, status: str) -> float:
    wanted = f'slmops_requests_total{{endpoint="chat",model="{model}",status="{status}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.split(" ")[1])
    return 0.0


def assert_served_next(client: TestClient) -> None:
    """The slot is free again: the next request is answered, not refused with a 429."""
    for stream in (False, True):
        answer = chat(client, OK, stream=stream)
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [(OVERFLOW, 400, "context_length_exceeded"), (BROKEN, 500, "generation_failed")],
)
def test_a_stream_that_fails_before_its_first_token_is_answered_as_unstreamed(
    client: TestClient, model: str, status: int, code: str
) -> None:
    before = requests_counted(client, model, str(status))
    whole = chat(client, model)
    streamed = chat(client, model, stream=True, stream_options={"include_usage": True})
    for answer in (whole, streamed):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        assert answer.json()["error"]["code"] == code
    assert streamed.json() == whole.json()
    assert "text/event-stream" not in streamed.headers["content-type"]
    assert requests_counted(client, model, str(status)) == before + 2  # each counted once
    assert requests_counted(client, model, "200") == 0
    assert_served_next(client)


def test_completions_and_stacks_answer_early_failures_with_their_status(
    client: TestClient,
) -> None:
    for echo in (False, True):  # an echoed prompt is not sent ahead of the model's failure
        body = {"model": OVERFLOW, "prompt": "x", "echo": echo}
        whole = post(client, "/v1/completions", body)
        streamed = post(client, "/v1/completions", {**body, "stream": True})
        assert whole.status_code == streamed.status_code == 400, streamed.text
        assert streamed.json() == whole.json()
        assert streamed.json()["error"]["code"] == "context_length_exceeded"
    # a typed stack given text: its input is refused before any step runs
    messages = [{"role": "user", "content": "not a pair"}]
    whole = post(client, "/v1/chat/completions", {"model": ADDER, "messages": messages})
    streamed = post(
        client, "/v1/chat/completions", {"model": ADDER, "messages": messages, "stream": True}
    )
    assert whole.status_code == streamed.status_code == 400, streamed.text
    assert streamed.json()["error"]["code"] == whole.json()["error"]["code"] == "invalid_input"
    assert_served_next(client)


def test_an_echoed_stream_still_starts_with_the_prompt(client: TestClient) -> None:
    body = {"model": OK, "prompt": "The capital of France: ", "echo": True}
    whole = post(client, "/v1/completions", body).json()["choices"][0]["text"]
    events = events_of(post(client, "/v1/completions", {**body, "stream": True}))
    assert events[-1] == "[DONE]"
    streamed = "".join(event["choices"][0]["text"] for event in events[:-1])
    assert streamed == whole and events[0]["choices"][0]["text"].startswith("The capital")


def test_a_failure_after_the_first_token_is_an_error_event_in_the_stream(
    client: TestClient,
) -> None:
    before = requests_counted(client, MIDWAY, "500")
    streamed = chat(client, MIDWAY, stream=True)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    first, error = events_of(streamed)  # no [DONE]: the answer is not complete
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hello "}
    assert error["error"]["code"] == "generation_failed"
    assert requests_counted(client, MIDWAY, "500") == before + 1
    assert_served_next(client)


def test_a_stream_that_succeeds_is_unchanged(client: TestClient) -> None:
    events = events_of(chat(client, OK, stream=True, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in events[1]["choices"][0]["delta"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text.strip() == "Paris is the capital of France."
    assert events[-2]["usage"]["completion_tokens"] > 0
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_over_the_wire_an_early_failure_reaches_the_openai_client_as_its_error(
    tmp_path: Path,
) -> None:
    """Through uvicorn and the official client: the streamed request raises the same
    BadRequestError as the unstreamed one; a client that leaves before the first token
    frees its slot (the next request is served, not refused) and stops the model."""
    workspace = Workspace.open(tmp_path / "ws")
    slow = SlowStartModel(delay=1.5)
    catalog = catalog_for(tmp_path, workspace, slow=slow)
    runtime = Runtime.from_workspace(workspace)
    try:
        with running_server(catalog, runtime, fake_config(**STRICT), port=free_port()) as url:
            api: Any = openai.OpenAI(base_url=url + "/v1", api_key=FAKE_KEY, max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.BadRequestError) as refused:
                    api.chat.completions.create(model=OVERFLOW, messages=HI, stream=stream)
                assert refused.value.code == "context_length_exceeded"
            answer = api.chat.completions.create(model=OK, messages=HI, stream=True)
            assert "Paris" in "".join(e.choices[0].delta.content or "" for e in answer if e.choices)

            body = {"model": SLOW, "messages": HI, "stream": True}
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):  # no header before the first token: leaves
                httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=0.5)
            served: httpx.Response | None = None
            while time.monotonic() - started < 10:
                served = httpx.post(
                    url + "/v1/chat/completions",
                    json={"model": OK, "messages": HI},
                    headers=AUTH,
                    timeout=10,
                )
                if served.status_code != 429:
                    break
                time.sleep(0.1)
            assert served is not None
            assert served.status_code == 200, served.text
            assert time.monotonic() - started < 3  # the slot went back when the client left
            assert slow.closed.wait(timeout=10), "the model kept generating for nobody"
            metrics = httpx.get(url + "/metrics").text
            assert 'status="499"} 1.0' in next(
                line for line in metrics.splitlines() if f'model="{SLOW}",status="499"' in line
            )
    finally:
        workspace.close()
