"""Slowloris: a client sending its request headers a byte every few seconds held a connection
(and a file descriptor) for as long as it liked, since uvicorn times only the wait between
requests. Now the headers must be in within ``header_timeout_s``, or the connection gets a
408 in OpenAI's shape and is closed; kept-alive connections, slow-but-timely clients and
streamed answers are untouched. Over uvicorn on a loopback port, raw sockets throughout,
every wait bounded."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from slmops.core.runtime import Runtime
from slmops.models.base import ChatChunk, ChatMessage, GenerationParams
from slmops.serve.connections import header_timeout_protocol
from slmops.serve.server import running_server
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import FAKE_KEY, fake_catalog, fake_config, free_port, read_to_close

TIMEOUT_S = 1.0
SLOW = "local:slow-words"
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


class SlowWords(ScriptedChatModel):
    """Streams a word every 0.15 s: an answer that outlasts the header timeout."""

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        for chunk in super().stream(messages, params):
            time.sleep(0.15)
            yield chunk


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow-headers")
    workspace = Workspace.open(root / "ws")
    catalog = fake_catalog(root, workspace)
    catalog.chat_models[SLOW] = SlowWords([" ".join(WORDS)], uri=SLOW)
    config = fake_config(header_timeout_s=TIMEOUT_S)
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), config, port=free_port()
        ) as base:
            yield base
    finally:
        workspace.close()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_answer(connection: socket.socket) -> bytes:
    """One HTTP answer with a Content-Length (at most 10 s); b"" if the server closed."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_headers_trickled_past_the_deadline_get_a_408_and_the_connection_closes(url: str) -> None:
    started = time.monotonic()
    with connect(url) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for byte in b"X-Slow: " + b"a" * 30:  # 11 s of trickle at most, far past the deadline
            time.sleep(0.3)
            try:
                connection.sendall(bytes([byte]))
            except OSError:  # the server answered and closed: stop trickling
                break
            if time.monotonic() - started > TIMEOUT_S + 2:
                break
        answer = read_to_close(connection)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_timeout" and "headers" in error["message"]


def test_a_connection_that_sends_nothing_is_closed_silently(url: str) -> None:
    started = time.monotonic()
    with connect(url) as connection:
        assert read_to_close(connection) == b""  # like an idle keep-alive connection
    assert time.monotonic() - started < 5


def test_slow_but_timely_headers_are_served(url: str) -> None:
    with connect(url) as connection:
        for start in range(0, len(GET), 6):  # ~0.6 s in all: within the deadline
            connection.sendall(GET[start : start + 6])
            time.sleep(0.1)
        assert read_answer(connection).startswith(b"HTTP/1.1 200 ")


def test_a_kept_alive_connection_idle_past_the_deadline_still_serves(url: str) -> None:
    """The deadline runs from a request's first byte: idling between requests is timed by
    uvicorn's keep-alive (5 s), not by it."""
    with connect(url) as connection:
        connection.sendall(GET)
        assert read_answer(connection).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT_S + 0.5)
        connection.sendall(GET)
        assert read_answer(connection).startswith(b"HTTP/1.1 200 ")
        # and the next request's headers are timed again
        started = time.monotonic()
        connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = read_to_close(connection)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert time.monotonic() - started < 5


def test_a_streamed_answer_outlasting_the_deadline_is_not_cut(url: str) -> None:
    body = {"model": SLOW, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        started = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert time.monotonic() - started > TIMEOUT_S + 0.3  # it did outlast the deadline
        assert lines[-1] == "data: [DONE]"
        text = "".join(
            json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content", "")
            for line in lines[:-1]
        )
        assert text.split() == WORDS
        assert client.get("/healthz").status_code == 200  # the same connection, kept alive


def test_many_slow_clients_do_not_hold_up_others(url: str) -> None:
    connections = [connect(url) for _ in range(20)]
    try:
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 1
        closed = 0
        for connection in connections:
            connection.settimeout(5)
            if read_to_close(connection).startswith(b"HTTP/1.1 408 "):
                closed += 1
        assert closed == len(connections)
    finally:
        for connection in connections:
            connection.close()


def test_shutdown_is_not_held_up_by_a_half_sent_request(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    catalog = fake_catalog(tmp_path, workspace)
    config = fake_config(header_timeout_s=30.0)  # it would not end the connection in time
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), config, port=free_port()
        ) as base:
            connection = connect(base)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.2)
            started = time.monotonic()
        assert time.monotonic() - started < 5
        connection.settimeout(5)
        assert not read_to_close(connection).startswith(b"HTTP/1.1 200")
        connection.close()
    finally:
        workspace.close()


def test_the_timeout_must_be_positive() -> None:
    for wrong in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            header_timeout_protocol(wrong)
    assert header_timeout_protocol(2.5).header_timeout_s == 2.5
