"""Model URIs that name other model URIs (``registry:NAME@ALIAS``), resolved by plugins.

A resolver turns such a URI into the concrete one that loads (``gguf:/path/model.gguf``) and
a stable name for what it found (``registry:NAME@3``). Resolvers are entry points in the
group ``slmops.model_uri_resolvers``, named by the URI scheme they handle: slmops' own model
registry is one (``registry = "slmops.registry.resolve:resolve_uri"``), and a plugin
package can add its own scheme the same way. The layer that knows how to resolve (the
registry, above this one) is found at run time, so this layer imports nothing above it.

Each call resolves afresh (a registry lookup takes milliseconds), so an alias that moved is
followed at the next call. A server pins its resolutions instead (``hold``) and moves them
itself, after it has loaded the new version, so no request waits for a model to load.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import entry_points

from slmops.errors import UnknownModelError
from slmops.models.uri import BUILTIN_SCHEMES, RESOLVERS_GROUP, parse_model_uri

GROUP = RESOLVERS_GROUP


@dataclass(frozen=True)
class ResolvedURI:
    requested: str  # as written: registry:handbook@champion
    pinned: str  # what it resolved to, by a name that does not move: registry:handbook@3
    uri: str  # what loads: gguf:/.../model.gguf
    digest: str | None = None  # the weights' recorded sha256:..., when the resolver knows it


Resolver = Callable[[str], ResolvedURI]

_held: dict[str, ResolvedURI] = {}
_lock = threading.Lock()
# Per request: URIs to resolve as other URIs instead (a canary request's alias -> the
# challenger). Context-local, so concurrent requests each see their own.
_redirects: ContextVar[dict[str, str] | None] = ContextVar("slmops_redirects", default=None)


@functools.lru_cache(maxsize=16)
def _resolver(scheme: str) -> Resolver:
    found = [e for e in entry_points(group=GROUP) if e.name == scheme]
    if not found:
        raise UnknownModelError(
            f"no resolver for model URIs of scheme {scheme!r} is installed (entry point group "
            f"{GROUP})"
        )
    resolver: Resolver = found[0].load()
    return resolver


def resolve_uri(uri: str, *, fresh: bool = False) -> ResolvedURI:
    """The concrete URI behind ``uri`` (itself, for the built-in schemes)."""
    redirect = (_redirects.get() or {}).get(uri)
    if redirect is not None:
        return resolve_uri(redirect, fresh=fresh)
    parsed = parse_model_uri(uri)
    if parsed.scheme in BUILTIN_SCHEMES:
        return ResolvedURI(uri, uri, uri)
    with _lock:
        if uri in _held and not fresh:
            return _held[uri]
    return _resolver(parsed.scheme)(uri)


def hold(uri: str, resolved: ResolvedURI) -> None:
    """Pin ``uri`` to ``resolved`` until :func:`release` (a server following an alias)."""
    with _lock:
        _held[uri] = resolved


def release(uri: str) -> None:
    with _lock:
        _held.pop(uri, None)


@contextmanager
def redirected(mapping: dict[str, str]) -> Iterator[None]:
    """Within this block (this context only), resolve each key of ``mapping`` as its value."""
    token = _redirects.set({**(_redirects.get() or {}), **mapping})
    try:
        yield
    finally:
        _redirects.reset(token)
