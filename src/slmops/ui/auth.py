"""Who may use the console: nobody needs a key unless one is set; then every page needs it.

A request carries the key as ``Authorization: Bearer KEY`` (scripts) or as the session
cookie the login form sets (browsers). The cookie holds an HMAC of the key under a secret
made at start-up, never the key itself: it cannot be replayed against the API, and every
session ends when the console restarts. It is HttpOnly and SameSite=Strict; together with
the Origin check on every POST, another site cannot act through a logged-in browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import Request

COOKIE_NAME = "slmops_console"
SESSION_MAX_AGE_S = 12 * 3600


class LoginRequiredError(Exception):
    """A page was asked for without the key; the browser is sent to the login form."""


class RefusedError(Exception):
    """A request the console refuses, with its HTTP status and a message for the user."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class ConsoleAuth:
    """The accepted keys and the session tokens derived from them."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [key.encode() for key in keys if key]
        self._secret = secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _token(self, key: bytes, issued: int) -> bytes:
        message = key + b"|" + str(issued).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest().encode()

    def key_matches(self, presented: str) -> bool:
        """Compared against every key, always, so timing says nothing about near misses."""
        given = presented.strip().encode()
        matched = False
        for key in self._keys:
            matched |= secrets.compare_digest(given, key)
        return matched

    def session_token(self, presented: str, now: float | None = None) -> str:
        """The cookie value for a key that :meth:`key_matches`: when it was issued and an
        HMAC of the key and that time, so the server refuses it after SESSION_MAX_AGE_S
        whatever the browser keeps."""
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._token(presented.strip().encode(), issued).decode()}"

    def authenticated(self, request: Request) -> bool:
        """Whether the request carries a valid key or session (True when no key is set)."""
        if not self.enabled:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token and self.key_matches(token):
            return True
        return self.session_valid(request.cookies.get(COOKIE_NAME, ""))

    def session_valid(self, cookie: str, now: float | None = None) -> bool:
        issued_text, _, mac = cookie.partition(".")
        if not issued_text.isdigit():
            return False
        issued, now = int(issued_text), time.time() if now is None else now
        if not issued - 60 <= now <= issued + SESSION_MAX_AGE_S:
            return False
        matched = False
        for key in self._keys:
            matched |= secrets.compare_digest(mac.encode(), self._token(key, issued))
        return matched

    def require_reader(self, request: Request) -> None:
        """Pages: with a key set, a request without it is sent to the login form."""
        if not self.authenticated(request):
            if request.method in ("GET", "HEAD"):
                raise LoginRequiredError()
            raise RefusedError(401, "this console needs its API key: log in first")

    def require_actor(self, request: Request) -> None:
        """Actions (POST): the key when one is set, and the request must come from a page of
        this console (a cross-site form post is refused)."""
        check_same_origin(request)
        self.require_reader(request)


def check_same_origin(request: Request) -> None:
    """Refuse a POST whose Origin (or, without one, Referer) is another site's."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return  # not sent by a browser (curl, scripts): the key alone decides
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        raise RefusedError(403, "cross-site form posts are refused")


def safe_next(target: str | None, base: str) -> str:
    """Where to go after logging in: a path of this console only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return base + "/"
    return target
