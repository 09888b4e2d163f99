"""The OpenAI wire format: request bodies (validated) and response bodies (built).

Requests are validated the way OpenAI's own server validates them: nothing a client sends is
silently dropped. A field this server does not know is refused (400, ``unknown_parameter``);
a field OpenAI defines that this server cannot honour (tools, logprobs, penalties, ...) is
accepted only at the value that changes nothing (``null``, 0, false, empty), so clients that
send defaults or round-trip a previous answer's message (``"refusal": null``,
``"tool_calls": null``) keep working, and refused at any other value (400,
``unsupported_parameter``). Strings must be valid Unicode (no lone surrogates: they cannot
be encoded for the model, the trace store or the response).

The response models below document the responses in the OpenAPI schema; the endpoints build
the bodies as plain dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
)

SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON reader holds exactly
UNSUPPORTED = "unsupported_parameter"  # an OpenAI field this server cannot honour
UNSUPPORTED_VALUE = "unsupported_value"  # a value of a supported field it cannot honour
INVALID_UNICODE = "invalid_unicode"
LONE_SURROGATE = "the text holds a lone surrogate (\\ud800-\\udfff): not valid Unicode"


class RequestValueError(ValueError):
    """Raised by a validator: what is wrong (``kind``, the error code a client gets for the
    kinds above) and the message to answer with, as is."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


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
    "tools": "this server does not call tools",
    "tool_choice": "this server does not call tools (tool_choice may only be 'none')",
    "functions": "this server does not call functions",
    "function_call": "this server does not call functions",
    "tool_calls": "this server does not call tools",
    "tool_call_id": "this server does not call tools",
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
    if value in ("tool", "function"):
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            f"messages with role '{value}' are not supported: this server does not call tools",
        )
    return value


class Message(_Request):
    role: Annotated[Literal["system", "user", "assistant", "developer"], BeforeValidator(_role)]
    content: Annotated[Text | list[TextPart] | None, BeforeValidator(_content)] = None
    # what OpenAI's own messages carry, accepted when empty (a previous answer sent back)
    name: _Null = None
    refusal: _Null = None
    tool_calls: _NullOrEmptyList = None
    tool_call_id: _Null = None
    function_call: _Null = None
    audio: _Null = None
    annotations: _NullOrEmptyList = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Request):
    include_usage: bool = Field(False, strict=True)


def _text_format(value: Any) -> Any:
    if value != "text":
        raise RequestValueError(
            UNSUPPORTED_VALUE,
            f"response_format '{str(value)[:40]}' is not supported yet; use an app stack with "
            "typed output fields",
        )
    return value


class ResponseFormat(_Request):
    type: Annotated[Any, AfterValidator(_text_format), WithJsonSchema({"enum": ["text"]})]
    json_schema: _Null = None


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
    tools: _NullOrEmptyList = None
    tool_choice: _NullOrNone = None
    parallel_tool_calls: bool | None = Field(None, strict=True)  # nothing, without tools
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


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


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


class Delta(BaseModel):
    role: Literal["assistant"] | None = None  # in the first chunk
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None


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
