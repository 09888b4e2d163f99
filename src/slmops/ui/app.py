"""The console application: templates, static files, access control and error pages.
Each page group is a router in its own module (home, traces, monitor, login)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from slmops.errors import NotFoundError, SlmopsError
from slmops.models.base import Embedder
from slmops.models.loading import load_embedder
from slmops.serve.admission import Admission
from slmops.store.workspace import Workspace
from slmops.ui.auth import ConsoleAuth, LoginRequiredError, RefusedError
from slmops.ui.formatting import FILTERS

_HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Everything the pages need is served by the console itself; inline style attributes
    # place the waterfall's bars, and no inline script runs.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def template_environment() -> jinja2.Environment:
    """Autoescaping everywhere: a stored answer containing markup is shown as text."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)
    return environment


PLAYGROUND_QUEUE = 4  # playground runs that may wait for the model; then 429
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_name(request: Request) -> str:
    """The Host header's name without its port ("[::1]:8765" -> "::1")."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Console:
    """What every page shares: the workspace, who may act, the templates, the embedder."""

    def __init__(self, workspace: Workspace, auth: ConsoleAuth) -> None:
        self.workspace = workspace
        self.auth = auth
        self.templates = template_environment()
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()
        self.admission = Admission(PLAYGROUND_QUEUE)  # replaced by the server's when mounted

    def embedder(self) -> Embedder:
        """The workspace's embedder, loaded on first use (drift needs it; seconds to load)."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.workspace.settings.embedder)
            return self._embedder

    @staticmethod
    def base(request: Request) -> str:
        """The path the console is mounted at ("" alone, "/ui" beside the API)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            base=self.base(request),
            path=request.url.path,
            auth_enabled=self.auth.enabled,
            signed_in=self.auth.enabled and self.auth.authenticated(request),
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def error_page(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.render(
            request,
            "error.html",
            status_code=status_code,
            title=f"Error {status_code}",
            status=status_code,
            message=message,
        )


def create_console(
    workspace: Workspace, *, api_keys: Sequence[str] = (), admission: Admission | None = None
) -> FastAPI:
    """The console over ``workspace``. With ``api_keys``, every page and action needs one of
    them (``Authorization: Bearer KEY``, or the session the login form starts). Playground
    runs wait in ``admission`` (the server's own line for its local model, when the console
    is mounted on ``slmops serve``), so they never overtake or crowd out API requests."""
    from slmops.ui import (
        corpora,
        evals,
        home,
        login,
        models,
        monitor,
        prompts,
        review,
        stacks,
        traces,
    )

    console = Console(workspace, ConsoleAuth(api_keys))
    if admission is not None:
        console.admission = admission
    app = FastAPI(title="slmops console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console

    @app.middleware("http")
    async def loopback_names_only(request: Request, call_next: Any) -> Response:
        # Without a key the console trusts whoever reaches it, which must be this machine:
        # a page of another site whose name was rebound to 127.0.0.1 would otherwise read
        # traces and post as a same-origin script (DNS rebinding).
        if not console.auth.enabled and _host_name(request) not in LOOPBACK_NAMES:
            return console.error_page(
                request, 403, "without an API key the console answers only to localhost"
            )
        response: Response = await call_next(request)
        return response

    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    app.include_router(login.router(console))
    app.include_router(home.router(console))
    app.include_router(traces.router(console))
    app.include_router(monitor.router(console))
    app.include_router(stacks.router(console))
    app.include_router(corpora.router(console))
    app.include_router(prompts.router(console))
    app.include_router(models.router(console))
    app.include_router(review.router(console))
    app.include_router(evals.router(console))

    @app.exception_handler(LoginRequiredError)
    async def to_login(request: Request, _exc: LoginRequiredError) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"{console.base(request)}/login?next={quote(target, safe='')}", status_code=303
        )

    @app.exception_handler(RefusedError)
    async def refused(request: Request, exc: RefusedError) -> Response:
        return console.error_page(request, exc.status_code, exc.message)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return console.error_page(request, 404, str(exc))

    @app.exception_handler(SlmopsError)
    async def bad_request(request: Request, exc: SlmopsError) -> Response:
        return console.error_page(request, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'request'}: {error['msg']}"
            for error in exc.errors()
        )
        return console.error_page(request, 400, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return console.error_page(request, exc.status_code, message)

    return app
