"""The OpenAI wire format: request bodies (validated) and response bodies (built).

Requests are validated the way OpenAI's own server validates them: nothing a client sends is
silently dropped. A field this server does not know is refused (400, ``unknown_parameter``);
a field OpenAI defines that this server cannot honour (logprobs, penalties, ...) is
accepted only at the value that changes nothing (``null``, 0, false, empty), so clients that
send defaults or round-trip a previous answer's message (``"refusal": null``) keep working,
and refused at any other value (400, ``unsupported_parameter``). Structured outputs
(``response_format``) and tools are served (see :mod:`slmops.serve.structured`); their
schemas, tool names and the tool messages of a conversation are checked here as OpenAI
checks them. Strings must be valid Unicode (no lone surrogates: they cannot
be encoded for the model, the trace store or the response).

The response models below document the responses in the OpenAPI schema; the endpoints build
the bodies as plain dicts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from slmops.serve.structured import INVALID_SCHEMA, SchemaError, check_schema

SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON reader holds exactly
UNSUPPORTED = "unsupported_parameter"  # an OpenAI field this server cannot honour
UNSUPPORTED_VALUE = "unsupported_value"  # a value of a supported field it cannot honour
INVALID_UNICODE = "invalid_unicode"
MISSING = "missing_required_parameter"
INVALID_TOOL_CHOICE = "invalid_tool_choice"  # a tool_choice the tools given cannot meet
INVALID_TOOL_MESSAGE = "invalid_tool_message"  # tool calls and results that do not pair up
LONE_SURROGATE = "the text holds a lone surrogate (\\ud800-\\udfff): not valid Unicode"


class RequestValueError(ValueError):
    """Raised by a validator: what is wrong (``kind``, the error code a client gets for the
    kinds above) and the message to answer with, as is. ``field``: where, below the value
    validated (a model's check of several fields names the one at fault: ``tool_call_id``,
    ``messages.3``)."""

    def __init__(self, kind: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestValueError(INVALID_UNICODE, LONE_SURROGATE) from None
    return value


def _json_integer(value: Any) -> Any:
    """An integer as JSON has them: ``2`` or ``2.0``, never ``true`` or ``"2"``."""
    if isinstance(value, bool | str):
        raise RequestValueError("int_type", "Input should be a valid integer")
    return value


# (constraints before the validator, so the JSON schema carries them as minimum/maximum)
Integer = Annotated[int, BeforeValidator(_json_integer)]
Count = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]
Seed = Annotated[int, Field(ge=-SAFE_INTEGER, le=SAFE_INTEGER), BeforeValidator(_json_integer)]

Text = Annotated[str, AfterValidator(_valid_unicode)]
"""Any string a request carries: valid Unicode, so it can reach the model and the trace."""

NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]

# What an unsupported field may be, per field, and why it can be no more.
_WHY: dict[str, str] = {
    "functions": "the deprecated 'functions' are not served; use 'tools'",
    "function_call": "the deprecated 'function_call' is not served; use 'tools' and "
    "'tool_choice' (assistant messages: 'tool_calls')",
    "logprobs": "this server does not return log probabilities",
    "top_logprobs": "this server does not return log probabilities",
    "logit_bias": "this server cannot bias tokens",
    "frequency_penalty": "this server does not apply penalties (only 0 is accepted)",
    "presence_penalty": "this server does not apply penalties (only 0 is accepted)",
    "audio": "this server answers with text only",
    "modalities": "this server answers with text only (modalities may only be ['text'])",
    "prediction": "this server does not use predicted outputs",
    "reasoning_effort": "the models served here do not reason on a budget",
    "verbosity": "the models served here have no verbosity setting",
    "web_search_options": "this server does not search the web",
    "store": "this server does not store completions for later retrieval (every answer is "
    "traced in the workspace)",
    "metadata": "this server does not store completions, so it has nowhere to keep metadata",
    "service_tier": "this server has one service tier ('auto' or 'default')",
    "name": "participant names are not passed to the model; put the name in the content",
    "refusal": "a refusal is not passed to the model; put the text in the content",
    "annotations": "annotations are not passed to the model",
    "suffix": "this server does not insert text (no suffix)",
    "best_of": "this server generates one completion per request (best_of may only be 1)",
    "dimensions": "the embedders served here return their full dimension",
}


def _same(value: Any, neutral: Any) -> bool:
    if isinstance(value, bool) or isinstance(neutral, bool):
        return type(value) is type(neutral) and value == neutral
    if isinstance(value, int | float) and isinstance(neutral, int | float):
        return value == neutral
    return type(value) is type(neutral) and value == neutral


def _only(*accepted: Any) -> AfterValidator:
    """For an OpenAI field this server cannot honour: the value is accepted only as one of
    ``accepted`` (what OpenAI itself does without the field), refused otherwise with the
    reason."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if not any(_same(value, a) for a in accepted):
            name = info.field_name or "this field"
            why = _WHY.get(name, "this server cannot honour it")
            shown = ", ".join("null" if a is None else repr(a) for a in accepted)
            raise RequestValueError(
                UNSUPPORTED, f"'{name}' is not supported: {why}; leave it out or send {shown}"
            )
        return value

    return AfterValidator(check)


def _enum(*accepted: Any) -> WithJsonSchema:
    return WithJsonSchema({"enum": list(accepted), "description": "not supported: only these"})


_Null = Annotated[Any, _only(None), _enum(None)]
_NullOrZero = Annotated[Any, _only(None, 0), _enum(None, 0)]
_NullOrFalse = Annotated[Any, _only(None, False), _enum(None, False)]
_NullOrEmptyList = Annotated[Any, _only(None, []), _enum(None, [])]
_NullOrEmptyDict = Annotated[Any, _only(None, {}), _enum(None, {})]
_NullOrNone = Annotated[Any, _only(None, "none"), _enum(None, "none")]
_NullOrOne = Annotated[Any, _only(None, 1), _enum(None, 1)]
_TextOnly = Annotated[Any, _only(None, ["text"]), _enum(None, ["text"])]
_OneTier = Annotated[Any, _only(None, "auto", "default"), _enum(None, "auto", "default")]


class _Request(BaseModel):
    # Unknown fields are refused, as OpenAI refuses them ("Unrecognized request argument").
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextPart(_Request):
    type: Literal["text"]
    text: Text


def _content(value: Any) -> Any:
    """Name the part a model cannot read (an image, audio, a file) before the union's own,
    less helpful errors."""
    if isinstance(value, list):
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise RequestValueError(
                    UNSUPPORTED_VALUE,
                    f"content parts of type '{kind[:40]}' are not supported: the models served "
                    "here read text only (parts of type 'text')",
                )
    return value


def _role(value: Any) -> Any:
    if value == "function":
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            "messages with role 'function' (the deprecated functions API) are not supported: "
            "send tool results as messages with role 'tool' and a 'tool_call_id'",
        )
    return value


def _tool_name(value: Any) -> Any:
    if isinstance(value, str) and not TOOL_NAME.fullmatch(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise RequestValueError(
            "invalid_value",
            f"{shown!r} is not a valid name: names are 1 to 64 letters, digits, underscores "
            "and dashes (^[a-zA-Z0-9_-]{1,64}$)",
        )
    return value


TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
Name = Annotated[
    str,
    AfterValidator(_tool_name),
    WithJsonSchema({"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}),
]
"""A function's or a JSON schema's name, as OpenAI allows them."""

JSONSchema = dict[str, Any]


class FunctionCall(_Request):
    name: NonEmptyText
    arguments: Text  # JSON text, as the model wrote it


class ToolCall(_Request):
    """A call an assistant made, sent back in the conversation."""

    id: NonEmptyText
    type: Literal["function"]
    function: FunctionCall


class Message(_Request):
    role: Annotated[
        Literal["system", "user", "assistant", "developer", "tool"], BeforeValidator(_role)
    ]
    content: Annotated[Text | list[TextPart] | None, BeforeValidator(_content)] = None
    tool_calls: list[ToolCall] | None = None  # an assistant's
    tool_call_id: NonEmptyText | None = None  # a tool result's: the call it answers
    # what OpenAI's own messages carry, accepted when empty (a previous answer sent back)
    name: _Null = None
    refusal: _Null = None
    function_call: _Null = None
    audio: _Null = None
    annotations: _NullOrEmptyList = None

    @model_validator(mode="after")
    def _fields_of_the_role(self) -> Message:
        if self.role == "tool":
            if self.tool_call_id is None:
                raise RequestValueError(
                    MISSING,
                    "Missing required parameter: a message with role 'tool' needs the "
                    "'tool_call_id' of the call it answers",
                    field="tool_call_id",
                )
            if self.content is None:
                raise RequestValueError(
                    MISSING,
                    "Missing required parameter: a message with role 'tool' needs 'content' "
                    "(the tool's result)",
                    field="content",
                )
        elif self.tool_call_id is not None:
            raise RequestValueError(
                INVALID_TOOL_MESSAGE,
                f"'tool_call_id' is only for messages with role 'tool', not '{self.role}'",
                field="tool_call_id",
            )
        if self.tool_calls and self.role != "assistant":
            raise RequestValueError(
                INVALID_TOOL_MESSAGE,
                f"'tool_calls' are only for messages with role 'assistant', not '{self.role}'",
                field="tool_calls",
            )
        ids = [call.id for call in self.tool_calls or []]
        if len(set(ids)) != len(ids):
            raise RequestValueError(
                INVALID_TOOL_MESSAGE,
                "the tool calls of one message need distinct ids",
                field="tool_calls",
            )
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Request):
    include_usage: bool = Field(False, strict=True)


def _schema_check(schema: Any, *, strict: bool, label: str, field: str) -> None:
    try:
        check_schema(schema, strict=strict, label=label)
    except SchemaError as problem:
        raise RequestValueError(INVALID_SCHEMA, str(problem), field=field) from None


class JSONSchemaFormat(_Request):
    name: Name
    description: Text | None = None
    schema_: JSONSchema | None = Field(None, alias="schema")  # null: any JSON object
    strict: bool | None = Field(None, strict=True)

    @model_validator(mode="after")
    def _valid_schema(self) -> JSONSchemaFormat:
        if self.schema_ is not None:
            label = f"response_format '{self.name}'"
            _schema_check(self.schema_, strict=bool(self.strict), label=label, field="schema")
        return self


FORMAT_TYPES = ("text", "json_object", "json_schema")


def _format_type(value: Any) -> Any:
    if value not in FORMAT_TYPES:
        shown = str(value)[:40]
        raise RequestValueError(
            "invalid_value",
            f"'{shown}' is not a response format: supported values are 'text', "
            "'json_object' and 'json_schema'",
        )
    return value


class ResponseFormat(_Request):
    type: Annotated[Literal["text", "json_object", "json_schema"], BeforeValidator(_format_type)]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_for_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise RequestValueError(
                MISSING,
                "Missing required parameter: 'response_format.json_schema' (with 'name' and "
                "'schema')",
                field="json_schema",
            )
        if self.type != "json_schema" and self.json_schema is not None:
            raise RequestValueError(
                "invalid_value",
                f"'json_schema' is only for response_format of type 'json_schema', not "
                f"'{self.type}'",
                field="json_schema",
            )
        return self


class FunctionDefinition(_Request):
    name: Name
    description: Text | None = None
    parameters: JSONSchema | None = None  # null: no parameters
    strict: bool | None = Field(None, strict=True)

    @model_validator(mode="after")
    def _valid_parameters(self) -> FunctionDefinition:
        if self.parameters is not None:
            label = f"function '{self.name}'"
            _schema_check(
                self.parameters, strict=bool(self.strict), label=label, field="parameters"
            )
        return self


def _function_tool(value: Any) -> Any:
    if value != "function":
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            f"tools of type '{str(value)[:40]}' are not supported: only tools of type 'function'",
        )
    return value


class ToolDefinition(_Request):
    type: Annotated[Literal["function"], BeforeValidator(_function_tool)]
    function: FunctionDefinition


class ToolChoiceFunction(_Request):
    name: NonEmptyText


class NamedToolChoice(_Request):
    type: Annotated[Literal["function"], BeforeValidator(_function_tool)]
    function: ToolChoiceFunction


def _tool_choice(value: Any) -> Any:
    if isinstance(value, str) and value not in ("none", "auto", "required"):
        raise RequestValueError(
            "invalid_value",
            f"'{value[:40]}' is not a tool choice: supported values are 'none', 'auto', "
            '\'required\' or {"type": "function", "function": {"name": ...}}',
        )
    if isinstance(value, dict) and value.get("type") not in (None, "function"):
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            f"tool_choice of type '{str(value.get('type'))[:40]}' is not supported: use "
            "'none', 'auto', 'required' or {\"type\": \"function\", ...}",
        )
    return value


ToolChoice = Annotated[
    Literal["none", "auto", "required"] | NamedToolChoice, BeforeValidator(_tool_choice)
]


def _one_choice(value: int) -> int:
    if value != 1:
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            f"n is {value}: this server returns exactly one choice per request (n=1); send "
            "several requests for several answers",
        )
    return value


def _stops(value: Any) -> Any:
    if isinstance(value, list) and len(value) > 4:
        raise RequestValueError("too_long", "at most 4 stop sequences")
    return value


Stop = Annotated[
    NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=4)] | None,
    BeforeValidator(_stops),
]


class _Sampling(_Request):
    model: NonEmptyText
    # a number is a JSON number, a flag true or false (not "yes", not 1)
    max_tokens: Count | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0, strict=True)  # null: 1
    top_p: float | None = Field(None, gt=0.0, le=1.0, strict=True)  # null: 1
    stop: Stop = None
    seed: Seed | None = None
    stream: bool | None = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    n: Annotated[Integer, AfterValidator(_one_choice), WithJsonSchema({"enum": [1]})] | None = 1
    user: Text | None = None
    # known to OpenAI, changing nothing at these values
    frequency_penalty: _NullOrZero = None
    presence_penalty: _NullOrZero = None
    logit_bias: _NullOrEmptyDict = None

    # the fields a stack decides itself (in its manifest), so a request cannot set them
    SAMPLING_FIELDS: ClassVar[tuple[str, ...]] = ()

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_given(self) -> list[str]:
        """The sampling fields this request set (to something other than null)."""
        given = ("max_tokens", "temperature", "top_p", "stop", "seed", *self.SAMPLING_FIELDS)
        return [f for f in given if f in self.model_fields_set and getattr(self, f) is not None]


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Count | None = None
    response_format: ResponseFormat | None = None
    logprobs: _NullOrFalse = None
    top_logprobs: _NullOrZero = None
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None  # null: "auto" with tools, "none" without
    parallel_tool_calls: bool | None = Field(None, strict=True)  # null: true
    functions: _NullOrEmptyList = None
    function_call: _NullOrNone = None
    audio: _Null = None
    modalities: _TextOnly = None
    prediction: _Null = None
    reasoning_effort: _Null = None
    verbosity: _Null = None
    web_search_options: _Null = None
    store: _NullOrFalse = None
    metadata: _NullOrEmptyDict = None
    service_tier: _OneTier = None
    # identifiers and cache hints: they change no answer
    safety_identifier: Text | None = None
    prompt_cache_key: Text | None = None

    SAMPLING_FIELDS = ("max_completion_tokens",)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @model_validator(mode="after")
    def _tools_and_their_messages(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or []]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise RequestValueError(
                    "invalid_value",
                    f"tool names must be unique: '{name}' is given twice",
                    field=f"tools.{i}.function.name",
                )
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not names:
            raise RequestValueError(
                INVALID_TOOL_CHOICE,
                f"Invalid value for 'tool_choice': {_shown_choice(choice)} is only allowed when "
                "'tools' are specified",
                field="tool_choice",
            )
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise RequestValueError(
                INVALID_TOOL_CHOICE,
                f"Invalid value for 'tool_choice': no function named "
                f"'{choice.function.name[:64]}' in 'tools'",
                field="tool_choice.function.name",
            )
        _check_tool_messages(self.messages)
        return self


def _shown_choice(choice: Any) -> str:
    return f"'{choice}'" if isinstance(choice, str) else "a named function"


def _check_tool_messages(messages: list[Message]) -> None:
    """OpenAI's rules: a tool message answers a call of the assistant message before it (with
    only tool messages between), and every call of an assistant message is answered."""
    open_calls: dict[str, bool] = {}  # the last assistant's call ids -> answered
    asked_at = 0
    for i, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in open_calls:
                raise RequestValueError(
                    INVALID_TOOL_MESSAGE,
                    "messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no call with id '{str(message.tool_call_id)[:64]}')",
                    field=f"messages.{i}.tool_call_id",
                )
            open_calls[str(message.tool_call_id)] = True
            continue
        _all_answered(open_calls, asked_at)
        open_calls = {call.id: False for call in message.tool_calls or []}
        asked_at = i
    _all_answered(open_calls, asked_at)


def _all_answered(calls: dict[str, bool], index: int) -> None:
    unanswered = [call for call, answered in calls.items() if not answered]
    if unanswered:
        raise RequestValueError(
            INVALID_TOOL_MESSAGE,
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(c[:64] for c in unanswered[:8])}",
            field=f"messages.{index}.tool_calls",
        )


class CompletionRequest(_Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]  # one prompt
    echo: bool | None = Field(False, strict=True)
    logprobs: _Null = None
    suffix: _Null = None
    best_of: _NullOrOne = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Request):
    model: NonEmptyText
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: _Null = None
    user: Text | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --- responses (for the OpenAPI schema) ---------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, whatever its status: OpenAI's shape."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class FunctionCalled(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCalled(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCalled


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None  # null when the answer is tool calls
    tool_calls: list[ToolCalled] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    """A whole answer; with ``"stream": true`` the same answer comes as server-sent events
    (``chat.completion.chunk`` objects, then ``data: [DONE]``)."""

    model_config = ConfigDict(extra="allow")  # a stack's answer adds its ``slmops`` field

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice] = Field(min_length=1, max_length=1)
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = None  # in a call's first delta
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None  # in a call's first delta
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None  # in the first chunk
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat answer."""

    model_config = ConfigDict(extra="allow")  # the last one carries the ``slmops`` field

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice] = Field(min_length=1, max_length=1)
    usage: Usage | None = None  # in the last one, with stream_options.include_usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice] = Field(min_length=1, max_length=1)
    usage: Usage


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None


class TextCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice] = Field(min_length=1, max_length=1)
    usage: Usage | None = None  # in the last one, with stream_options.include_usage


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class EmbeddingList(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class FeedbackStored(BaseModel):
    object: Literal["feedback"]
    id: int | str
    trace_id: str
    stack: str | None
    source: str
    score: float | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    models: list[str]
