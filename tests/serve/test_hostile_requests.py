"""``slmops serve`` against requests a careless or hostile client sends: bodies that are not
UTF-8 or not JSON, nested past any limit, too large, too slow, of the wrong type; huge headers;
10,000-message conversations; parameters out of range, unknown, or ones the server cannot
honour. Every one gets a clear OpenAI-style error with the right status (never a 500, never
a parameter silently dropped), and the server keeps serving.

In-process (the real app over scripted models) where the transport does not matter; over
uvicorn on a loopback port where it does (trickled and stalled bodies, chunked uploads).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessage

from tests.serve.conftest import (
    ADDER,
    CHAT,
    ECHO,
    EMBEDDER,
    FAKE_KEY,
    FakeEmbedder,
    fake_server,
    read_to_close,
)

AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
HI = [{"role": "user", "content": "hi"}]
CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)


@pytest.fixture(scope="module")
def client(fake_served: FastAPI) -> Iterator[TestClient]:
    with TestClient(fake_served, raise_server_exceptions=False) as test_client:
        yield test_client


def error_of(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    """The OpenAI-style error a response carries, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def chat(client: TestClient, **fields: Any) -> httpx.Response:
    return client.post(CHAT_URL, json={"model": CHAT, "messages": HI, **fields}, headers=AUTH)


def raw(client: TestClient, path: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(path, content=body, headers={**JSON, **headers})


# --- bodies that are not what they claim ------------------------------------------------


def test_a_body_that_is_not_utf8_is_a_400_naming_it(client: TestClient) -> None:
    body = b'{"model": "\xff\xfe", "messages": []}'
    error = error_of(raw(client, CHAT_URL, body), 400)
    assert error["message"] == "The request body is not valid UTF-8"
    assert error["code"] == "invalid_json"
    assert error_of(raw(client, "/v1/feedback", b"\xff\xfe"), 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"model": "x", "messages": [', "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(
    client: TestClient, body: bytes, says: str
) -> None:
    for path in (CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL):
        assert says in error_of(raw(client, path, body), 400)["message"]


def test_json_nested_past_the_limit_is_a_400_on_feedback_too(client: TestClient) -> None:
    """Was a bare 500: the feedback endpoint parses its own body, and a RecursionError is
    not a ValueError."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert error_of(raw(client, "/v1/feedback", deep), 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("", 400),  # none at all
    ],
)
def test_a_body_not_sent_as_json_is_refused(
    client: TestClient, content_type: str, status: int
) -> None:
    """A browser page may POST text/plain, a form or an untyped body to any site without a
    CORS preflight, never JSON: reading only JSON keeps other sites' pages away from a
    server on localhost (feedback included: it used to parse whatever it was sent)."""
    body = json.dumps({"model": CHAT, "messages": HI}).encode()
    headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
    for path in (CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL, "/v1/feedback"):
        response = client.post(path, content=body, headers=headers)
        assert "content-type" in response.request.headers or not content_type
        error = error_of(response, status)
        assert "Content-Type: application/json" in error["message"]
    vendor_json = raw(client, CHAT_URL, body, **{"Content-Type": "application/vnd.api+json"})
    assert vendor_json.status_code == 200, vendor_json.text


def test_unknown_urls_and_methods_are_openai_errors(client: TestClient) -> None:
    """Were FastAPI's {"detail": "Not Found"}: an OpenAI client could not read them."""
    missing = error_of(client.post("/v1/chat/completion", json={}, headers=AUTH), 404)
    assert missing["message"] == "Invalid URL (POST /v1/chat/completion)"
    wrong = client.get(CHAT_URL, headers=AUTH)
    assert error_of(wrong, 405)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"


def test_an_unexpected_error_is_a_500_in_openai_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was Starlette's text/plain "Internal Server Error"."""

    def broken(_self: Any, _texts: Any) -> Any:
        raise RuntimeError("the embedder fell over")

    monkeypatch.setattr(FakeEmbedder, "embed", broken)
    response = client.post(EMBEDDINGS_URL, json={"model": EMBEDDER, "input": "x"}, headers=AUTH)
    error = error_of(response, 500)
    assert error["type"] == "server_error"
    assert response.headers["x-request-id"] in error["message"]  # what to look for in the logs


# --- size ---------------------------------------------------------------------------------


def test_huge_headers_are_a_431(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Padding": "a" * 40_000})
    assert error_of(response, 431)["code"] == "headers_too_large"
    many = {f"X-Header-{i}": "a" * 30 for i in range(1000)}
    assert error_of(client.get("/healthz", headers=many), 431)["code"] == "headers_too_large"
    assert client.get("/healthz", headers={"X-Padding": "a" * 8000}).status_code == 200


def test_a_hostile_request_id_is_replaced_not_echoed(client: TestClient) -> None:
    for hostile in ("x" * 200, "a\tb", "\x7f"):
        response = client.get("/healthz", headers={"X-Request-Id": hostile})
        assert response.headers["x-request-id"] != hostile
        assert len(response.headers["x-request-id"]) == 32  # one of ours
    kept = client.get("/healthz", headers={"X-Request-Id": "client-1"})
    assert kept.headers["x-request-id"] == "client-1"


def test_a_huge_body_is_a_413_declared_or_streamed(client: TestClient) -> None:
    huge = json.dumps({"model": EMBEDDER, "input": "x" * 1_100_000}).encode()
    declared = raw(client, EMBEDDINGS_URL, huge)
    assert error_of(declared, 413)["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as it arrives
        for start in range(0, len(huge), 64_000):
            yield huge[start : start + 64_000]

    streamed = client.post(EMBEDDINGS_URL, content=chunks(), headers=JSON)
    assert "content-length" not in streamed.request.headers
    # was a 400 {"detail": "There was an error parsing the body"}
    assert error_of(streamed, 413)["code"] == "request_too_large"


def test_a_ten_thousand_message_conversation_is_answered_in_bounded_time(
    client: TestClient,
) -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
        for i in range(10_000)
    ]
    for model in (CHAT, ECHO):
        started = time.perf_counter()
        response = client.post(CHAT_URL, json={"model": model, "messages": messages}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert time.perf_counter() - started < 20
    assert response.json()["choices"][0]["message"]["content"] == "message 9998"  # last user's


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", -5),
        ("max_tokens", 10**6),  # over the server's limit (2048)
        ("max_tokens", 10**40),
        ("max_tokens", 2.5),
        ("max_tokens", True),
        ("max_tokens", "10"),
        ("max_completion_tokens", 0),
        ("max_completion_tokens", 4096),
        ("temperature", -1),
        ("temperature", 2.5),
        ("temperature", "hot"),
        ("top_p", 0),
        ("seed", 2**64),
        ("stream", "yes"),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stop", ""),
        ("stop", [""]),
        ("n", 0),
        ("n", 2),
        ("messages", []),
        ("model", ""),
    ],
)
def test_values_out_of_range_are_a_400_naming_the_parameter(
    client: TestClient, field: str, value: Any
) -> None:
    error = error_of(chat(client, **{field: value}), 400)
    assert error["param"].split(".")[0] == field  # stop.0: the first stop sequence
    assert error["code"] in ("invalid_value", "unsupported_value")


def test_non_finite_numbers_are_a_400(client: TestClient) -> None:
    """Python's JSON reader takes NaN, Infinity and 1e400 (infinite); a model cannot."""
    for field, literal in (("temperature", "NaN"), ("top_p", "Infinity"), ("max_tokens", "1e400")):
        body = f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "x"}}], '
        body += f'"{field}": {literal}}}'
        error = error_of(raw(client, CHAT_URL, body.encode()), 400, param=field)
        assert "finite" in error["message"]


def test_integers_may_be_written_as_json_integral_numbers(client: TestClient) -> None:
    """JSON Schema's integer includes 2.0; only true/false and strings are refused."""
    assert chat(client, max_tokens=8.0, seed=3.0).status_code == 200


def test_n_above_one_is_refused_not_answered_with_one_choice(client: TestClient) -> None:
    error = error_of(chat(client, n=3), 400, param="n")
    assert error["code"] == "unsupported_value"
    assert "one choice" in error["message"]
    assert chat(client, n=1).status_code == 200


def test_an_unknown_parameter_is_a_400_not_silently_dropped(client: TestClient) -> None:
    """Was accepted and ignored. OpenAI answers 400 "Unrecognized request argument"."""
    error = error_of(chat(client, top_k=40), 400, param="top_k")
    assert error["code"] == "unknown_parameter"
    assert error["message"] == "Unrecognized request argument supplied: top_k"
    nested = chat(client, messages=[{"role": "user", "content": "hi", "weight": 2}])
    assert error_of(nested, 400, param="messages.0.weight")["code"] == "unknown_parameter"
    for path, body in (
        (COMPLETIONS_URL, {"model": CHAT, "prompt": "x", "top_k": 1}),
        (EMBEDDINGS_URL, {"model": EMBEDDER, "input": "x", "top_k": 1}),
    ):
        response = client.post(path, json=body, headers=AUTH)
        assert error_of(response, 400, param="top_k")["code"] == "unknown_parameter"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools.0.type"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": -1}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"store": True}, "store"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"messages": [{"role": "function", "content": "42", "name": "f"}]}, None),
        ({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "messages.0.name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_what_the_server_cannot_honour_is_a_400_saying_so(
    client: TestClient, fields: dict[str, Any], param: str | None
) -> None:
    """Log probabilities, penalties ... were silently ignored. (Tools, tool messages and
    JSON response formats are served now: tests/serve/test_tool_calls.py and
    test_structured_outputs.py.)"""
    error = error_of(chat(client, **fields), 400, param=param)
    assert error["code"] in ("unsupported_parameter", "unsupported_value")
    assert "not supported" in error["message"]


def test_what_changes_nothing_is_accepted(client: TestClient) -> None:
    """Defaults and empty values of what the server does not do, as clients send them."""
    neutral = {
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logprobs": False,
        "tools": [],
        "tool_choice": "none",
        "parallel_tool_calls": True,
        "logit_bias": {},
        "store": False,
        "service_tier": "auto",
        "modalities": ["text"],
        "response_format": {"type": "text"},
        "user": "user-1",
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 16,
    }
    assert chat(client, **neutral).status_code == 200


def test_an_answer_sent_back_as_the_openai_package_dumps_it_is_accepted(
    client: TestClient,
) -> None:
    """Chat loops append the previous answer's message, with its empty refusal, audio,
    tool calls and annotations."""
    previous = ChatCompletionMessage(role="assistant", content="Paris.").model_dump()
    assert {"refusal", "tool_calls", "annotations"} <= set(previous)
    conversation = [*HI, previous, {"role": "user", "content": "And Italy?"}]
    response = chat(client, messages=conversation)
    assert response.status_code == 200, response.text


def test_the_official_openai_client_works_end_to_end(client: TestClient) -> None:
    """The fields the openai package sends (its embeddings default to base64) are all taken,
    and what it cannot get is an exception it understands."""
    api = openai.OpenAI(
        base_url="http://testserver/v1", api_key=FAKE_KEY, http_client=client, max_retries=0
    )
    answer = api.chat.completions.create(
        model=CHAT, messages=HI, max_tokens=8, temperature=0, top_p=1, seed=1, stop=["\n"]
    )
    assert answer.choices[0].message.content
    stream = api.chat.completions.create(
        model=CHAT, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    events = list(stream)
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0
    vectors = api.embeddings.create(model=EMBEDDER, input=["a", "b"])  # sent as base64
    assert [len(d.embedding) for d in vectors.data] == [4, 4]
    assert api.completions.create(model=CHAT, prompt="The sky is").choices[0].text
    assert {m.id for m in api.models.list()} == {CHAT, ECHO, ADDER, EMBEDDER}
    with pytest.raises(openai.BadRequestError, match="tools"):  # a stack calls no tools
        api.chat.completions.create(
            model=ECHO,
            messages=HI,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
        api.chat.completions.create(model=CHAT, messages=HI, extra_body={"top_k": 5})


def test_lone_surrogates_are_a_400_not_a_500(client: TestClient) -> None:
    r"""JSON's "\ud800" is a string Python holds but cannot encode: the shipped model, the
    response and the trace store all failed on it (a stack answered a text/plain 500)."""
    for path, template in (
        (CHAT_URL, '{"model": "%s", "messages": [{"role": "user", "content": "a\\ud800"}]}'),
        (COMPLETIONS_URL, '{"model": "%s", "prompt": "\\udfff"}'),
        (EMBEDDINGS_URL, '{"model": "%s", "input": ["\\ud800"]}'),
    ):
        models = (CHAT, ECHO) if path == CHAT_URL else (EMBEDDER if "embed" in path else CHAT,)
        for model in models:
            error = error_of(raw(client, path, (template % model).encode()), 400)
            assert error["code"] == "invalid_unicode"
    paired = '{"model": "%s", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    assert (
        raw(client, CHAT_URL, (paired % ECHO).encode()).json()["choices"][0]["message"]["content"]
        == "\N{GRINNING FACE}"
    )


# --- streaming ------------------------------------------------------------------------------


def test_streaming_with_invalid_parameters_is_a_json_400_not_a_stream(client: TestClient) -> None:
    for fields, param in (
        ({"max_tokens": -1}, "max_tokens"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ):
        response = chat(client, stream=True, **fields)
        error_of(response, 400, param=param)  # content-type application/json, checked there
    unknown = client.post(
        COMPLETIONS_URL, json={"model": ECHO, "prompt": "x", "stream": True}, headers=AUTH
    )
    assert error_of(unknown, 404, param="model")["code"] == "model_not_found"


def test_echo_is_honoured_when_streaming(client: TestClient) -> None:
    """Was dropped: a streamed completion left the prompt out."""
    body = {"model": CHAT, "prompt": "The capital of France: ", "echo": True}
    whole = client.post(COMPLETIONS_URL, json=body, headers=AUTH).json()["choices"][0]["text"]
    response = client.post(COMPLETIONS_URL, json={**body, "stream": True}, headers=AUTH)
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    streamed = "".join(event["choices"][0]["text"] for event in events)
    assert streamed == whole and streamed.startswith("The capital of France: ")


# --- stacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 0.2}, {"max_tokens": 5}, {"seed": 1}, {"stop": "."}, {"top_p": 0.5}],
)
def test_sampling_parameters_a_stack_cannot_take_are_a_400(
    client: TestClient, fields: dict[str, Any]
) -> None:
    """Were silently ignored: a stack runs its models with its manifest's settings."""
    (param,) = fields
    response = client.post(CHAT_URL, json={"model": ECHO, "messages": HI, **fields}, headers=AUTH)
    error = error_of(response, 400, param=param)
    assert error["code"] == "unsupported_parameter" and "manifest" in error["message"]
    explicit_null = {"model": ECHO, "messages": HI, "temperature": None, "max_tokens": None}
    assert client.post(CHAT_URL, json=explicit_null, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}",  # was a 500 (RecursionError)
        '{"a": ' + "9" * 5000 + ', "b": 1}',  # past Python's int-parsing limit
        '{"a": NaN, "b": 1}',  # not JSON: an answer carrying it could not be sent
        '{"a": 1, "b": 2',
    ],
)
def test_stack_input_that_is_not_usable_json_is_read_as_text(
    client: TestClient, content: str
) -> None:
    messages = [{"role": "user", "content": content}]
    echoed = client.post(CHAT_URL, json={"model": ECHO, "messages": messages}, headers=AUTH)
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["choices"][0]["message"]["content"] == content[:200]
    added = client.post(CHAT_URL, json={"model": ADDER, "messages": messages}, headers=AUTH)
    assert error_of(added, 400)["code"] == "invalid_input"  # the typed stack: not text


# --- over the wire --------------------------------------------------------------------------


def _send(url: str, request: bytes, *, pieces: Sequence[bytes] = (), delay: float = 0.0) -> bytes:
    """``request`` over a raw socket, then ``pieces`` one by one ``delay`` s apart; the
    answer, read until the server closes (at most 10 s)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        for piece in pieces:
            time.sleep(delay)
            try:
                connection.sendall(piece)
            except OSError:  # the server answered and closed: stop trickling
                break
        return read_to_close(connection)


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {FAKE_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _status_and_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"content-type: application/json" in head.lower()
    return status, json.loads(body)["error"]


def test_slow_bodies_are_cut_off_and_do_not_hold_up_others(tmp_path: Path) -> None:
    """A client trickling its body (or promising more than it sends) held its connection
    for as long as it liked; now it gets a 408 after ``body_timeout_s`` and the connection
    closes, while other requests are answered at once."""
    body = json.dumps({"model": CHAT, "messages": HI}).encode()
    with fake_server(tmp_path, body_timeout_s=2.0) as url:
        answers: list[bytes] = []

        def trickle() -> None:
            pieces = [body[i : i + 4] for i in range(0, len(body), 4)]
            answers.append(_send(url, _head(CHAT_URL, len(body)), pieces=pieces, delay=0.2))

        def stall() -> None:  # declares 500 bytes, sends 10
            answers.append(_send(url, _head(CHAT_URL, 500) + body[:10]))

        slow = [threading.Thread(target=trickle) for _ in range(3)]
        slow += [threading.Thread(target=stall) for _ in range(3)]
        started = time.monotonic()
        for thread in slow:
            thread.start()
        time.sleep(0.2)
        prompt = httpx.post(url + CHAT_URL, content=body, headers=JSON, timeout=5)
        assert prompt.status_code == 200
        assert time.monotonic() - started < 1.5  # before any slow one was cut off
        for thread in slow:
            thread.join(timeout=15)
        assert len(answers) == 6 and time.monotonic() - started < 8
        for answer in answers:
            status, error = _status_and_error(answer)
            assert status == 408 and error["code"] == "request_timeout", answer[:300]
        a_trickle_in_time = [body[i : i + 20] for i in range(0, len(body), 20)]
        answer = _send(url, _head(CHAT_URL, len(body)), pieces=a_trickle_in_time, delay=0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_over_the_wire_limits_answer_in_openai_shape(tmp_path: Path) -> None:
    huge = json.dumps({"model": EMBEDDER, "input": "x" * 1_200_000}).encode()
    with fake_server(tmp_path) as url:

        def chunked() -> Iterator[bytes]:
            for start in range(0, len(huge), 100_000):
                yield huge[start : start + 100_000]

        streamed = httpx.post(url + EMBEDDINGS_URL, content=chunked(), headers=JSON, timeout=10)
        assert error_of(streamed, 413)["code"] == "request_too_large"
        # h11 itself refuses headers that arrive in pieces past 16 KiB (a bare 400); what
        # arrives whole past the limit is the app's 431
        padded = httpx.get(url + "/healthz", headers={"X-Padding": "a" * 100_000}, timeout=10)
        assert padded.status_code in (400, 431)
        if padded.status_code == 431:
            error_of(padded, 431)
        sent_too_little = _send(url, _head(CHAT_URL, 5) + b'{"model": "x"}')  # rest: junk
        assert sent_too_little.startswith(b"HTTP/1.1 400")
        negative = _send(url, _head(CHAT_URL, 5).replace(b"Length: 5", b"Length: -5") + b"{}")
        assert negative.startswith(b"HTTP/1.1 400")  # refused by uvicorn before the app
        well = httpx.post(url + CHAT_URL, json={"model": CHAT, "messages": HI}, headers=AUTH)
        assert well.status_code == 200  # and it keeps serving
