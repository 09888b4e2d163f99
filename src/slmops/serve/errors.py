"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the status
code a client expects, for every error the server answers, including the ones the framework
raises itself (an unknown URL, a wrong method, a body that cannot be read) and the ones
nobody expected (500)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from slmops.serve.protocol import (
    INVALID_TOOL_CHOICE,
    INVALID_TOOL_MESSAGE,
    LONE_SURROGATE,
    MISSING,
    RequestValueError,
)
from slmops.serve.structured import INVALID_SCHEMA


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class BodyError(HTTPException):
    """An error found while the body is being received (too large, too slow). Raised from
    ``receive``, inside the framework's own body reading, which passes HTTP exceptions
    through (anything else it turns into a bare 400)."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message, headers=error.headers)
        self.error = error


def unknown_model(model: str, served: list[str]) -> APIError:
    shown = model if len(model) <= 100 else model[:100] + "..."
    return APIError(
        404,
        f"The model '{shown}' does not exist or is not served here; served: {', '.join(served)}",
        param="model",
        code="model_not_found",
    )


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


def _shown_path(request: Request) -> str:
    path = request.url.path
    return path if len(path) <= 200 else path[:200] + "..."


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors, in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc, BodyError):
        return exc.error.response()
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        # OpenAI's words for a URL it does not serve
        error = APIError(404, f"Invalid URL ({request.method} {_shown_path(request)})")
    elif exc.status_code == 405:
        allowed = headers.get("allow", headers.get("Allow", ""))
        error = APIError(
            405,
            f"Method {request.method} is not allowed on {_shown_path(request)}"
            + (f"; use {allowed}" if allowed else ""),
            code="method_not_allowed",
        )
    elif exc.status_code == 400 and exc.__cause__ is not None:
        error = _unreadable_body(exc.__cause__)
    else:
        error = APIError(exc.status_code, str(exc.detail))
    error.headers = {**headers, **error.headers}
    return error.response()


def _unreadable_body(cause: BaseException) -> APIError:
    """Why the framework could not parse a body as JSON (it says only that it could not)."""
    if isinstance(cause, UnicodeDecodeError):
        message = "The request body is not valid UTF-8"
    elif isinstance(cause, RecursionError):
        message = "The request body is not valid JSON: it nests too deeply"
    elif isinstance(cause, ValueError):
        message = f"The request body is not valid JSON: {str(cause)[:200]}"
    else:
        message = "The request body could not be read"
    return APIError(400, message, code="invalid_json")


def unexpected_error(exc: BaseException, request_id: str) -> APIError:
    """A bug: 500 in OpenAI's shape, naming the request id to look for in the logs."""
    return APIError(
        500,
        f"internal error: {type(exc).__name__} (request id {request_id})",
        type="server_error",
    )


_TYPE_TAG = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "null"})
_UNICODE = ("invalid_unicode", "string_unicode")  # ours, and pydantic's for constrained text
_UNSUPPORTED = ("unsupported_parameter", "unsupported_value")
# our own codes whose messages are sent as they are (they name what to change)
_AS_SAID = (*_UNSUPPORTED, MISSING, INVALID_SCHEMA, INVALID_TOOL_CHOICE, INVALID_TOOL_MESSAGE)
# errors that say most about what to change, reported before a union's "not a string"
_FIRST = ("extra_forbidden", *_AS_SAID, *_UNICODE)


def _kind_and_message(error: Any) -> tuple[str, str]:
    """What went wrong and how to say it: a validator's own ``RequestValueError`` as it was
    raised (pydantic reports it as a "Value error, ..."), else pydantic's type and words."""
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, RequestValueError):
        return problem.kind, problem.message
    if error.get("type") == "missing":
        return MISSING, f"Missing required parameter: '{_param(tuple(error.get('loc', ())))}'"
    kind = str(error.get("type", ""))
    message = LONE_SURROGATE if kind in _UNICODE else str(error.get("msg", "invalid request"))
    return kind, message


def _relevance(error: Any) -> int:
    """Which of several errors to report: ours (they say what to change), then a constraint
    the value broke, then a type mismatch (often only the wrong member of a union: a list
    given for ``str | list[str]`` is "not a valid string" as well as "too short")."""
    kind, _ = _kind_and_message(error)
    if kind in _FIRST:
        return 0
    return 2 if kind.endswith("_type") else 1


def _param(location: tuple[Any, ...]) -> str | None:
    """``messages.0.content`` from pydantic's location, without the body prefix and the tags
    pydantic adds for union members (``str``, ``list[TextPart]``, ``function-after[...]``)."""
    parts = [
        str(part)
        for part in location
        if isinstance(part, int)
        or (isinstance(part, str) and _TYPE_TAG.match(part) and part not in _TYPE_NAMES)
    ]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or None


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A body that is not JSON, or JSON that does not fit the request schema: 400, naming
    the field like OpenAI does (``param``)."""
    assert isinstance(exc, RequestValidationError)
    error = min(exc.errors(), key=_relevance)
    kind, message = _kind_and_message(error)
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error") or message
        return APIError(
            400, f"The request body is not valid JSON: {reason}", code="invalid_json"
        ).response()
    param = _param(tuple(error.get("loc", ())))
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, RequestValueError) and problem.field:
        param = f"{param}.{problem.field}" if param else problem.field
    if param is None and kind == MISSING:
        return APIError(
            400, "The request body is empty; send a JSON object", code="invalid_json"
        ).response()
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return APIError(
            400, "The request body must be a JSON object", code="invalid_value"
        ).response()
    if kind == "extra_forbidden":
        # OpenAI's words for a parameter it does not know
        return APIError(
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        ).response()
    if kind in _AS_SAID:
        return APIError(400, message, param=param, code=kind).response()
    if param:
        message = f"Invalid value for '{param}': {message}"
    code = "invalid_unicode" if kind in _UNICODE else "invalid_value"
    return APIError(400, message, param=param, code=code).response()
