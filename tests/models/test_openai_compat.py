from __future__ import annotations

import json
import socket

import httpx
import pytest

from slmops.errors import ModelError, ModelUnavailableError
from slmops.models import ChatMessage, GenerationParams
from slmops.models.base import StreamAccumulator
from slmops.models.openai_compat import OpenAICompatChatModel

MESSAGES = [ChatMessage(role="user", content="hi")]


def make_model(handler, **kwargs):
    return OpenAICompatChatModel(
        "http://server.test/v1",
        kwargs.pop("model_name", "m"),
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def test_chat_sends_openai_body_and_reads_usage():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["auth"] = request.headers.get("authorization")
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            },
        )

    model = make_model(handler, api_key="sk-test")
    result = model.chat(
        MESSAGES, GenerationParams(max_tokens=7, stop=("\n",)), json_schema={"type": "object"}
    )
    assert result.text == "Paris"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (5, 1)
    assert seen["path"] == "/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    assert seen["body"]["max_tokens"] == 7 and seen["body"]["stop"] == ["\n"]
    assert seen["body"]["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_stream_parses_sse_chunks_and_final_usage():
    events = [
        {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    body = (
        "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ": keep-alive\n\ndata: [DONE]\n\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    acc = StreamAccumulator(model="m")
    for chunk in make_model(handler).stream(MESSAGES):
        acc.add(chunk)
    result = acc.result()
    assert result.text == "Hello"
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 2
    assert result.time_to_first_token_s is not None


def test_completion_endpoint():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions"
        return httpx.Response(200, json={"choices": [{"text": " world", "finish_reason": "stop"}]})

    assert make_model(handler).complete("hello").text == " world"


def test_server_error_message_is_surfaced():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "model 'm' not found"}})

    with pytest.raises(ModelError, match="HTTP 404: model 'm' not found"):
        make_model(handler).chat(MESSAGES)


def test_model_name_is_discovered_when_not_given():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "smol"}]})
        assert json.loads(request.content)["model"] == "smol"
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    assert make_model(handler, model_name=None).chat(MESSAGES).text == "ok"


def test_malformed_response_is_a_model_error():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    with pytest.raises(ModelError, match="malformed chat completion"):
        make_model(handler).chat(MESSAGES)


def test_unreachable_server_is_reported_plainly():
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = OpenAICompatChatModel(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2)
    with pytest.raises(ModelUnavailableError, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        model.chat(MESSAGES)
