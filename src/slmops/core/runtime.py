"""The services a run uses (tracer, cache), chosen per context so tests, servers and the CLI
can each point runs at their own workspace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from slmops.core.cache import RedisStepCache, SQLStepCache, StepCache
from slmops.core.tracing import Tracer
from slmops.store.redaction import Redactor
from slmops.store.workspace import Workspace


@dataclass
class Runtime:
    tracer: Tracer
    cache: StepCache | None = None
    workspace: Workspace | None = None

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> Runtime:
        settings = workspace.settings
        cache: StepCache
        if settings.cache_url and settings.cache_url.startswith(("redis://", "rediss://")):
            cache = RedisStepCache(settings.cache_url)
        else:
            cache = SQLStepCache(workspace.engine)
        redactor = Redactor.from_settings(settings.redact, settings.redact_patterns)
        tracer = Tracer(workspace.engine, otlp_endpoint=settings.otlp_endpoint, redactor=redactor)
        return cls(tracer=tracer, cache=cache, workspace=workspace)

    @classmethod
    def in_memory(cls) -> Runtime:
        """Spans are created (and exported if configured) but not stored; nothing cached."""
        return cls(tracer=Tracer())


_current: ContextVar[Runtime | None] = ContextVar("slmops_runtime", default=None)
_default: Runtime | None = None
_default_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime set by :func:`use_runtime`, else one for the default workspace."""
    runtime = _current.get()
    if runtime is not None:
        return runtime
    global _default
    with _default_lock:
        if _default is None:
            _default = Runtime.from_workspace(Workspace.open())
        return _default


_resolving: ContextVar[Workspace | None] = ContextVar("slmops_resolving", default=None)


def current_workspace() -> Workspace | None:
    """The workspace being built against (:func:`resolving_in`), else that of the runtime set
    by :func:`use_runtime`: what model URI resolvers use, so ``registry:`` URIs resolve in
    the workspace at hand rather than the default one."""
    building = _resolving.get()
    if building is not None:
        return building
    runtime = _current.get()
    return runtime.workspace if runtime is not None else None


@contextmanager
def resolving_in(workspace: Workspace) -> Iterator[Workspace]:
    token = _resolving.set(workspace)
    try:
        yield workspace
    finally:
        _resolving.reset(token)


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    token = _current.set(runtime)
    try:
        yield runtime
    finally:
        _current.reset(token)


@contextmanager
def use_workspace(home: str | Path | None = None) -> Iterator[Runtime]:
    """Run steps inside this block against the workspace at ``home``."""
    workspace = Workspace.open(home)
    runtime = Runtime.from_workspace(workspace)
    try:
        with use_runtime(runtime):
            yield runtime
    finally:
        runtime.tracer.shutdown()
        workspace.close()
