"""Serving registry aliases live: the server follows ``registry:NAME@ALIAS`` as the alias
moves, with no restart and no failed request.

At start every alias the server uses is resolved and its version loaded. A watcher then
re-resolves each alias every ``poll_s`` seconds; when one has moved, the new version is
loaded first (off the event loop), and only then does the alias point at it (the resolution
is *held*, see :mod:`slmops.models.resolvers`). Requests that started before keep the model
they began with and finish on it; the next ones get the new version. The old version's model
is dropped from the cache, and its memory freed once its last request ends.

Canary and shadow serving use the same seam: a request chosen for the canary resolves the
alias to the challenger instead (a context-local redirect), and a shadow run repeats the
request on the challenger after the answer is sent, for the traces only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from slmops.core.runtime import resolving_in
from slmops.core.threads import run_blocking
from slmops.errors import ConfigError
from slmops.models.base import ChatChunk, ChatMessage, ChatModel, ChatResult, GenerationParams
from slmops.models.loading import forget_chat_model, load_chat_model, load_resolved_chat_model
from slmops.models.resolvers import ResolvedURI, hold, redirected, release, resolve_uri
from slmops.models.uri import parse_model_uri
from slmops.store.workspace import Workspace

log = logging.getLogger("slmops.serve")


def follows(uri: str) -> bool:
    """Whether a model URI names a moving target (a registry alias, not a version)."""
    return resolvable(uri) and not parse_model_uri(uri).location.rpartition("@")[2].isdigit()


def resolvable(uri: str) -> bool:
    """Whether a model URI names another one (a registry alias or version): a server holds
    its resolution, so no request queries the registry."""
    return parse_model_uri(uri).scheme == "registry"


@dataclass
class AliasFollower:
    """Holds every followed alias at a loaded version and moves it when the registry does."""

    workspace: Workspace
    uris: list[str]
    poll_s: float = 1.0
    on_switch: Callable[[str, str, str], None] | None = None  # (alias URI, old, new)
    grace_s: float = 60.0  # a version no alias holds is dropped from memory after this long
    current: dict[str, ResolvedURI] = field(default_factory=dict)
    _retired: dict[str, float] = field(default_factory=dict)  # pinned name -> when released

    def _resolve(self, uri: str) -> ResolvedURI:
        with resolving_in(self.workspace):
            return resolve_uri(uri, fresh=True)

    def start(self) -> None:
        """Resolve and load every alias now (a wrong name fails at start-up)."""
        for uri in dict.fromkeys(self.uris):
            resolved = self._resolve(uri)
            load_resolved_chat_model(resolved)
            hold(uri, resolved)
            self.current[uri] = resolved

    def stop(self) -> None:
        for uri in self.current:
            release(uri)

    async def check(self) -> list[str]:
        """Move every alias whose version changed; returns the aliases moved."""
        moved = []
        for uri, held in list(self.current.items()):
            if not follows(uri):
                continue  # a version never moves
            try:
                fresh = await run_blocking(self._resolve, uri)
                if fresh.pinned == held.pinned:
                    continue
                await run_blocking(load_resolved_chat_model, fresh)  # load before switching
            except Exception as exc:  # a registry hiccup: keep serving the held version
                log.warning("cannot follow %s: %s (still serving %s)", uri, exc, held.pinned)
                continue
            hold(uri, fresh)
            self.current[uri] = fresh
            self._retired[held.pinned] = time.monotonic()
            self._retired.pop(fresh.pinned, None)
            log.info("alias %s moved: %s -> %s", uri, held.pinned, fresh.pinned)
            if self.on_switch:
                self.on_switch(uri, held.pinned, fresh.pinned)
            moved.append(uri)
        self._drop_retired()
        return moved

    def _drop_retired(self) -> None:
        """Forget versions no alias holds any more, once every request that could still be
        fetching them has had time to (requests that have one keep it regardless)."""
        held = {r.pinned for r in self.current.values()}
        now = time.monotonic()
        for pinned, since in list(self._retired.items()):
            if pinned in held:
                del self._retired[pinned]
            elif now - since >= self.grace_s:
                forget_chat_model(pinned)
                del self._retired[pinned]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except Exception as exc:  # the watcher must outlive any one failure
                log.warning("alias check failed: %s", exc)


class FollowedChatModel:
    """A served alias as a chat model: each call runs on the version the alias holds when
    the call starts, and a stream stays on its version to the end."""

    def __init__(self, uri: str) -> None:
        self._alias = uri

    def _current(self) -> ChatModel:
        return load_chat_model(self._alias)

    def pinned(self) -> ChatModel:
        """The version the alias holds now (for this request: a canary may redirect it);
        a request uses this one model from start to end."""
        return self._current()

    @property
    def uri(self) -> str:
        return self._current().uri

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        return self._current().chat(messages, params, json_schema=json_schema)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        return self._current().complete(prompt, params)

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        return self._current().stream(messages, params)

    def stream_prompt(
        self, prompt: str, params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        model = self._current()
        streaming = getattr(model, "stream_prompt", None)
        if streaming is None:
            result = model.complete(prompt, params)
            return iter([ChatChunk(result.text, result.finish_reason, result.usage)])
        return cast(Iterator[ChatChunk], streaming(prompt, params))


@dataclass(frozen=True)
class Challenger:
    """Requests for a registered model's aliases go (canary) or also go (shadow) to another
    version: ``registry:NAME@challenger``."""

    uri: str
    share: float  # canary: the share of requests it answers; shadow: 0
    shadow: bool

    @property
    def model_name(self) -> str:
        return parse_model_uri(self.uri).location.partition("@")[0]

    def redirects(self, uris: Iterable[str]) -> dict[str, str]:
        """The followed URIs of the same registered model, pointed at the challenger."""
        return {
            uri: self.uri
            for uri in uris
            if parse_model_uri(uri).location.partition("@")[0] == self.model_name
            and uri != self.uri
        }


def parse_canary(text: str) -> Challenger:
    """``registry:NAME@ALIAS=10%``."""
    uri, sep, share = text.rpartition("=")
    try:
        fraction = float(share.strip().removesuffix("%")) / 100
    except ValueError:
        fraction = -1.0
    if not sep or not 0 < fraction <= 1 or parse_model_uri(uri).scheme != "registry":
        raise ConfigError(f"--canary {text!r}: write registry:NAME@ALIAS=PERCENT, e.g. =10%")
    return Challenger(uri, fraction, shadow=False)


def parse_shadow(text: str) -> Challenger:
    if parse_model_uri(text).scheme != "registry":
        raise ConfigError(f"--shadow {text!r}: give a registry:NAME@ALIAS model URI")
    return Challenger(text, 0.0, shadow=True)


@contextmanager
def canary_for(
    challenger: Challenger | None, uris: Iterable[str], chooser: random.Random
) -> Iterator[bool]:
    """Within this block a chosen request's aliases resolve to the challenger; yields
    whether this request was chosen."""
    redirects = challenger.redirects(uris) if challenger and not challenger.shadow else {}
    if not redirects or chooser.random() >= challenger.share:  # type: ignore[union-attr]
        yield False
        return
    with redirected(redirects):
        yield True
