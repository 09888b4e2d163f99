"""``response_format`` ``json_object`` and ``json_schema`` on ``/v1/chat/completions``.

In-process over scripted models: what the model is asked for (the schema its decoding is
constrained to, the instruction), how the reply comes back whole and streamed, and every 400
(a schema that is not one, one that reaches outside itself, strict mode's rules, a schema the
grammar cannot express, a backend or a stack that cannot honour it). Then for real: the
shipped model behind uvicorn, through the official ``openai`` client's ``parse`` and
LangChain's ``with_structured_output``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from slmops.core.runtime import Runtime
from slmops.models.base import ChatMessage, ChatResult, GenerationParams, Usage
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import fake_catalog, shipped_model_server

URL = "/v1/chat/completions"
LOCAL, REMOTE, HF, TRUNCATED = "local:json", "openai:remote", "hf:checkpoint", "local:truncated"
ASK = [{"role": "user", "content": "Name a city, as JSON."}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
REPLY = '{"name": "Ada", "age": 36}'


class TruncatedModel(ScriptedChatModel):
    """Stops at max_tokens in the middle of its JSON."""

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        super().chat(messages, params, json_schema=json_schema)
        return ChatResult('{"name": "Ad', "length", Usage(10, 4), self.uri, 0.001)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("structured")
    workspace = Workspace.open(root / "ws")
    catalog = fake_catalog(root, workspace)  # (its stacks: stack:echo, stack:adder)
    models = {
        LOCAL: ScriptedChatModel([REPLY], uri="local:json"),
        REMOTE: ScriptedChatModel([REPLY], uri="openai:http://127.0.0.1:9/v1#upstream"),
        HF: ScriptedChatModel([REPLY], uri="hf:/checkpoints/x"),
        TRUNCATED: TruncatedModel([REPLY], uri="local:truncated"),
    }
    catalog = Catalog(chat_models=models, stacks=catalog.stacks)
    app = create_app(catalog, Runtime.from_workspace(workspace), ServeConfig(monitor=None))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {"client": client, "models": models}
    workspace.close()


def post(served: dict[str, Any], model: str = LOCAL, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": ASK, **fields}
    response: httpx.Response = served["client"].post(URL, json=body)
    return response


def schema_format(schema: Any, name: str = "person", **extra: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, **extra}}


def error_of(response: httpx.Response, param: str | None, code: str | None = None) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    message: str = error["message"]
    return message


# --- what the model is asked for, and what comes back ---------------------------------------


def test_json_schema_constrains_the_reply_and_tells_the_model(served: dict[str, Any]) -> None:
    model = served["models"][LOCAL]
    response = post(served, response_format=schema_format(PERSON, strict=True))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": REPLY}
    assert choice["finish_reason"] == "stop"
    assert model.schemas[-1] == PERSON
    system = model.calls[-1][0]
    assert system.role == "system" and "person" in system.content
    assert json.dumps(PERSON) in system.content  # the model sees the schema it must match


def test_json_object_is_a_generic_object_schema(served: dict[str, Any]) -> None:
    model = served["models"][LOCAL]
    messages = [{"role": "system", "content": "Be brief."}, *ASK]
    response = post(served, messages=messages, response_format={"type": "json_object"})
    assert response.status_code == 200, response.text
    assert model.schemas[-1] == {"type": "object"}
    first = model.calls[-1][0]
    assert first.content.startswith("Be brief.") and "JSON object" in first.content  # one system


def test_text_is_free_text(served: dict[str, Any]) -> None:
    model = served["models"][LOCAL]
    assert post(served, response_format={"type": "text"}).status_code == 200
    assert model.schemas[-1] is None
    assert model.calls[-1][0].role == "user"  # no instruction added


def test_a_reply_cut_short_is_length_with_its_text(served: dict[str, Any]) -> None:
    """As OpenAI: the JSON may be invalid then; never an error."""
    response = post(served, TRUNCATED, response_format=schema_format(PERSON), max_tokens=4)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == '{"name": "Ad'


def test_streamed_it_is_a_normal_chunk_stream(served: dict[str, Any]) -> None:
    api = openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=served["client"], max_retries=0
    )
    stream = api.chat.completions.create(
        model=LOCAL,
        messages=ASK,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    assert events[0].choices[0].delta.role == "assistant"
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert json.loads(text) == {"name": "Ada", "age": 36}
    assert events[-1].choices[0].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0


def test_a_backend_that_streams_schemas_streams_them(tmp_path: Path) -> None:
    """A backend whose ``stream`` takes ``json_schema`` streams the constrained reply."""

    class Streaming(ScriptedChatModel):
        def stream(  # type: ignore[override]
            self,
            messages: Sequence[ChatMessage],
            params: GenerationParams | None = None,
            *,
            json_schema: dict[str, Any] | None = None,
        ) -> Iterator[Any]:
            self.schemas.append(json_schema)
            return super().stream(messages, params)

    model = Streaming(['{"a": 1}'], uri="local:streaming")
    workspace = Workspace.open(tmp_path / "ws")
    app = create_app(
        Catalog(chat_models={"m": model}),
        Runtime.from_workspace(workspace),
        ServeConfig(monitor=None),
    )
    with TestClient(app) as client:
        body = {"model": "m", "messages": ASK, "response_format": {"type": "json_object"}}
        response = client.post(URL, json={**body, "stream": True})
    workspace.close()
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    assert [d for d in deltas if d] == ['{"a": ', "1} "]  # word by word, as it streams
    assert {"type": "object"} in model.schemas


def test_a_remote_model_gets_the_schema_for_its_upstream(served: dict[str, Any]) -> None:
    model = served["models"][REMOTE]
    response = post(served, REMOTE, response_format=schema_format(PERSON))
    assert response.status_code == 200, response.text
    assert model.schemas[-1] == PERSON


# --- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response_format", "param", "code", "words"),
    [
        ({"type": "json_schema"}, "response_format.json_schema", "missing_required_parameter", ""),
        (
            {"type": "json_schema", "json_schema": {"schema": PERSON}},
            "response_format.json_schema.name",
            "missing_required_parameter",
            "Missing required parameter",
        ),
        (schema_format(PERSON, name="a person"), "response_format.json_schema.name", None, ""),
        ({"type": "xml"}, "response_format.type", "invalid_value", "json_schema"),
        (
            {"type": "json_object", "json_schema": {"name": "x"}},
            "response_format.json_schema",
            None,
            "only for",
        ),
        (schema_format([1]), "response_format.json_schema.schema", None, ""),
        (
            schema_format({"type": "strin"}),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "valid JSON Schema",
        ),
        (
            schema_format({"$ref": "https://example.com/schema.json"}),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "not a local reference",
        ),
        (
            schema_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/Gone"}}}),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "points at nothing",
        ),
        (
            schema_format({"type": "object", "properties": {"a": {"type": "string"}}}, strict=True),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "'additionalProperties' is required",
        ),
        (
            schema_format({**PERSON, "required": ["name"]}, strict=True),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "Missing 'age'",
        ),
        (
            schema_format({"anyOf": [PERSON]}, strict=True),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            'type: \\"object\\"',
        ),
        (  # a valid JSON Schema the local grammar cannot express
            schema_format({"not": {"type": "string"}}),
            "response_format.json_schema.schema",
            "invalid_json_schema",
            "cannot constrain decoding",
        ),
    ],
)
def test_bad_response_formats_are_400s(
    served: dict[str, Any],
    response_format: dict[str, Any],
    param: str,
    code: str | None,
    words: str,
) -> None:
    calls = len(served["models"][LOCAL].calls)
    for stream in (False, True):  # never a stream that starts and then fails
        message = error_of(
            post(served, response_format=response_format, stream=stream), param, code
        )
        assert words in json.dumps(message)
    assert len(served["models"][LOCAL].calls) == calls  # refused before any generation


def test_a_schema_nested_past_the_limit_is_a_400(served: dict[str, Any]) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    message = error_of(
        post(served, response_format=schema_format(schema)), "response_format.json_schema.schema"
    )
    assert "nests deeper" in message


def test_what_cannot_honour_a_schema_says_so(served: dict[str, Any]) -> None:
    unconstrained = post(served, HF, response_format={"type": "json_object"})
    assert "transformers" in error_of(unconstrained, "response_format", "unsupported_parameter")
    stacked = post(served, "stack:echo", response_format=schema_format(PERSON))
    assert "app stack" in error_of(stacked, "response_format", "unsupported_parameter")
    text = post(served, "stack:echo", response_format={"type": "text"})
    assert text.status_code == 200, text.text


# --- for real: the shipped model, the openai client and LangChain ---------------------------

MODEL = "local:smollm2-135m"


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shipped_model_server(tmp_path_factory.mktemp("structured-real"), MODEL) as url:
        yield url


@pytest.mark.model
def test_the_openai_client_parses_a_pydantic_model(real: str) -> None:
    api = openai.OpenAI(base_url=real + "/v1", api_key="x", max_retries=0, timeout=120)
    completion = api.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a city in France and its country."}],
        response_format=City,  # sent as a strict json_schema
        max_tokens=40,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.model
def test_langchain_with_structured_output(real: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=real + "/v1", api_key="x", model=MODEL, max_tokens=40, temperature=0, timeout=120
    )  # type: ignore[call-arg]
    city = llm.with_structured_output(City, method="json_schema").invoke("Name a city in France.")
    assert isinstance(city, City)
