"""``/stacks`` (the stacks ``slmops stack list`` finds), ``/stacks/{name}`` (its graph,
manifest, lock and a playground), ``/stacks/{name}/graph.svg`` (the graph drawn by the local
Graphviz) and the playground's runs: ``/stacks/{name}/stream`` answers with server-sent events
as the model writes (read by ``static/playground.js``), ``/stacks/{name}/run`` with the whole
page (the same form without JavaScript).

A run goes through :func:`slmops.serve.generation.stream_stack`, the path ``slmops serve``
answers with, inside a runtime over the console's workspace: every run is traced, and the
page links to its trace.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from slmops.apps.build import build_stack
from slmops.apps.citations import SourcedAnswer
from slmops.apps.discovery import FoundStack, list_stacks, stack_roots
from slmops.apps.lock import StackLock, lock_path, read_lock, resolve
from slmops.apps.stack import Stack, parse_stack_input, to_plain
from slmops.core.runtime import Runtime, use_runtime
from slmops.errors import ConfigError, GraphRenderError, NotFoundError, SlmopsError
from slmops.serve.admission import QueueFullError
from slmops.serve.generation import Generation, stream_stack
from slmops.ui.auth import RefusedError
from slmops.ui.forms import read_form

if TYPE_CHECKING:
    from slmops.ui.app import Console

MAX_BUILT = 16  # built stacks kept per console (each holds its steps' loaded state)
SVG_HEADERS = {
    # The picture is Graphviz's output from our own escaped labels; shown through <img>, it
    # could not run script anyway, and this policy forbids everything else it might load.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class StackEntry:
    """One stack folder as the list shows it; ``name`` (the folder's) is its URL."""

    name: str
    found: FoundStack

    @property
    def locked(self) -> bool:
        return (self.found.path.parent / "slmops.lock").exists()

    @property
    def title(self) -> str:
        return self.found.manifest.name if self.found.manifest else self.name


def stack_entries(console: Console) -> list[StackEntry]:
    """The stacks in the current directory and the workspace's ``stacks/`` folder (as the
    CLI finds them); a name in both is the first one, as ``slmops run NAME`` picks it."""
    entries: dict[str, StackEntry] = {}
    for found in list_stacks(stack_roots(console.workspace)):
        entries.setdefault(found.path.parent.name, StackEntry(found.path.parent.name, found))
    return list(entries.values())


def find_entry(console: Console, name: str) -> StackEntry:
    """Only a listed stack is shown or run: a URL never names an arbitrary folder."""
    entries = stack_entries(console)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in entries) or "none yet"
    raise NotFoundError(f"no stack named {name!r} (stacks: {known})")


def input_hint(stack: Stack) -> dict[str, Any]:
    """What the input box asks for: the field plain text fills, or a JSON skeleton."""
    text_field = stack.text_field()
    fields = stack.input_type.model_fields
    skeleton = {
        name: (info.default if not info.is_required() and info.default is not None else "")
        for name, info in fields.items()
    }
    return {
        "text_field": text_field,
        "fields": list(fields),
        "placeholder": "" if text_field else json.dumps(skeleton, ensure_ascii=False),
    }


@dataclass
class LockView:
    """The lock beside a manifest: absent, current (made for this manifest) or stale, and
    each pinned reference beside what the manifest's reference resolves to now."""

    state: str  # none | current | stale
    text: str = ""
    problem: str = ""
    pins: list[dict[str, str]] = field(default_factory=list)


def lock_view(entry: StackEntry, console: Console) -> LockView:
    loaded = entry.found.manifest
    if loaded is None:
        return LockView("none")
    path = lock_path(loaded)
    if not path.exists():
        return LockView("none")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        lock: StackLock | None = read_lock(loaded)
    except SlmopsError as exc:
        return LockView("stale", text, str(exc))
    assert lock is not None
    try:
        now = resolve(loaded, console.workspace, use_lock=False).summary()
    except SlmopsError as exc:
        return LockView("current", text, f"the manifest's references do not resolve now: {exc}")
    pins = [
        {"kind": kind, "alias": alias, "pinned": pinned, "now": now[kind].get(alias, "")}
        for kind, pinned_refs in (("corpora", lock.corpora), ("prompts", lock.prompts))
        for alias, pinned in pinned_refs.items()
    ]
    pins += [
        {"kind": "models", "alias": alias, "pinned": lock.model_versions.get(alias, uri), "now": ""}
        for alias, uri in lock.models.items()
    ]
    return LockView("current", text, pins=pins)


class Playground:
    """Builds stacks and runs them traced into the console's workspace. A build only
    resolves references (milliseconds); the built stack is kept per name, stack version
    and resolved versions, so runs reuse it (and its drawing) until the manifest, its code
    or what it resolves to (a newly ingested corpus version) changes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._built: OrderedDict[tuple[str, str, str], Stack] = OrderedDict()
        self._svgs: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None

    def _build(self, entry: StackEntry) -> tuple[tuple[str, str, str], Stack]:
        fresh = build_stack(entry.found.path, self.console.workspace)
        key = (entry.name, fresh.version, json.dumps(fresh.resolved.summary(), sort_keys=True))
        with self._lock:
            built = self._built.get(key)
            if built is not None:
                self._built.move_to_end(key)
                return key, built
            self._built[key] = fresh
            while len(self._built) > MAX_BUILT:
                self._svgs.pop(self._built.popitem(last=False)[0], None)
            return key, fresh

    def stack(self, entry: StackEntry) -> Stack:
        return self._build(entry)[1]

    def svg(self, entry: StackEntry) -> bytes:
        """The stack's graph as Graphviz draws it (its labels escaped by ``Graph.dot``)."""
        key, stack = self._build(entry)
        with self._lock:
            drawn = self._svgs.get(key)
        if drawn is None:
            drawn = stack.graph().render_bytes("svg")
            with self._lock:
                self._svgs[key] = drawn
        return drawn

    def runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = Runtime.from_workspace(self.console.workspace)
            return self._runtime


ORIGIN = "console"  # on the run's trace: monitoring leaves playground runs out of live traffic
log = logging.getLogger("slmops.ui")


def busy(full: QueueFullError) -> str:
    return f"the model is busy ({full}); try again in {full.retry_after_s} s"


def request_id() -> str:
    return f"console-{uuid.uuid4().hex[:16]}"


def run_result(
    report: Generation, base: str, started: float, *, streamed: bool = False
) -> dict[str, Any]:
    """What a finished run shows: the answer, its sources, the trace and versions."""
    output = report.output
    result: dict[str, Any] = {
        "answer": report.text,
        "refused": False,
        "reason": None,
        "citations": [],
        "structured": None,
        "trace_id": report.trace_id,
        "trace_url": f"{base}/traces/{report.trace_id}",
        "duration_ms": (time.perf_counter() - started) * 1000,
        "tokens": [report.prompt_tokens, report.completion_tokens],
        "answered_by": report.answered_by,
        "versions": report.extension.get("versions", {}),
        "streamed": streamed,
    }
    if isinstance(output, SourcedAnswer):
        result["refused"] = output.refused
        result["reason"] = output.reason
        result["citations"] = [citation.model_dump() for citation in output.citations]
    elif not isinstance(output, str):
        result["structured"] = json.dumps(to_plain(output), indent=2, ensure_ascii=False)
    return result


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    playground = Playground(console)

    @routes.get("/stacks", response_class=HTMLResponse)
    def stack_list(request: Request) -> HTMLResponse:
        return console.render(
            request, "stacks.html", title="Stacks", entries=stack_entries(console)
        )

    def stack_page(
        request: Request,
        entry: StackEntry,
        *,
        status_code: int = 200,
        given: str = "",
        result: dict[str, Any] | None = None,
        run_error: str = "",
    ) -> HTMLResponse:
        built: Stack | None = None
        build_error = entry.found.problem or ""
        if entry.found.manifest is not None:
            try:
                built = playground.stack(entry)
            except SlmopsError as exc:
                build_error = str(exc)
        graph = built.graph() if built is not None else None
        return console.render(
            request,
            "stack.html",
            status_code=status_code,
            title=f"Stack · {entry.title}",
            entry=entry,
            manifest=entry.found.manifest.manifest if entry.found.manifest else None,
            manifest_text=entry.found.path.read_text(encoding="utf-8", errors="replace"),
            built=built,
            build_error=build_error,
            versions=built.resolved.summary() if built is not None else None,
            locked_run=built.resolved.locked if built is not None else False,
            lock=lock_view(entry, console),
            mermaid=graph.mermaid() if graph is not None else "",
            svg=graph is not None and shutil.which("dot") is not None,
            hint=input_hint(built) if built is not None else None,
            given=given,
            result=result,
            run_error=run_error,
        )

    @routes.get("/stacks/{name}", response_class=HTMLResponse)
    def show_stack(request: Request, name: str) -> HTMLResponse:
        return stack_page(request, find_entry(console, name))

    @routes.get("/stacks/{name}/graph.svg")
    def graph_svg(name: str) -> Response:
        entry = find_entry(console, name)
        if entry.found.manifest is None:
            raise NotFoundError(f"stack {name!r} has no valid manifest to draw")
        try:
            svg = playground.svg(entry)
        except GraphRenderError as exc:
            raise RefusedError(503, str(exc)) from None
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)

    async def prepared(request: Request, name: str) -> tuple[StackEntry, Stack, str, Any]:
        """The actor check, the form, the built stack and the parsed input of a run."""
        console.auth.require_actor(request)
        form = await read_form(request)
        entry = await run_in_threadpool(find_entry, console, name)
        if entry.found.manifest is None:
            raise ConfigError(f"stack {name!r} cannot run: {entry.found.problem}")
        stack = await run_in_threadpool(playground.stack, entry)
        given = form.get("input")
        if not given:
            raise ConfigError("input: type a question (or a JSON object) to run the stack on")
        return entry, stack, given, parse_stack_input(given)

    @routes.post("/stacks/{name}/run", response_class=HTMLResponse)
    async def run_page(request: Request, name: str) -> HTMLResponse:
        console.auth.require_actor(request)
        form = await read_form(request)
        entry = await run_in_threadpool(find_entry, console, name)
        given = form.get("input")
        started = time.perf_counter()
        report = Generation()
        try:
            if entry.found.manifest is None:
                raise ConfigError(f"this stack cannot run: {entry.found.problem}")
            if not given:
                raise ConfigError("input: type a question (or a JSON object) to run it on")
            stack = await run_in_threadpool(playground.stack, entry)
            value = parse_stack_input(given)
            runtime = await run_in_threadpool(playground.runtime)
            async with console.admission.slot():
                with use_runtime(runtime):
                    async for _piece in stream_stack(
                        stack, value, request_id(), report, origin=ORIGIN
                    ):
                        pass
        except QueueFullError as full:
            return await run_in_threadpool(
                stack_page, request, entry, status_code=429, given=given, run_error=busy(full)
            )
        except SlmopsError as exc:
            return await run_in_threadpool(
                stack_page, request, entry, status_code=400, given=given, run_error=str(exc)
            )
        result = run_result(report, console.base(request), started)
        return await run_in_threadpool(stack_page, request, entry, given=given, result=result)

    @routes.post("/stacks/{name}/stream")
    async def run_stream(request: Request, name: str) -> Response:
        _entry, stack, _given, value = await prepared(request, name)
        base = console.base(request)
        runtime = await run_in_threadpool(playground.runtime)

        async def events() -> AsyncIterator[str]:
            started = time.perf_counter()
            report = Generation()
            streamed = False
            try:
                yield sse("start", {"stack": stack.stack_name})
                async with console.admission.slot():
                    with use_runtime(runtime):
                        async for piece in stream_stack(
                            stack, value, request_id(), report, origin=ORIGIN
                        ):
                            streamed = True
                            yield sse("token", {"text": piece})
                yield sse("done", run_result(report, base, started, streamed=streamed))
            except QueueFullError as full:
                yield sse("error", {"message": busy(full)})
            except SlmopsError as exc:
                yield sse("error", {"message": str(exc)})
            except Exception:  # the headers are sent: say it failed; the detail goes to the log
                log.exception("playground run of %s failed", stack.stack_name)
                yield sse("error", {"message": "the run failed; the console's log has why"})

        return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)

    return routes
