"""Structured outputs and tool calls for ``/v1/chat/completions``, by grammar-constrained JSON.

``response_format`` ``json_object`` and ``json_schema`` constrain the reply to a JSON Schema
(``json_object``: ``{"type": "object"}``), which a local model's backend turns into a grammar
(``ChatModel.chat(json_schema=...)``); a remote OpenAI-compatible model passes it upstream.

Tool calls are structured output too. The models served here have no tool support of their
own (the shipped model's chat template knows no tools), so the server describes the tools in
a system message and constrains the reply to one JSON object:

* a tool call (``tool_choice`` ``"required"``, a named function, or ``"auto"``)::

      {"tool_calls": [{"name": "<one of the tools>", "arguments": {<its parameters>}}]}

  ``name`` is a ``const`` per tool and ``arguments`` that tool's ``parameters`` schema (an
  ``anyOf`` over the tools); one call, or up to :data:`MAX_PARALLEL_CALLS` with
  ``parallel_tool_calls``;
* or, with ``"auto"`` only, an answer: ``{"content": "<text>"}`` (with a ``json_*``
  ``response_format`` as well, ``content`` is that format's JSON, sent as its text).

The reply is then sent as OpenAI sends it: ``message.tool_calls`` (arguments as a JSON string),
``content: null`` and ``finish_reason: "tool_calls"``, or the answer's text as ``content``.
Earlier tool calls and their results are rendered into the conversation in the same JSON (and
as user messages starting ``Tool result``), so the model reads what it called and got back.

The model's reply is external input: a reply that does not parse as the plan expects (a
generation cut short by ``max_tokens``, a backend that ignored the grammar) is answered as
plain ``content`` with the model's finish reason, never an error.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from slmops.errors import ModelError
from slmops.models.base import ChatMessage

if TYPE_CHECKING:  # (protocol imports the schema checks from here)
    from slmops.serve.protocol import ChatCompletionRequest, Message

INVALID_SCHEMA = "invalid_json_schema"  # the error code for a schema this server refuses
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays in one schema (grammar converters recurse)
MAX_PARALLEL_CALLS = 8  # tool calls in one reply, with parallel_tool_calls
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}  # response_format json_object

# keywords whose values are JSON data, not schemas: a "$ref" in there is data
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)


class SchemaError(ValueError):
    """A JSON Schema this server refuses, and why (the message is shown to the client)."""


# --- checking schemas -----------------------------------------------------------------------


def check_schema(schema: Any, *, strict: bool, label: str) -> None:
    """Refuse a schema that is not a JSON Schema, that reaches outside itself (``$ref`` to a
    URL: only local references, ``#/$defs/...``), or, with ``strict``, that breaks OpenAI's
    strict-mode rules (an object at the root; every object with ``additionalProperties: false``
    and all its properties required). ``label`` names the schema in messages
    (``response_format 'person'``, ``function 'get_weather'``)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"Invalid schema for {label}: a JSON Schema is a JSON object")
    _check_depth(schema, label)
    _check_refs(schema, label)
    _check_metaschema(schema, label)
    if strict:
        _check_strict(schema, label)


def _check_depth(schema: dict[str, Any], label: str) -> None:
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(
                f"Invalid schema for {label}: it nests deeper than {MAX_SCHEMA_DEPTH} levels"
            )
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _schema_nodes(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """Every subschema with its path (keys only), skipping JSON data (``const``, ``enum``...)."""
    if not isinstance(schema, dict):
        return
    yield schema, path
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            continue
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _schema_nodes(sub, (*path, key, str(name)))
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from _schema_nodes(sub, (*path, key, str(i)))
        elif key in _SUBSCHEMAS:
            if isinstance(value, list):  # draft-4 tuple items
                for i, sub in enumerate(value):
                    yield from _schema_nodes(sub, (*path, key, str(i)))
            else:
                yield from _schema_nodes(value, (*path, key))


def resolve_pointer(root: Any, ref: str) -> Any:
    """The value ``ref`` (``#/$defs/Name``) points at in ``root``; KeyError if none."""
    fragment = unquote(ref[1:])
    if fragment == "":
        return root
    if not fragment.startswith("/"):
        raise KeyError(ref)
    target = root
    for raw in fragment[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise KeyError(ref)
    return target


def _check_refs(schema: dict[str, Any], label: str) -> None:
    for node, _path in _schema_nodes(schema):
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                raise SchemaError(f"Invalid schema for {label}: '{keyword}' is not supported")
        ref = node.get("$ref")
        if ref is None:
            continue
        if not isinstance(ref, str):
            raise SchemaError(f"Invalid schema for {label}: '$ref' must be a string")
        if not ref.startswith("#"):
            raise SchemaError(
                f"Invalid schema for {label}: '$ref' {ref[:100]!r} is not a local reference; "
                "only references within the schema ('#/$defs/Name') are supported"
            )
        try:
            resolve_pointer(schema, ref)
        except KeyError:
            raise SchemaError(
                f"Invalid schema for {label}: '$ref' {ref[:100]!r} points at nothing in the schema"
            ) from None


def _check_metaschema(schema: dict[str, Any], label: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as NotASchema

    try:
        Draft202012Validator.check_schema(schema)
    except NotASchema as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" (at '{where}')" if where else ""
        raise SchemaError(
            f"Invalid schema for {label}: {str(exc.message)[:300]}{at}; it must be a valid "
            "JSON Schema"
        ) from None
    except RecursionError:
        raise SchemaError(f"Invalid schema for {label}: it nests too deeply") from None


def _is_object(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def _check_strict(schema: dict[str, Any], label: str) -> None:
    """OpenAI's strict-mode rules, in its words."""
    if schema.get("type") != "object" or "anyOf" in schema:
        shown = json.dumps(schema.get("type"))
        raise SchemaError(
            f"Invalid schema for {label}: schema must be a JSON Schema of 'type: \"object\"', "
            f"got 'type: {shown}'" + (" (with 'anyOf' at the root)" if "anyOf" in schema else "")
        )
    for node, path in _schema_nodes(schema):
        if not _is_object(node):
            continue
        context = tuple(p for p in path)
        if node.get("additionalProperties") is not False:
            raise SchemaError(
                f"Invalid schema for {label}: In context={context}, 'additionalProperties' is "
                "required to be supplied and to be false"
            )
        properties = node.get("properties", {})
        required = node.get("required", [])
        missing = [name for name in properties if name not in required]
        if missing:
            raise SchemaError(
                f"Invalid schema for {label}: In context={context}, 'required' is required to "
                "be supplied and to be an array including every key in properties. Missing "
                f"{missing[0]!r}"
            )


def grammar_problem(schema: dict[str, Any]) -> str | None:
    """Why a local model cannot constrain its decoding to ``schema``, or None when it can:
    checked by the local backend's own grammar engine before a model is called, so an
    unsupported schema is a 400 before any stream starts."""
    from slmops.models.llamacpp import check_json_schema

    try:
        check_json_schema(schema)
    except ModelError as exc:
        return str(exc)
    return None


# --- what the model is asked for ------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ReplyPlan:
    """How a structured reply is asked for and read back.

    ``schema``: what decoding is constrained to. ``instruction``: the system text that tells
    the model. ``tools``: the callable tools (empty: no tool mode). ``answer``: in tool mode,
    whether (and how) the model may answer instead of calling (None: it must call)."""

    schema: dict[str, Any]
    instruction: str
    tools: tuple[Tool, ...] = ()
    answer: Literal["text", "json"] | None = None
    mode: str = "json_schema"  # for the trace: json_object, json_schema, tools


def _relocated(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``schema`` with its local references rewritten for a new place in a bigger schema
    (``#/$defs/X`` -> ``{prefix}/$defs/X``)."""

    def rewrite(value: Any, data: bool = False) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not data and key == "$ref" and isinstance(item, str) and item.startswith("#"):
                    out[key] = prefix + item[1:]
                else:
                    out[key] = rewrite(item, data or key in _DATA_KEYWORDS)
            return out
        if isinstance(value, list):
            return [rewrite(item, data) for item in value]
        return value

    result: dict[str, Any] = rewrite(schema)
    return result


def _format_schema(body: ChatCompletionRequest) -> tuple[dict[str, Any], str] | None:
    """The schema a ``json_*`` response_format asks for, and the words for the model."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object" or fmt.json_schema is None:
        return JSON_OBJECT_SCHEMA, "a JSON object"
    spec = fmt.json_schema
    schema = spec.schema_ if spec.schema_ is not None else JSON_OBJECT_SCHEMA
    words = f"JSON matching this JSON schema ({spec.name}"
    words += f": {spec.description})" if spec.description else ")"
    return schema, f"{words}: {json.dumps(schema, ensure_ascii=False)}"


def tools_of(body: ChatCompletionRequest) -> tuple[Tool, ...]:
    return tuple(
        Tool(
            tool.function.name,
            tool.function.description,
            tool.function.parameters
            if tool.function.parameters is not None
            else {"type": "object", "properties": {}},
        )
        for tool in body.tools or []
    )


def plan_reply(body: ChatCompletionRequest) -> ReplyPlan | None:
    """What the reply must be (None: free text, as without these fields)."""
    formatted = _format_schema(body)
    choice = body.tool_choice
    tools = tools_of(body)
    if not tools or choice == "none":
        if formatted is None:
            return None
        wanted, words = formatted
        mode = body.response_format.type if body.response_format else "json_schema"
        return ReplyPlan(wanted, f"Reply with {words}. Reply with the JSON only.", mode=mode)
    if choice is not None and not isinstance(choice, str):
        tools = tuple(t for t in tools if t.name == choice.function.name)
        must = f"You must call the tool '{tools[0].name}'."
    elif choice == "required":
        must = "You must call one or more of these tools."
    else:  # auto (OpenAI's default with tools)
        must = (
            "Call a tool when you need its result. When the conversation already has the tool "
            "results you need, or no tool helps, answer directly."
        )
    answer: Literal["text", "json"] | None = None
    if choice in (None, "auto"):
        answer = "text" if formatted is None else "json"
    parallel = body.parallel_tool_calls is not False
    defs = {f"tool{i}": _relocated(t.parameters, f"#/$defs/tool{i}") for i, t in enumerate(tools)}
    call = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": {"$ref": f"#/$defs/tool{i}"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for i, t in enumerate(tools)
        ]
    }
    calls = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "items": call,
                "minItems": 1,
                "maxItems": MAX_PARALLEL_CALLS if parallel else 1,
            }
        },
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    described = "\n".join(
        f"- {t.name}: {t.description or '(no description)'} Parameters (JSON schema): "
        f"{json.dumps(t.parameters, ensure_ascii=False)}"
        for t in tools
    )
    how = (
        'To call tools, reply with JSON: {"tool_calls": [{"name": "<tool name>", '
        '"arguments": {<the arguments>}}]}'
        + (" (one call or several)." if parallel else " (exactly one call).")
    )
    schema: dict[str, Any]
    if answer is None:
        schema = {**calls, "$defs": defs}
    else:
        if formatted is None:
            content: dict[str, Any] = {"type": "string"}
            how += ' To answer directly, reply with JSON: {"content": "<your answer>"}.'
        else:
            content = {"$ref": "#/$defs/answer"}
            defs["answer"] = _relocated(formatted[0], "#/$defs/answer")
            how += (
                ' To answer directly, reply with JSON: {"content": <your answer>}, the answer '
                f"being {formatted[1]}."
            )
        direct = {
            "type": "object",
            "properties": {"content": content},
            "required": ["content"],
            "additionalProperties": False,
        }
        schema = {"anyOf": [calls, direct], "$defs": defs}
    instruction = f"You have these tools:\n{described}\n\n{must} {how} Reply with the JSON only."
    return ReplyPlan(schema, instruction, tools=tools, answer=answer, mode="tools")


# --- reading the reply back -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message

    def deltas(self) -> list[dict[str, Any]]:
        """The reply as streamed deltas, as OpenAI streams tool calls: per call, one delta
        with its id, type and name (arguments empty), one with its arguments."""
        if not self.tool_calls:
            return [{"content": self.content}] if self.content else []
        deltas: list[dict[str, Any]] = []
        for index, call in enumerate(self.tool_calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            deltas.append(
                {"content": None, "tool_calls": [head]} if index == 0 else {"tool_calls": [head]}
            )
            arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
            deltas.append({"tool_calls": [arguments]})
        return deltas


_ID_CHARACTERS = string.ascii_letters + string.digits


def call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_CHARACTERS) for _ in range(24))


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def interpret(plan: ReplyPlan | None, text: str, finish_reason: str) -> Reply:
    """The reply to send for the model's ``text``: tool calls or content."""
    if plan is None or not plan.tools:
        return Reply(text, None, finish_reason)
    as_text = Reply(text, None, finish_reason)  # a reply that is not what was asked for
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return as_text
    if not isinstance(value, dict):
        return as_text
    names = {t.name for t in plan.tools}
    calls = value.get("tool_calls")
    if set(value) == {"tool_calls"} and isinstance(calls, list) and calls:
        made = []
        for call in calls:
            if not (
                isinstance(call, dict)
                and call.get("name") in names
                and "arguments" in call
                and set(call) == {"name", "arguments"}
            ):
                return as_text
            try:
                arguments = json.dumps(call["arguments"], ensure_ascii=False)
            except (ValueError, RecursionError):  # nested past what the encoder takes
                return as_text
            made.append(
                {
                    "id": call_id(),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": arguments},
                }
            )
        return Reply(None, made, "tool_calls")
    if plan.answer is not None and set(value) == {"content"}:
        content = value["content"]
        if plan.answer == "text" and isinstance(content, str):
            return Reply(content, None, finish_reason)
        if plan.answer == "json":
            try:
                return Reply(json.dumps(content, ensure_ascii=False), None, finish_reason)
            except (ValueError, RecursionError):
                return as_text
    return as_text


# --- the conversation the model reads -------------------------------------------------------


def _arguments(text: str) -> Any:
    """A tool call's arguments as sent back: JSON when they are, else the text itself."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return text


def conversation(messages: Sequence[Message]) -> list[ChatMessage]:
    """The request's messages as the model's roles (system, user, assistant): ``developer``
    is ``system``; an assistant's tool calls are written as the JSON it is asked to reply
    with; tool results become a user message naming the tool (consecutive results, one)."""
    out: list[ChatMessage] = []
    names: dict[str, str] = {}  # tool call id -> function name
    results: list[str] = []

    def flush() -> None:
        if results:
            out.append(ChatMessage(role="user", content="\n\n".join(results)))
            results.clear()

    for message in messages:
        if message.role == "tool":
            call = message.tool_call_id or ""
            name = names.get(call, "a tool")
            results.append(f"Tool result from {name} (call {call}):\n{message.text()}")
            continue
        flush()
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for tool_call in message.tool_calls:
                names[tool_call.id] = tool_call.function.name
                calls.append(
                    {
                        "name": tool_call.function.name,
                        "arguments": _arguments(tool_call.function.arguments),
                    }
                )
            said = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            text = message.text()
            out.append(ChatMessage(role="assistant", content=f"{text}\n{said}" if text else said))
            continue
        role = "system" if message.role == "developer" else message.role
        assert role in ("system", "user", "assistant")
        out.append(ChatMessage(role=role, content=message.text()))
    flush()
    return out


def instructed(messages: list[ChatMessage], instruction: str) -> list[ChatMessage]:
    """``messages`` with ``instruction`` added to the system message (or a new one first)."""
    if messages and messages[0].role == "system":
        first = ChatMessage(role="system", content=f"{messages[0].content}\n\n{instruction}")
        return [first, *messages[1:]]
    return [ChatMessage(role="system", content=instruction), *messages]
