"""``/login`` and ``/logout``: start and end a browser session with the console's key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from slmops.ui.auth import COOKIE_NAME, SESSION_MAX_AGE_S, check_same_origin, safe_next
from slmops.ui.forms import read_form

if TYPE_CHECKING:
    from slmops.ui.app import Console


def router(console: Console) -> APIRouter:
    routes = APIRouter()

    @routes.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "") -> Response:
        base = console.base(request)
        if not console.auth.enabled:
            return RedirectResponse(safe_next(next, base), status_code=303)
        return console.render(
            request, "login.html", title="Log in", next=safe_next(next, base), error=""
        )

    @routes.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        check_same_origin(request)
        form = await read_form(request)
        base = console.base(request)
        target = safe_next(form.get("next"), base)
        if not console.auth.enabled:
            return RedirectResponse(target, status_code=303)
        key = form.get("key")
        if not key or not console.auth.key_matches(key):
            return console.render(
                request,
                "login.html",
                status_code=401,
                title="Log in",
                next=target,
                error="That is not this console's API key." if key else "Enter the API key.",
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            console.auth.session_token(key),
            max_age=SESSION_MAX_AGE_S,
            path=base + "/" if base else "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @routes.post("/logout")
    def logout(request: Request) -> Response:
        check_same_origin(request)
        base = console.base(request)
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=base + "/" if base else "/")
        return response

    return routes
