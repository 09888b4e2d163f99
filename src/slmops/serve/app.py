"""The FastAPI application: OpenAI-compatible endpoints, auth, limits, metrics, health."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slmops.apps.stack import Stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.errors import ModelError, NotFoundError, SlmopsError, StepInputError
from slmops.models.base import ChatMessage, ChatModel, Embedder, GenerationParams
from slmops.models.loading import load_embedder
from slmops.models.resolvers import redirected
from slmops.models.uri import parse_model_uri
from slmops.monitor.feedback import FeedbackError, FeedbackIn, parse_feedback, record_feedback
from slmops.serve.admission import Admission, QueueFullError
from slmops.serve.connections import DEFAULT_HEADER_TIMEOUT_S
from slmops.serve.errors import (
    APIError,
    BodyError,
    api_error_handler,
    http_error_handler,
    unexpected_error,
    unknown_model,
    validation_error_handler,
)
from slmops.serve.following import AliasFollower, Challenger, canary_for
from slmops.serve.generation import (
    Generation,
    Piece,
    mark_shadow,
    stack_input,
    stream_chat,
    stream_completion,
    stream_stack,
    stream_structured_chat,
)
from slmops.serve.metrics import ServerMetrics
from slmops.serve.monitoring import MonitorConfig, ServerMonitor
from slmops.serve.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ErrorResponse,
    FeedbackStored,
    Health,
    ModelList,
    Readiness,
    TextCompletion,
    TextCompletionChunk,
    usage_body,
)
from slmops.serve.structured import (
    INVALID_SCHEMA,
    Reply,
    ReplyPlan,
    conversation,
    grammar_problem,
    instructed,
    interpret,
    plan_reply,
)

log = logging.getLogger("slmops.serve")
T = TypeVar("T")


@dataclass
class ServeConfig:
    api_keys: tuple[str, ...] = ()
    max_queue: int = 32
    max_body_bytes: int = 1_000_000
    max_header_bytes: int = 32_768  # all request headers together
    body_timeout_s: float = 30.0  # a body must arrive whole within this (a trickle is refused)
    # a request's headers must arrive whole within this (slowloris), or 408 and the connection
    # closes; None: no limit. Enforced by uvicorn's protocol (serve/connections.py), not the app.
    header_timeout_s: float | None = DEFAULT_HEADER_TIMEOUT_S
    # A chat or completion request's whole time in this server, waiting in line included; past
    # it, a request still in line gets 429 (queue_timeout) and a generation is stopped with 504
    # (generation_timeout), so no request hangs however loaded the machine is. Embeddings are
    # bounded in their line only (a call once begun runs to its end). None: no limit.
    request_timeout_s: float | None = 300.0
    max_tokens_limit: int = 2048
    default_max_tokens: int = 256
    cors_origins: tuple[str, ...] = ()
    remote_concurrency: int = 8  # requests in flight at once to an OpenAI-compatible upstream
    # Generations in flight at once on local models (llama.cpp decodes them together); None:
    # the engine's slots (SLMOPS_LLAMA_SLOTS, default 4). Beyond it, requests wait in line.
    local_concurrency: int | None = None
    canary: Challenger | None = None  # a share of requests answered by another version
    shadow: Challenger | None = None  # another version answers too, into the traces only
    monitor: MonitorConfig | None = field(default_factory=MonitorConfig)  # None: no monitor


@dataclass
class Catalog:
    """What this server serves, by the name a request gives as ``model``."""

    chat_models: dict[str, ChatModel] = field(default_factory=dict)
    stacks: dict[str, Stack] = field(default_factory=dict)
    embedders: dict[str, Embedder] = field(default_factory=dict)
    follower: AliasFollower | None = None  # registry aliases followed as they move

    def names(self) -> list[str]:
        return [*self.chat_models, *self.stacks, *self.embedders]


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if 0 < len(candidate) <= 128 and candidate.isprintable():
                return candidate
    return uuid.uuid4().hex


class RequestGuard:
    """Pure ASGI middleware (streams pass through untouched): gives every request an id,
    refuses headers over their limit with 431, bodies over theirs with 413 and bodies that
    do not arrive in time (a client trickling bytes to hold a connection) with 408, counts
    in-flight requests and logs each request as one JSON line when its last byte is sent."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: ServerMetrics,
        max_header_bytes: int = 32_768,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"The request body is larger than {self.max_body_bytes} bytes",
            code="request_too_large",
            headers={"Connection": "close"},  # the rest of the body is not read
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        # request deadlines (ServeConfig.request_timeout_s) count from here
        scope["state"]["arrived"] = asyncio.get_running_loop().time()
        status = {"code": 500, "started": False}
        headers = scope.get("headers", [])
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            error = APIError(
                431,
                f"The request headers are larger than {self.max_header_bytes} bytes",
                code="headers_too_large",
                headers={"Connection": "close"},
            )
            await self._refuse(error, scope, receive, send, request_id)
            return
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(self._too_large(), scope, receive, send, request_id)
            return
        seen = {"bytes": 0}
        body = {"done": False}
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def limited_receive() -> Message:
            if body["done"]:  # after the body: disconnect notices, never timed out
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise BodyError(
                    APIError(
                        408,
                        f"The request body did not arrive within {self.body_timeout_s:g} s",
                        code="request_timeout",
                        headers={"Connection": "close"},
                    )
                ) from None
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_body_bytes:
                    raise BodyError(self._too_large())
                body["done"] = not message.get("more_body", False)
            else:
                body["done"] = True  # the client went away
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, limited_receive, tagged_send)
        except Exception as exc:
            if status["started"]:
                raise  # too late for an answer: the server closes the connection
            # a bug: 500 in OpenAI's shape, naming the request id the log line carries
            log.exception("unexpected error", extra={"request_id": request_id})
            await self._refuse(unexpected_error(exc, request_id), scope, receive, send, request_id)
        finally:
            self.metrics.in_flight.dec()
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "model": scope["state"].get("model"),
                    "trace_id": scope["state"].get("trace_id"),
                },
            )

    async def _refuse(
        self, error: APIError, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        response = error.response()
        response.headers["x-request-id"] = request_id
        await response(scope, receive, send)


_REASONS = {
    400: "a request this server cannot take as given (the error names the parameter)",
    401: "a missing or wrong API key",
    404: "a model (or trace) that is not served here",
    408: "a request (headers or body) that did not arrive in time",
    413: "a body over the size limit",
    415: "a body that is not JSON",
    429: "the waiting line is full, or a slot did not come free in time (see Retry-After)",
    431: "headers over the size limit",
    500: "a bug (the error names the request id to look for in the logs)",
    503: "nowhere to store feedback",
    504: "a generation stopped at the server's request timeout (--request-timeout)",
}


def errors_documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these error statuses: OpenAI's error shape."""
    return {
        status: {"model": ErrorResponse, "description": _REASONS[status]}
        for status in sorted(set(statuses))
    }


_STREAMED: tuple[type[BaseModel], ...] = (ChatCompletionChunk, TextCompletionChunk, ErrorResponse)


def answered(
    model: type[BaseModel], *, status: int = 200, streams: type[BaseModel] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry for success (the body is built by hand, so it is
    documented here rather than validated on the way out); ``streams``: the chunk model of
    the answer as server-sent events."""
    entry: dict[str, Any] = {"model": model, "description": model.__doc__ or "success"}
    if streams is not None:
        assert streams in _STREAMED  # its schema is added to the components
        chunk = {"$ref": f"#/components/schemas/{streams.__name__}"}
        error = {"$ref": "#/components/schemas/ErrorResponse"}
        # one event: a chunk, an error (when the answer fails after the headers), or the end
        event = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "anyOf": [
                        {"const": "[DONE]"},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": [chunk, error]},
                        },
                    ]
                }
            },
        }
        entry["content"] = {"text/event-stream": {"schema": event}}
    return {status: entry}


def _local_concurrency(config: ServeConfig) -> int:
    if config.local_concurrency is not None:
        return config.local_concurrency
    from slmops.models.llamacpp import EngineSettings

    return EngineSettings.from_environment().slots


def create_app(catalog: Catalog, runtime: Runtime, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    metrics = ServerMetrics()
    # Local GGUF models are decoded by llama.cpp's engine, which batches up to its slots'
    # worth of concurrent requests (the transformers backend takes them one at a time behind
    # its own lock); an OpenAI-compatible upstream (vLLM, llama.cpp server) batches
    # concurrent requests itself, so several go through to it at once.
    local = Admission(config.max_queue, concurrency=_local_concurrency(config))
    remote = {
        name: Admission(config.max_queue, concurrency=config.remote_concurrency)
        for name, model in catalog.chat_models.items()
        if parse_model_uri(model.uri).scheme == "openai"
    }

    def admission_for(model: str) -> Admission:
        return remote.get(model, local)

    async def admit(
        request: Request, admission: Admission, endpoint: str, model: str, deadline: float | None
    ) -> AbstractAsyncContextManager[None]:
        """A slot of ``admission``, entered by ``deadline`` (the caller exits it); a refusal
        (429, 499) is counted for ``endpoint`` and ``model`` and raised."""
        try:
            return await _admitted(request, admission, deadline, config.request_timeout_s)
        except APIError as refused:
            metrics.requests.labels(endpoint, model, str(refused.status)).inc()
            raise

    state = {"ready": False}
    # Embedders take one call at a time (their tokenizer is not thread-safe), so one thread
    # runs them all: more would only wait, each holding its own idle OpenMP thread team.
    embedding: dict[str, ThreadPoolExecutor] = {}  # made at first use, ended with the app

    # ... and a bounded line in front of it, as for generations: 429 when it is full or the
    # request's time runs out in it, instead of an unbounded backlog in the thread's queue
    embedding_line = Admission(config.max_queue, concurrency=1)

    def embedding_thread() -> ThreadPoolExecutor:
        if "pool" not in embedding:
            embedding["pool"] = ThreadPoolExecutor(1, thread_name_prefix="slmops-embed")
        return embedding["pool"]

    followed = list(catalog.follower.current) if catalog.follower else []
    chooser = random.Random()
    background: set[asyncio.Task[None]] = set()

    def switched(alias: str, old: str, new: str) -> None:
        metrics.alias_switches.labels(alias, old, new).inc()

    monitor = (
        ServerMonitor(
            runtime.workspace,
            [stack.stack_name for stack in catalog.stacks.values()],
            metrics,
            config.monitor,
            embed=_monitor_embedder(catalog, runtime),
            idle=lambda: local.active == 0 and local.waiting == 0,
        )
        if config.monitor is not None and runtime.workspace is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        watcher = None
        if catalog.follower is not None:
            catalog.follower.on_switch = switched
            watcher = asyncio.create_task(catalog.follower.run())
        monitoring = None
        if monitor is not None:
            monitor.start()
            monitoring = asyncio.create_task(monitor.run())
        state["ready"] = True
        yield
        state["ready"] = False  # shutting down: stop advertising readiness
        if watcher is not None:
            watcher.cancel()
        if monitoring is not None and monitor is not None:
            monitoring.cancel()
            await asyncio.to_thread(monitor.stop)
        for task in list(background):
            task.cancel()
        if "pool" in embedding:
            embedding.pop("pool").shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="slmops", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.local_admission = local  # the console's playground waits in the same line
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
        )
    app.add_middleware(
        RequestGuard,
        max_body_bytes=config.max_body_bytes,
        max_header_bytes=config.max_header_bytes,
        body_timeout_s=config.body_timeout_s,
        metrics=metrics,
    )
    keys = [key.encode() for key in config.api_keys]

    def authorize(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key, always, so timing says nothing about which were close.
        matched = False
        for key in keys:
            matched |= secrets.compare_digest(presented, key)
        if not matched:
            raise APIError(
                401,
                "Incorrect API key provided"
                if presented
                else "Missing API key (Authorization: Bearer KEY)",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    def json_body(request: Request) -> None:
        """A body is JSON, and says so: a browser page may send any site a form or a
        ``text/plain`` body without asking first (no CORS preflight), never a JSON one, so
        reading only JSON keeps other sites' pages from using a server on localhost."""
        declared = request.headers.get("content-type", "")
        media = declared.split(";")[0].strip().lower()
        if not declared:  # (a page's fetch() of an untyped Blob sends none)
            raise APIError(
                400,
                "The request has no Content-Type, so its body is not JSON to this server: "
                "send it with Content-Type: application/json",
                code="missing_content_type",
            )
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise APIError(
                415,
                f"Send the body as JSON with Content-Type: application/json (got "
                f"{declared[:100]!r})",
                code="unsupported_media_type",
            )

    # The scheme is only declared (for the OpenAPI schema); ``authorize`` checks the key.
    bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="an API key")
    guarded = [Depends(authorize), *([Depends(bearer)] if keys else [])]
    posted = [*guarded, Depends(json_body)]

    # What each endpoint answers besides success, for the OpenAPI schema: every error in
    # OpenAI's shape.
    always = (408, 413, 431, 500)
    auth = (401,) if keys else ()
    generating = errors_documented(*always, *auth, 400, 404, 415, 429, 504)

    # --- operations --------------------------------------------------------------------

    @app.get("/healthz", responses={**answered(Health), **errors_documented(*always)})
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        responses={
            **answered(Readiness),
            503: {"model": Readiness, "description": "starting or shutting down"},
            **errors_documented(*always),
        },
    )
    async def readyz() -> JSONResponse:
        ready = state["ready"]
        body = {"status": "ready" if ready else "not ready", "models": catalog.names()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **errors_documented(*always),
        },
    )
    async def metrics_endpoint() -> Response:
        metrics.queue_depth.labels(model="local").set(local.waiting)
        if monitor is not None:
            monitor.count_scorer()
        for name, admission in remote.items():
            metrics.queue_depth.labels(model=name).set(admission.waiting)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/v1/feedback",
        dependencies=posted,
        status_code=201,
        responses={
            **answered(FeedbackStored, status=201),
            **errors_documented(*always, *auth, 400, 404, 415, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FeedbackIn.model_json_schema()}},
            }
        },
    )
    async def post_feedback(request: Request) -> JSONResponse:
        """Rate an answer: by trace id or request id, a score (thumbs 0/1 or stars 1-5), a
        comment, a corrected answer, labels. Validated whole before anything is stored."""
        if runtime.workspace is None:
            raise APIError(503, "this server has no workspace to store feedback in")
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise APIError(400, "the body is not JSON", code="invalid_json") from None
        try:
            given = parse_feedback(body)
            if given.source != "user":  # reviewers label through 'slmops review' and the CLI
                raise FeedbackError(
                    "source: the API records user feedback; reviewers use 'slmops review'"
                )
            redactor = runtime.tracer.redactor
            stored = await asyncio.to_thread(
                record_feedback,
                runtime.workspace.engine,
                given,
                redact=redactor.redact if redactor else None,
            )
        except FeedbackError as exc:
            raise APIError(400, str(exc), code="invalid_feedback") from None
        except NotFoundError as exc:
            raise APIError(404, str(exc), param="trace_id", code="trace_not_found") from None
        return JSONResponse(
            {
                "object": "feedback",
                "id": stored["id"],
                "trace_id": stored["trace_id"],
                "stack": stored["stack"],
                "source": stored["source"],
                "score": stored["score"],
            },
            status_code=201,
        )

    @app.get(
        "/v1/models",
        dependencies=guarded,
        responses={**answered(ModelList), **errors_documented(*always, *auth)},
    )
    async def list_models() -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "slmops"}
                for name in catalog.names()
            ],
        }

    # --- helpers -----------------------------------------------------------------------

    def params_for(body: ChatCompletionRequest | CompletionRequest) -> GenerationParams:
        asked = body.requested_max_tokens()
        if asked is not None and asked > config.max_tokens_limit:
            named = (
                "max_completion_tokens"
                if getattr(body, "max_completion_tokens", None) is not None
                else "max_tokens"
            )
            raise APIError(
                400,
                f"{named} is {asked}; this server allows at most {config.max_tokens_limit}",
                param=named,
                code="invalid_value",
            )
        return GenerationParams(
            max_tokens=asked or config.default_max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,  # OpenAI's
            top_p=1.0 if body.top_p is None else body.top_p,
            stop=body.stop_list(),
            seed=body.seed,
        )

    async def respond(
        request: Request,
        body: ChatCompletionRequest | CompletionRequest,
        endpoint: str,
        produce: Callable[[Generation], AsyncIterator[Piece]],
        build: Callable[[Generation], dict[str, Any]],
        chunk: Callable[[Piece, Generation, str | None], dict[str, Any]],
    ) -> Response:
        """Admit the request, then answer it whole or as server-sent events."""
        request.state.model = body.model
        started = time.perf_counter()
        limit_s = config.request_timeout_s
        deadline = _deadline(request, limit_s)  # for the wait in line and the generation both
        # entered now, so a full queue answers 429 before any byte of a stream is sent
        lease = await admit(request, admission_for(body.model), endpoint, body.model, deadline)
        report = Generation()

        async def routed(into: Generation) -> AsyncGenerator[Piece, None]:
            # a canary request resolves the model's aliases to the challenger, in this
            # request's context only
            with canary_for(config.canary, followed, chooser) as chosen:
                into.canary = chosen
                pieces = produce(into)
                try:
                    async for piece in pieces:
                        yield piece
                finally:  # closed with this stream: a client that leaves stops the model
                    close = getattr(pieces, "aclose", None)
                    if close is not None:
                        await close()

        def shadow_of(primary: Generation) -> None:
            """Run the request again on the shadow version, after the answer, for the
            traces: never when the model is busy (a shadow must not delay real requests)."""
            redirects = config.shadow.redirects(followed) if config.shadow else {}
            admission = admission_for(body.model)
            if not redirects or admission.waiting or admission.active:
                return

            async def shadow() -> None:
                shadowed = Generation()
                try:
                    async with admission.slot():
                        with use_runtime(runtime), redirected(redirects):
                            await _drain(produce(shadowed))
                    mark_shadow(runtime, shadowed.trace_id, primary.trace_id)
                    metrics.shadow.labels(body.model, shadowed.answered_by, "200").inc()
                except Exception as exc:  # a shadow never reaches the client: log and count
                    log.warning("shadow request failed: %s", exc)
                    metrics.shadow.labels(body.model, "", "error").inc()

            task = asyncio.create_task(shadow())
            background.add(task)
            task.add_done_callback(background.discard)

        def account(status: str) -> None:
            if report.answered_by:
                metrics.versions.labels(body.model, report.answered_by, str(report.canary)).inc()
            if status == "200":
                shadow_of(report)
                if monitor is not None and body.model in catalog.stacks and report.trace_id:
                    monitor.offer(report.trace_id)
            metrics.requests.labels(endpoint, body.model, status).inc()
            metrics.latency.labels(endpoint, body.model).observe(time.perf_counter() - started)
            metrics.tokens.labels(body.model, "prompt").inc(report.prompt_tokens)
            metrics.tokens.labels(body.model, "completion").inc(report.completion_tokens)
            if report.time_to_first_token_s is not None:
                metrics.time_to_first_token.labels(body.model).observe(report.time_to_first_token_s)

        if not body.stream:
            try:
                with use_runtime(runtime):
                    await _unless_disconnected(
                        request, _generating_by(deadline, limit_s, _drain(routed(report)))
                    )
            except BaseException as exc:
                account(_status_of(exc))
                raise _as_api_error(exc) from exc
            finally:
                await lease.__aexit__(None, None, None)
            request.state.trace_id = report.trace_id
            account("200")
            headers = {"X-Slmops-Trace-Id": report.trace_id}
            if report.answered_by:
                headers["X-Slmops-Model-Version"] = report.answered_by
            citations = report.extension.get("citations")
            if citations:
                sources = "; ".join(c["source"] for c in citations)
                headers["X-Slmops-Sources"] = quote(sources, safe=" ;,:-/()")
            return JSONResponse(build(report), headers=headers)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # Streamed, the generation runs in a task of its own, so that every step of it runs in
        # one context (the runtime and a canary's redirects are entered and left there), and
        # the first piece is awaited before any header is sent: a request that fails before
        # it (bad input, a context overflow, a failing step) is answered with its own status
        # and OpenAI's error body, as it would be unstreamed.
        handoff: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)
        delivered = asyncio.Event()  # the answer (or its error) went out: the slot may go

        async def hand_over() -> None:
            async with aclosing(routed(report)) as pieces:
                async for piece in pieces:
                    await handoff.put(("piece", piece))  # waits on a slow reader: timed too

        async def generate() -> None:
            """The generation, handing its pieces over one by one; then, once the answer is
            out, the slot is released and the request accounted, once, whatever happened."""
            status = "200"
            try:
                try:
                    with use_runtime(runtime):
                        await _generating_by(deadline, limit_s, hand_over())
                except Exception as exc:
                    status = _status_of(exc)
                    await handoff.put(("error", exc))
                else:
                    await handoff.put(("end", None))
                await delivered.wait()
            except asyncio.CancelledError:
                status = "499"  # the client went away; generation was stopped
                raise
            finally:
                await lease.__aexit__(None, None, None)
                request.state.trace_id = report.trace_id
                account(status)

        producer = asyncio.create_task(generate())

        def abandon() -> None:
            """The answer will not go out whole (the client left, or the stream ended early):
            stop the generation, which then releases its slot."""
            if not delivered.is_set():
                producer.cancel()

        try:
            kind, first = await _unless_disconnected(request, handoff.get())
        except asyncio.CancelledError as gone:  # the client left before the first piece
            abandon()
            await asyncio.wait({producer})
            raise _as_api_error(gone) from None
        if kind == "error":  # no header sent yet: answered as it would be unstreamed
            delivered.set()
            await asyncio.wait({producer})
            raise _as_api_error(first) from first

        async def events() -> AsyncIterator[str]:
            kind_now, value, opening = kind, first, True
            try:
                while True:
                    if kind_now == "piece":
                        event = chunk(value, report, None)
                        if opening and endpoint == "chat":  # OpenAI's first delta names the role
                            event["choices"][0]["delta"]["role"] = "assistant"
                        opening = False
                        yield _sse(event)
                    elif kind_now == "end":
                        final = chunk("", report, report.finish_reason)
                        if include_usage:
                            final["usage"] = usage_body(
                                report.prompt_tokens, report.completion_tokens
                            )
                        yield _sse(final)
                        yield "data: [DONE]\n\n"
                        break
                    else:  # headers are sent: report the error in the stream
                        yield _sse(_as_api_error(value).body())
                        break
                    kind_now, value = await handoff.get()
                delivered.set()
            finally:
                abandon()  # (unless delivered)
            await asyncio.wait({producer})  # accounted and its slot released, before the end

        return _EventStream(
            events(),
            on_close=abandon,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- endpoints -----------------------------------------------------------------------

    @app.post(
        "/v1/chat/completions",
        dependencies=posted,
        responses={**answered(ChatCompletion, streams=ChatCompletionChunk), **generating},
    )
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        request_id = request.state.request_id
        # (images, audio, unknown fields ... were refused by validation; tools, tool messages
        # and response formats were checked there and are planned here)
        plan = plan_reply(body)
        produce: Callable[[Generation], AsyncIterator[Piece]]
        if body.model in catalog.stacks:
            stack = catalog.stacks[body.model]
            _refuse_for_stack(body, plan)
            given = body.sampling_given()
            if given:
                raise APIError(
                    400,
                    f"'{given[0]}' cannot be set for {body.model}: an app stack runs its "
                    "models with the settings in its manifest; leave it out",
                    param=given[0],
                    code="unsupported_parameter",
                )
            messages = conversation(body.messages)

            def produce(report: Generation) -> AsyncIterator[Piece]:
                return stream_stack(stack, stack_input(messages), request_id, report)

        elif body.model in catalog.chat_models:
            model = catalog.chat_models[body.model]
            params = params_for(body)
            messages = conversation(body.messages)
            if plan is None:

                def produce(report: Generation) -> AsyncIterator[Piece]:
                    return stream_chat(model, messages, params, request_id, report)

            else:
                # (converting a schema to a grammar takes a while for a large one: off the loop)
                await asyncio.to_thread(_check_plan, body, plan, model)
                produce = _structured(
                    model, instructed(messages, plan.instruction), params, plan, request_id
                )
        else:
            raise unknown_model(body.model, [*catalog.chat_models, *catalog.stacks])

        def reply_of(report: Generation) -> Reply:
            return report.reply or Reply(report.text, None, report.finish_reason)

        def build(report: Generation) -> dict[str, Any]:
            reply = reply_of(report)
            answer = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {"index": 0, "message": reply.message(), "finish_reason": reply.finish_reason}
                ],
                "usage": usage_body(report.prompt_tokens, report.completion_tokens),
            }
            if report.extension:
                answer["slmops"] = report.extension
            return answer

        def chunk(piece: Piece, report: Generation, finish: str | None) -> dict[str, Any]:
            if isinstance(piece, dict):
                delta: dict[str, Any] = dict(piece)
            else:
                delta = {"content": piece} if piece else {}
            event: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if finish is not None and report.extension:
                event["slmops"] = report.extension
            elif finish is not None:
                event["slmops"] = {
                    "trace_id": report.trace_id,
                    "request_id": request_id,
                    "model_version": report.answered_by,
                }
            return event

        return await respond(request, body, "chat", produce, build, chunk)

    @app.post(
        "/v1/completions",
        dependencies=posted,
        responses={**answered(TextCompletion, streams=TextCompletionChunk), **generating},
    )
    async def completions(request: Request, body: CompletionRequest) -> Response:
        if body.model not in catalog.chat_models:
            raise unknown_model(body.model, list(catalog.chat_models))
        # one prompt per request (validation refused lists of any other length)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        model, params = catalog.chat_models[body.model], params_for(body)
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        request_id = request.state.request_id

        def produce(report: Generation) -> AsyncIterator[Piece]:
            generated = stream_completion(model, prompt, params, request_id, report)
            # streamed, the prompt is echoed with the first piece; whole, by build()
            return _prefixed(prompt, generated) if body.echo and body.stream else generated

        def build(report: Generation) -> dict[str, Any]:
            text = prompt + report.text if body.echo else report.text
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "finish_reason": report.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage_body(report.prompt_tokens, report.completion_tokens),
            }

        def chunk(piece: Piece, _report: Generation, finish: str | None) -> dict[str, Any]:
            assert isinstance(piece, str)  # a completion yields text only
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [{"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}],
            }

        return await respond(request, body, "completions", produce, build, chunk)

    @app.post(
        "/v1/embeddings",
        dependencies=posted,
        responses={
            **answered(EmbeddingList),
            **errors_documented(*always, *auth, 400, 404, 415, 429),
        },
    )
    async def embeddings(request: Request, body: EmbeddingRequest) -> dict[str, Any]:
        request.state.model = body.model
        embedder = catalog.embedders.get(body.model)
        if embedder is None:
            raise unknown_model(body.model, list(catalog.embedders))
        texts = body.texts()  # 1-2048 non-empty strings (validated)
        started = time.perf_counter()
        counter = getattr(embedder, "count_tokens", None)

        def embed_and_count() -> tuple[Any, int]:  # both off the event loop
            return embedder.embed(texts), sum(counter(t) for t in texts) if counter else 0

        deadline = _deadline(request, config.request_timeout_s)
        lease = await admit(request, embedding_line, "embeddings", body.model, deadline)
        # Once started, a call runs to its end: its size is bounded by validation (2,048
        # texts of at most the model's length), and a thread cannot be stopped midway.
        try:
            vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                embedding_thread(), contextvars.copy_context().run, embed_and_count
            )
        finally:
            await lease.__aexit__(None, None, None)
        metrics.requests.labels("embeddings", body.model, "200").inc()
        metrics.latency.labels("embeddings", body.model).observe(time.perf_counter() - started)
        metrics.tokens.labels(body.model, "prompt").inc(tokens)
        return {
            "object": "list",
            "model": body.model,
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _encode(vector, body.encoding_format),
                }
                for i, vector in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = _served_schema(schema, catalog, config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _served_schema(schema: dict[str, Any], catalog: Catalog, config: ServeConfig) -> dict[str, Any]:
    """The OpenAPI schema as this server answers: no 422 (validation errors are 400s, in
    OpenAI's shape), ``model`` one of the names served on each endpoint (they are public
    on /readyz already) and ``max_tokens`` within the server's limit."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _, streamed = models_json_schema(
        [(model, "serialization") for model in _STREAMED],
        ref_template="#/components/schemas/{model}",
    )
    for name, definition in streamed.get("$defs", {}).items():
        components.setdefault(name, definition)
    served = {
        "ChatCompletionRequest": [*catalog.chat_models, *catalog.stacks],
        "CompletionRequest": list(catalog.chat_models),
        "EmbeddingRequest": list(catalog.embedders),
    }
    for name, models in served.items():
        properties = components.get(name, {}).get("properties", {})
        if models and "model" in properties:
            properties["model"] = {"type": "string", "enum": models, "title": "Model"}
        for limited in ("max_tokens", "max_completion_tokens"):
            for branch in properties.get(limited, {}).get("anyOf", []):
                if branch.get("type") == "integer":
                    branch["maximum"] = config.max_tokens_limit
    return schema


def _refuse_for_stack(body: ChatCompletionRequest, plan: ReplyPlan | None) -> None:
    """An app stack answers the last user message with the output its manifest declares: it
    can neither call tools nor take another output format, nor read tool messages."""
    stack = body.model
    if body.tools and body.tool_choice != "none":
        raise APIError(
            400,
            f"'tools' cannot be used with {stack}: an app stack answers with the output its "
            "manifest declares and calls no tools; send tools to a model",
            param="tools",
            code="unsupported_parameter",
        )
    if plan is not None:
        raise APIError(
            400,
            f"response_format '{plan.mode}' cannot be used with {stack}: an app stack answers "
            "with the output its manifest declares (typed output fields); leave "
            "response_format out or send it to a model",
            param="response_format",
            code="unsupported_parameter",
        )
    for i, message in enumerate(body.messages):
        if message.role == "tool" or message.tool_calls:
            raise APIError(
                400,
                f"{stack} answers the last user message; tool calls and tool results cannot "
                "be passed to an app stack",
                param=f"messages.{i}",
                code="unsupported_value",
            )


def _backend(model: ChatModel) -> str:
    """How a model can honour a JSON schema: ``local`` (a grammar: llama.cpp), ``remote``
    (an OpenAI-compatible upstream: its response_format), or ``unconstrained`` (the
    transformers backend, which has no constrained decoding)."""
    try:
        scheme = parse_model_uri(model.uri).scheme
    except Exception:  # a URI of a plugin or a test double: taken as local
        return "local"
    return {"openai": "remote", "hf": "unconstrained"}.get(scheme, "local")


def _check_plan(body: ChatCompletionRequest, plan: ReplyPlan, model: ChatModel) -> None:
    """Refuse, before any generation, what this model cannot honour: tools on a model that is
    not local (the upstream's own tool calling is not passed through), any JSON schema on a
    backend without constrained decoding, a schema the local grammar cannot express."""
    backend = _backend(model)
    if plan.tools and backend != "local":
        why = (
            "it is answered by an OpenAI-compatible upstream, and passing tools through to it "
            "is not supported"
            if backend == "remote"
            else "its backend (transformers) cannot constrain decoding"
        )
        raise APIError(
            400,
            f"'tools' are not supported for {body.model}: {why}; tools are served for local "
            "GGUF models (llama.cpp)",
            param="tools",
            code="unsupported_parameter",
        )
    if backend == "unconstrained":
        raise APIError(
            400,
            f"response_format '{plan.mode}' is not supported for {body.model}: its backend "
            "(transformers) cannot constrain decoding to a JSON schema; serve the model as "
            "GGUF (llama.cpp) for structured outputs",
            param="response_format",
            code="unsupported_parameter",
        )
    if backend != "local":
        return
    for i, tool in enumerate(body.tools or []):
        parameters = tool.function.parameters
        problem = grammar_problem(parameters) if parameters is not None else None
        if problem:
            raise APIError(
                400,
                f"Invalid schema for function '{tool.function.name}': this server cannot "
                f"constrain decoding to it: {problem}",
                param=f"tools.{i}.function.parameters",
                code=INVALID_SCHEMA,
            )
    problem = grammar_problem(plan.schema)
    if problem:
        name = (
            body.response_format.json_schema.name
            if body.response_format and body.response_format.json_schema
            else plan.mode
        )
        raise APIError(
            400,
            f"Invalid schema for response_format '{name}': this server cannot constrain "
            f"decoding to it: {problem}",
            param="tools" if plan.tools else "response_format.json_schema.schema",
            code=INVALID_SCHEMA,
        )


def _structured(
    model: ChatModel,
    messages: list[ChatMessage],
    params: GenerationParams,
    plan: ReplyPlan,
    request_id: str,
) -> Callable[[Generation], AsyncIterator[Piece]]:
    """The producer of a constrained reply: a JSON answer streams as content; tool calls (or
    the answer wrapped beside them) are read back whole and sent as OpenAI's deltas."""

    async def produce(report: Generation) -> AsyncIterator[Piece]:
        pieces = stream_structured_chat(
            model, messages, params, plan.schema, plan.mode, request_id, report
        )
        if not plan.tools:
            async for piece in pieces:
                yield piece
            return
        try:
            await _drain(pieces)
        finally:
            close = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
        reply = interpret(plan, report.text, report.finish_reason)
        report.reply = reply
        report.finish_reason = reply.finish_reason
        for delta in reply.deltas():
            yield delta

    return produce


def _monitor_embedder(catalog: Catalog, runtime: Runtime) -> Any:
    """The embedder drift compares questions with: the workspace's, when this server has it
    loaded already (drift is then free of a second copy); else the workspace default, loaded
    on first use in the monitor's thread."""
    workspace = runtime.workspace
    if workspace is None:
        return None
    uri = workspace.settings.embedder
    served = catalog.embedders.get(uri)
    if served is not None:
        return served.embed

    def embed(texts: Any) -> Any:
        return load_embedder(uri).embed(texts)

    return embed


def _encode(vector: Any, encoding: str) -> list[float] | str:
    """Floats, or base64 of little-endian float32 (what the openai client asks for)."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


class _EventStream(StreamingResponse):
    """Server-sent events; ``on_close`` runs when the response ends, however it ends (sent
    whole, the client gone, or never sent at all)."""

    def __init__(
        self, content: AsyncIterator[str], *, on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


async def _prefixed(prefix: str, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """``pieces``, the first with ``prefix`` before it (``prefix`` alone when there is none):
    a model that fails before its first token still fails before anything is sent. Closed
    with this stream, so a client that leaves stops the model."""
    try:
        async for piece in pieces:
            yield prefix + piece
            prefix = ""
        if prefix:
            yield prefix
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


async def _drain(pieces: AsyncIterator[Piece]) -> None:
    async for _ in pieces:
        pass


def _deadline(request: Request, limit_s: float | None) -> float | None:
    """When a request's time is up (the event loop's clock), counted from its arrival."""
    if limit_s is None:
        return None
    return float(getattr(request.state, "arrived", asyncio.get_running_loop().time()) + limit_s)


async def _admitted(
    request: Request, admission: Admission, deadline: float | None, limit_s: float | None
) -> AbstractAsyncContextManager[None]:
    """A slot of ``admission``, entered (the caller exits it): or 429 at once when the line
    is full, 429 when the deadline passes in line, 499 when the client leaves it first (its
    place goes to the next one)."""
    lease = admission.slot()
    try:
        await _unless_disconnected(request, _by(deadline, lease.__aenter__()))
    except asyncio.CancelledError as gone:
        raise _as_api_error(gone) from None
    except QueueFullError as full:
        raise APIError(
            429,
            f"The server is busy ({full}); retry after {full.retry_after_s} s",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(full.retry_after_s)},
        ) from None
    except TimeoutError:
        retry_after = admission.retry_after()
        raise APIError(
            429,
            f"The server is busy: no slot came free within the request timeout "
            f"({limit_s:g} s); retry after {retry_after} s",
            type="rate_limit_error",
            code="queue_timeout",
            headers={"Retry-After": str(retry_after)},
        ) from None
    return lease


async def _by(deadline: float | None, work: Awaitable[T]) -> T:
    """``work``, cancelled with TimeoutError at ``deadline`` (the event loop's clock)."""
    if deadline is None:
        return await work
    async with asyncio.timeout_at(deadline):
        return await work


async def _generating_by(deadline: float | None, limit_s: float | None, work: Awaitable[T]) -> T:
    """``work`` (a generation), stopped at ``deadline`` and answered with 504 then: cancelling
    it closes the model's stream, as a client leaving does, which frees its slot."""
    try:
        return await _by(deadline, work)
    except TimeoutError:
        if deadline is None or asyncio.get_running_loop().time() < deadline:
            raise  # the model's own timeout, not the request's
        raise APIError(
            504,
            f"The answer did not finish within the server's request timeout ({limit_s:g} s); "
            f"ask for fewer tokens, or retry when the server is less busy",
            type="server_error",
            code="generation_timeout",
        ) from None


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (which stops the model)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if not done and await request.is_disconnected():
                task.cancel()
                break
    except BaseException:  # this request was cancelled itself (a shutdown): so is its work
        task.cancel()
        raise
    return await task


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "499"
    return str(_as_api_error(exc).status)


def _as_api_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, asyncio.CancelledError):  # nginx's status: nobody is there to read it
        return APIError(499, "The client closed the request", code="client_closed_request")
    if isinstance(exc, StepInputError):
        return APIError(400, str(exc), code="invalid_input")
    if isinstance(exc, ModelError) and "context" in str(exc).lower():
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ModelError) and any(  # a schema the backend refused
        words in str(exc).lower() for words in ("grammar", "json schema")
    ):
        return APIError(
            400,
            f"this server cannot constrain decoding to the JSON schema given: {exc}",
            code=INVALID_SCHEMA,
        )
    if isinstance(exc, SlmopsError):
        return APIError(500, str(exc), type="server_error", code="generation_failed")
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error")
