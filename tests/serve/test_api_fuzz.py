"""``slmops serve`` fuzzed from its own OpenAPI schema with Schemathesis.

Every operation gets the schema's examples, Schemathesis's coverage cases (each boundary and
each way to break each field) and generated requests, valid and invalid, sent in-process to
the real app over scripted models. The properties: no 500 anywhere; the response has a
documented status and content type and fits the documented schema; every error is OpenAI's
``{"error": {"message", "type", "param", "code"}}``; invalid requests are refused; valid ones
to a model are answered (stacks may refuse input their steps cannot take); a key is required.

``SLMOPS_FUZZ_PROFILE=fuzz`` searches much longer, with fresh randomness each run.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.config import SchemathesisConfig

from tests.serve.conftest import FAKE_KEY, fake_app

PROFILE = os.environ.get("SLMOPS_FUZZ_PROFILE", "ci")
MAX_EXAMPLES = {"ci": 25, "fuzz": 1000}[PROFILE]
DETERMINISTIC = PROFILE == "ci"
OPENAI_STATUSES = {400, 401, 404, 405, 408, 413, 415, 429, 431, 500, 503}


def fuzz_config() -> SchemathesisConfig:
    generation: dict[str, Any] = {"max-examples": MAX_EXAMPLES, "database": "none"}
    if DETERMINISTIC:
        generation["deterministic"] = True
    return SchemathesisConfig.from_dict(
        {
            **({"seed": 17} if DETERMINISTIC else {}),
            "generation": generation,
            "phases": {"stateful": {"enabled": False}},
            "auth": {"openapi": {"bearer": {"bearer": FAKE_KEY}}},
            "checks": {
                # built in: on by default, named here so the contract reads in one place
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "negative_data_rejection": {"enabled": True},
                "ignored_auth": {"enabled": True},
                # replaced by valid_requests_are_answered below: a stack may refuse a valid
                # request whose text its steps cannot take, as its own input check decides
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )


def _app_to_fuzz() -> Any:
    """Built at import: Schemathesis makes one test per operation from the schema while
    pytest collects (its fixture-based loader does not run on pytest 9). About 0.3 s."""
    root = Path(tempfile.mkdtemp(prefix="slmops-fuzz-"))
    app, workspace = fake_app(root)

    def remove() -> None:
        workspace.close()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(remove)
    return app


APP = _app_to_fuzz()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=fuzz_config())


def openai_errors(_ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is OpenAI's shape, with one of the statuses the server documents."""
    if response.status_code < 400:
        return None
    if case.path == "/readyz" and response.status_code == 503:
        return None  # "not ready" is a status report, not an error
    assert response.status_code in OPENAI_STATUSES, response.status_code
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    return None


# Rules no OpenAPI schema can state, as OpenAI has them too: a JSON Schema inside the request
# (response_format, a tool's parameters) must be a valid one, strict mode's rules and what the
# model's grammar can express; a tool_choice must name one of the tools given; tool messages
# must answer an assistant's tool calls. A request the schema allows may break them: a 400
# with one of these codes, never a 500 or an unexplained 400.
BEYOND_THE_SCHEMA = {
    "invalid_json_schema",
    "invalid_tool_choice",
    "invalid_tool_message",
    "missing_required_parameter",  # a tool message's tool_call_id, json_schema for its type
}


def valid_requests_are_answered(_ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the schema allows, to a model (not a stack), is answered (or refused for a
    rule beyond the schema, see ``BEYOND_THE_SCHEMA``)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if case.method != "POST" or not isinstance(case.body, dict):
        return None
    if case.path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        return None
    if str(case.body.get("model", "")).startswith("stack:"):
        return None
    if response.status_code == 400:
        code = json.loads(response.content)["error"]["code"]
        assert code in BEYOND_THE_SCHEMA, (response.status_code, response.content[:500])
        return None
    assert response.status_code == 200, (response.status_code, response.content[:500])
    return None


def streams_are_well_formed(_ctx: Any, response: Any, _case: Any) -> bool | None:
    """A stream is server-sent events of JSON objects ending with ``[DONE]``, or an error
    event when the answer failed after the headers were sent."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    events = [
        line.removeprefix("data: ")
        for line in response.content.decode("utf-8").split("\n")
        if line.startswith("data: ")
    ]
    assert events, response.content[:300]
    if events[-1] != "[DONE]":
        assert "error" in json.loads(events[-1]), events[-1]
        return None
    for event in events[:-1]:
        chunk = json.loads(event)
        assert chunk["object"] in ("chat.completion.chunk", "text_completion"), chunk
    return None


@schema.parametrize()
def test_the_api_keeps_its_contract(case: Any) -> None:
    case.call_and_validate(
        additional_checks=[openai_errors, valid_requests_are_answered, streams_are_well_formed]
    )


def test_the_schema_describes_what_the_server_takes() -> None:
    """What makes the fuzzing meaningful: real model names, the server's limits, no field
    left open (unknown fields are refused), and the errors it really returns."""
    document = APP.openapi()
    components = document["components"]["schemas"]
    chat = components["ChatCompletionRequest"]
    assert chat["properties"]["model"]["enum"] == ["local:scripted", "stack:echo", "stack:adder"]
    assert components["EmbeddingRequest"]["properties"]["model"]["enum"] == ["local:fake-embedder"]
    assert {"maximum": 2048, "minimum": 1, "type": "integer"} in chat["properties"]["max_tokens"][
        "anyOf"
    ]
    assert chat["additionalProperties"] is False
    assert components["Message"]["additionalProperties"] is False
    assert chat["properties"]["functions"]["enum"] == [None, []]  # accepted only when empty
    tool = components["FunctionDefinition"]["properties"]
    assert tool["name"]["pattern"] == "^[a-zA-Z0-9_-]{1,64}$"
    assert "JSONSchemaFormat" in components and "NamedToolChoice" in components
    assert "HTTPValidationError" not in components
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert len(operations) == 8
    chat_responses = operations["POST", "/v1/chat/completions"]["responses"]
    assert "422" not in chat_responses
    assert {"200", "400", "401", "404", "408", "413", "415", "429", "431", "500"} <= set(
        chat_responses
    )
    assert set(chat_responses["200"]["content"]) == {"application/json", "text/event-stream"}
    assert operations["POST", "/v1/feedback"]["requestBody"]["content"]["application/json"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
