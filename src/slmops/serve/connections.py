"""A deadline for a request's headers (slowloris): uvicorn's HTTP/1.1 protocol, with a timer.

uvicorn times a connection only between requests (``timeout_keep_alive``, from the end of an
answer to the first byte of the next request), and h11 bounds the size of the headers, not
the time they take: a client sending its headers a byte every few seconds held a connection
and its file descriptor for as long as it liked. Here a request's headers must arrive whole
within ``header_timeout_s`` of the connection opening, or of the next request's first byte
on a kept-alive connection; otherwise the connection is answered ``408`` (OpenAI's error
shape) and closed, or closed silently when nothing at all was sent (an idle connection, as
uvicorn's keep-alive timeout closes it). The timer covers the headers only: it is stopped as
soon as they are in, so neither a body (``body_timeout_s``, in the app) nor an answer being
streamed is timed by it.

Written against uvicorn 0.54's ``H11Protocol`` (the protocol uvicorn picks when httptools
is not installed, and the one this server always runs); it overrides ``connection_made``,
``data_received``, ``on_response_complete`` and ``connection_lost``, each calling uvicorn's
own first or last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from slmops.serve.errors import APIError

DEFAULT_HEADER_TIMEOUT_S = 10.0

log = logging.getLogger("slmops.serve")


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers; see the module."""

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's headers are due from now

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers():
            self._arm()  # a new request's first byte (armed already on a fresh connection)
        super().data_received(data)
        if not self._awaiting_headers():
            self._disarm()  # the headers are in (or the connection failed or switched)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (handles a pipelined request buffered meanwhile)
        if self._awaiting_headers() and self.conn.trailing_data[0]:
            self._arm()  # part of the next request's headers is here already
        elif not self._awaiting_headers():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        """Whether the connection waits for a request's headers (none is being answered)."""
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers():
            return
        started = bool(self.conn.trailing_data[0])  # bytes of headers not yet whole
        output: list[bytes] = []
        try:
            if started:
                output += self._answer_408()
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:  # h11 would not frame it: close without an answer
            output = []
        if output:
            self.transport.write(b"".join(output))
        self.transport.close()
        if started:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else None
            log.warning(
                "request headers timed out",
                extra={"status": 408, "client": client, "timeout_s": self.header_timeout_s},
            )

    def _answer_408(self) -> list[bytes]:
        error = APIError(
            408,
            f"The request headers did not arrive within {self.header_timeout_s:g} s",
            code="request_timeout",
        )
        body = json.dumps(error.body()).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        sent = [
            self.conn.send(
                h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
            ),
            self.conn.send(h11.Data(data=body)),
            self.conn.send(h11.EndOfMessage()),
        ]
        return [piece for piece in sent if piece]


def header_timeout_protocol(timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's ``http=``, with this deadline for headers."""
    if not timeout_s > 0:
        raise ValueError("the header timeout must be above 0 seconds")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": timeout_s})
