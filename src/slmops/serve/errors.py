"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the status
code a client expects."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


def unknown_model(model: str, served: list[str]) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist or is not served here; served: {', '.join(served)}",
        param="model",
        code="model_not_found",
    )


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A body that is not JSON, or JSON that does not fit the request schema: 400, naming
    the field like OpenAI does (``param``)."""
    assert isinstance(exc, RequestValidationError)
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return APIError(400, f"The request body is not valid JSON: {error.get('msg')}").response()
    message = error.get("msg", "invalid request")
    if param:
        message = f"Invalid value for '{param}': {message}"
    return APIError(400, message, param=param, code="invalid_value").response()
