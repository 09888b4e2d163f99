"""Tool calling on ``/v1/chat/completions``, by grammar-constrained JSON.

In-process over scripted models: the schema the reply is constrained to for each
``tool_choice``, the tools described to the model, earlier calls and results rendered into the
conversation, the reply as OpenAI's ``tool_calls`` (whole and streamed), a reply that is not a
call (never an error), and every 400. Then for real: the shipped model behind uvicorn through
the official ``openai`` client (a forced call whose arguments match the schema, a second turn
with the tool's result) and LangChain's ``bind_tools``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessage

from slmops.core.runtime import Runtime
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.serve.structured import MAX_PARALLEL_CALLS
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import fake_catalog, shipped_model_server

URL = "/v1/chat/completions"
LOCAL, REMOTE, PROSE = "local:tools", "openai:remote", "local:prose"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": CITY},
}
TIME = {"type": "function", "function": {"name": "get-time", "description": "The time now"}}
CALL = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
TWO_CALLS = (
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get-time", "arguments": {}}]}'
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tools")
    workspace = Workspace.open(root / "ws")
    stacks = fake_catalog(root, workspace).stacks
    models = {
        LOCAL: ScriptedChatModel([CALL], uri="local:tools"),
        REMOTE: ScriptedChatModel([CALL], uri="openai:http://127.0.0.1:9/v1#upstream"),
        PROSE: ScriptedChatModel(["It is sunny."], uri="local:prose"),
    }
    app = create_app(
        Catalog(chat_models=models, stacks=stacks),
        Runtime.from_workspace(workspace),
        ServeConfig(monitor=None),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {"client": client, "models": models}
    workspace.close()


def scripted(served: dict[str, Any], reply: str) -> ScriptedChatModel:
    """The local model, answering ``reply`` from now on."""
    model: ScriptedChatModel = served["models"][LOCAL]
    model._replies = [reply]  # (the index is the call count: past the end, the last reply)
    return model


def post(served: dict[str, Any], model: str = LOCAL, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": ASK, "tools": [WEATHER], **fields}
    response: httpx.Response = served["client"].post(URL, json=body)
    return response


def error_of(response: httpx.Response, param: str | None, code: str | None = None) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    message: str = error["message"]
    return message


def api(served: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=served["client"], max_retries=0
    )


# --- the reply asked for ---------------------------------------------------------------------


def test_required_asks_for_a_call_and_answers_with_tool_calls(served: dict[str, Any]) -> None:
    model = scripted(served, CALL)
    response = post(served, tool_choice="required", parallel_tool_calls=False)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    schema = model.schemas[-1]
    assert schema is not None
    # the reply must be a call: an object holding 1 call (no parallel calls) of the tool
    assert "anyOf" not in schema and schema["required"] == ["tool_calls"]
    calls = schema["properties"]["tool_calls"]
    assert (calls["minItems"], calls["maxItems"]) == (1, 1)
    (only,) = calls["items"]["anyOf"]
    assert only["properties"]["name"] == {"const": "get_weather"}
    assert schema["$defs"]["tool0"] == CITY
    jsonschema.validate(json.loads(CALL), schema)
    system = model.calls[-1][0]
    assert system.role == "system"
    assert "get_weather: The weather in a city" in system.content
    assert json.dumps(CITY) in system.content and "must call" in system.content


def test_auto_lets_the_model_answer_in_text(served: dict[str, Any]) -> None:
    model = scripted(served, '{"content": "It is sunny in Paris."}')
    response = post(served, tools=[WEATHER, TIME])  # tool_choice: auto by default
    choice = response.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "It is sunny in Paris."}
    assert choice["finish_reason"] == "stop"
    schema = model.schemas[-1]
    assert schema is not None
    calls, answer = schema["anyOf"]
    assert calls["properties"]["tool_calls"]["maxItems"] == MAX_PARALLEL_CALLS  # parallel
    assert answer["properties"] == {"content": {"type": "string"}}
    names = [
        c["properties"]["name"]["const"]
        for c in calls["properties"]["tool_calls"]["items"]["anyOf"]
    ]
    assert names == ["get_weather", "get-time"]
    assert schema["$defs"]["tool1"] == {"type": "object", "properties": {}}  # no parameters
    for reply in (CALL, TWO_CALLS, '{"content": "x"}'):
        jsonschema.validate(json.loads(reply), schema)


def test_parallel_calls_and_a_named_choice(served: dict[str, Any]) -> None:
    model = scripted(served, TWO_CALLS)
    calls = post(served, tools=[WEATHER, TIME], tool_choice="required").json()["choices"][0]
    names = [c["function"]["name"] for c in calls["message"]["tool_calls"]]
    assert names == ["get_weather", "get-time"]
    assert calls["message"]["tool_calls"][1]["function"]["arguments"] == "{}"
    assert len({c["id"] for c in calls["message"]["tool_calls"]}) == 2
    scripted(served, CALL)
    named = {"type": "function", "function": {"name": "get_weather"}}
    response = post(served, tools=[WEATHER, TIME], tool_choice=named)
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    schema = model.schemas[-1]
    assert schema is not None
    (only,) = schema["properties"]["tool_calls"]["items"]["anyOf"]
    assert only["properties"]["name"] == {"const": "get_weather"}
    assert "get-time" not in model.calls[-1][0].content


def test_none_ignores_the_tools(served: dict[str, Any]) -> None:
    model = scripted(served, "Sunny.")
    response = post(served, tool_choice="none")
    assert response.json()["choices"][0]["message"]["content"].strip() == "Sunny."
    assert model.schemas[-1] is None
    assert model.calls[-1][0].role == "user"


def test_tools_with_a_response_format_wrap_the_answer(served: dict[str, Any]) -> None:
    model = scripted(served, '{"content": {"sky": "clear"}}')
    response_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": CITY}}
    response = post(served, response_format=response_format)
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"sky": "clear"}
    schema = model.schemas[-1]
    assert schema is not None
    assert schema["anyOf"][1]["properties"]["content"] == {"$ref": "#/$defs/answer"}
    assert schema["$defs"]["answer"] == CITY


def test_references_inside_parameters_are_moved_with_them(served: dict[str, Any]) -> None:
    """A tool's ``$defs`` (as pydantic writes them) still resolve inside the reply schema."""
    model = scripted(served, '{"tool_calls": [{"name": "book", "arguments": {"at": {"x": 1}}}]}')
    parameters = {
        "type": "object",
        "properties": {"at": {"$ref": "#/$defs/Point"}},
        "required": ["at"],
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    tool = {"type": "function", "function": {"name": "book", "parameters": parameters}}
    response = post(served, tools=[tool], tool_choice="required")
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    schema = model.schemas[-1]
    assert schema is not None
    assert schema["$defs"]["tool0"]["properties"]["at"] == {"$ref": "#/$defs/tool0/$defs/Point"}
    jsonschema.validate({"tool_calls": [{"name": "book", "arguments": {"at": {"x": 1}}}]}, schema)


def test_a_reply_that_is_no_call_is_content_never_an_error(served: dict[str, Any]) -> None:
    """A backend that ignored the grammar, or a reply cut short: its text, as content."""
    response = post(served, PROSE, tool_choice="required")
    choice = response.json()["choices"][0]
    assert choice["message"]["content"].strip() == "It is sunny."
    assert choice["finish_reason"] == "stop"
    for reply in (
        '{"tool_calls": [{"name": "rm_rf", "arguments": {}}]}',  # not a tool offered
        '{"tool_calls": []}',
        '{"tool_calls": [{"name": "get_weather"}]}',
        "[1, 2]",
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Pa',
    ):
        scripted(served, reply)
        message = post(served, tool_choice="required").json()["choices"][0]["message"]
        assert message == {"role": "assistant", "content": reply}


def test_streamed_calls_arrive_as_openai_deltas(served: dict[str, Any]) -> None:
    scripted(served, TWO_CALLS)
    stream = api(served).chat.completions.create(
        model=LOCAL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    first = events[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None
    assert first.tool_calls[0].id and first.tool_calls[0].function is not None
    assert first.tool_calls[0].function.name == "get_weather"
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        for delta in (event.choices[0].delta.tool_calls or []) if event.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert calls == {
        0: {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"name": "get-time", "arguments": "{}"},
    }
    assert events[-1].choices[0].finish_reason == "tool_calls"
    assert events[-1].usage is not None


def test_a_second_turn_shows_the_model_its_call_and_the_result(served: dict[str, Any]) -> None:
    model = scripted(served, '{"content": "Sunny, 22 C."}')
    previous = ChatCompletionMessage.model_validate(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
    ).model_dump()  # as a chat loop sends it back: refusal, audio ... all null
    messages = [*ASK, previous, {"role": "tool", "tool_call_id": "call_1", "content": "22 C"}]
    response = post(served, messages=messages)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Sunny, 22 C."
    system, user, assistant, result = model.calls[-1]
    assert (system.role, user.role, assistant.role, result.role) == (
        "system",
        "user",
        "assistant",
        "user",
    )
    assert json.loads(assistant.content) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    }
    assert "get_weather" in result.content and "22 C" in result.content
    # and without tools in the request, the history is still read
    scripted(served, "ok")
    assert post(served, messages=messages, tools=None).status_code == 200


# --- what is refused -------------------------------------------------------------------------

CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ],
}


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools.0.function.name",
            None,
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x" * 65}}]},
            "tools.0.function.name",
            None,
        ),
        (
            {"tools": [{"type": "function", "function": {}}]},
            "tools.0.function.name",
            "missing_required_parameter",
        ),
        ({"tools": [{"type": "function"}]}, "tools.0.function", "missing_required_parameter"),
        (
            {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "tools.0.type",
            "unsupported_value",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name", None),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools.0.function.parameters",
            "invalid_json_schema",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "strict": True,
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}},
                            },
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
            "invalid_json_schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]},
            "tools.0.function.parameters",
            "invalid_json_schema",
        ),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "invalid_tool_choice"),
        ({"tool_choice": "any"}, "tool_choice", "invalid_value"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
            "invalid_tool_choice",
        ),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice", "unsupported_value"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", None),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
            "messages.0.tool_call_id",
            "invalid_tool_message",
        ),
        (
            {"messages": [{"role": "tool", "content": "42"}]},
            "messages.0.tool_call_id",
            "missing_required_parameter",
        ),
        ({"messages": [*ASK, CALLED]}, "messages.1.tool_calls", "invalid_tool_message"),
        ({"messages": [*ASK, CALLED, *ASK]}, "messages.1.tool_calls", "invalid_tool_message"),
        (
            {"messages": [*ASK, CALLED, {"role": "tool", "content": "1", "tool_call_id": "c2"}]},
            "messages.2.tool_call_id",
            "invalid_tool_message",
        ),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_call_id": "c1"}]},
            "messages.0.tool_call_id",
            "invalid_tool_message",
        ),
        (
            {"messages": [{**CALLED, "role": "user"}]},
            "messages.0.tool_calls",
            "invalid_tool_message",
        ),
        (
            {"messages": [{"role": "function", "content": "1", "name": "f"}]},
            "messages.0.role",
            "unsupported_value",
        ),
    ],
)
def test_bad_tools_and_tool_messages_are_400s(
    served: dict[str, Any], fields: dict[str, Any], param: str, code: str | None
) -> None:
    model = scripted(served, CALL)
    calls = len(model.calls)
    for stream in (False, True):
        error_of(post(served, stream=stream, **fields), param, code)
    assert len(model.calls) == calls


def test_what_cannot_call_tools_says_so(served: dict[str, Any]) -> None:
    remote = error_of(post(served, REMOTE), "tools", "unsupported_parameter")
    assert "upstream" in remote and "not supported" in remote
    stacked = post(served, "stack:echo")
    assert "app stack" in error_of(stacked, "tools", "unsupported_parameter")
    history = [*ASK, CALLED, {"role": "tool", "content": "1", "tool_call_id": "c1"}]
    stacked_history = post(served, "stack:echo", tools=None, messages=history)
    assert "app stack" in error_of(stacked_history, "messages.1", "unsupported_value")
    # what changes nothing is taken: no tools, tool_choice none
    assert post(served, "stack:echo", tools=[], tool_choice="none").status_code == 200
    assert post(served, REMOTE, tools=None).status_code == 200


# --- for real: the shipped model, the openai client and LangChain ---------------------------

MODEL = "local:smollm2-135m"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shipped_model_server(tmp_path_factory.mktemp("tools-real"), MODEL) as url:
        yield url


@pytest.mark.model
def test_the_shipped_model_calls_a_tool_and_reads_its_result(real: str) -> None:
    client = openai.OpenAI(base_url=real + "/v1", api_key="x", max_retries=0, timeout=120)
    first = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY)  # the grammar's guarantee
    result = {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 22 C"}
    second = client.chat.completions.create(
        model=MODEL,
        messages=[*ASK, choice.message.model_dump(), result],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=40,
        temperature=0,
    )
    answer = second.choices[0]
    # a 135M model may call again or answer: either way, the shape holds
    if answer.finish_reason == "tool_calls":
        assert answer.message.tool_calls and answer.message.tool_calls[0].function.name == (
            "get_weather"
        )
    else:
        assert answer.message.content and answer.message.tool_calls is None


@pytest.mark.model
def test_langchain_bind_tools(real: str) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    # room for every call: LangChain leaves parallel calls on, and the 135M model may call the
    # tool more than once (cut off mid-call, the reply would be text, not calls)
    llm = ChatOpenAI(
        base_url=real + "/v1", api_key="x", model=MODEL, max_tokens=120, temperature=0, timeout=120
    )  # type: ignore[call-arg]
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(ASK[0]["content"])
    assert message.tool_calls, message.content
    assert {call["name"] for call in message.tool_calls} == {"get_weather"}
    assert all(isinstance(call["args"]["city"], str) for call in message.tool_calls)
