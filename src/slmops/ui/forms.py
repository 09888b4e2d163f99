"""Reading the console's HTML forms (``application/x-www-form-urlencoded``, no uploads)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request

from slmops.ui.auth import RefusedError

MAX_FORM_BYTES = 64_000  # the longest field (a correction) is 8,000 characters


class Form:
    """The submitted fields; a field given twice keeps every value (``getlist``)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str) -> str:
        """The field's first value, stripped; "" when absent."""
        values = self._fields.get(name)
        return values[0].strip() if values else ""

    def getlist(self, name: str) -> list[str]:
        return [value.strip() for value in self._fields.get(name, [])]


async def read_form(request: Request) -> Form:
    """Parse the body of a form post; refuses bodies over :data:`MAX_FORM_BYTES`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "" and request.headers.get("content-length", "0") == "0":
        return Form({})  # an empty post: nothing filled in
    if kind != "application/x-www-form-urlencoded":
        raise RefusedError(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_FORM_BYTES:
            raise RefusedError(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RefusedError(400, "the form is not UTF-8") from None
    return Form(parse_qs(text, keep_blank_values=True))
