"""Running the server: build the catalog, then uvicorn on a loopback address by default."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from slmops.apps.build import build_stack
from slmops.core.runtime import Runtime
from slmops.errors import ConfigError
from slmops.models.loading import load_chat_model, load_embedder
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.serve.connections import DEFAULT_HEADER_TIMEOUT_S, header_timeout_protocol
from slmops.serve.following import AliasFollower, FollowedChatModel, follows, resolvable
from slmops.store.workspace import Workspace


def build_catalog(
    workspace: Workspace,
    *,
    models: list[str],
    stacks: list[str],
    embedders: list[str],
    challengers: Sequence[str] = (),
    poll_s: float = 1.0,
) -> Catalog:
    """Load every model and build every stack now, so the first request does not pay for it
    and a wrong name fails at start-up, not at the first call. Registry aliases (served
    directly, or by an unlocked stack) are followed as they move; ``challengers`` (canary or
    shadow versions) are loaded now too."""
    catalog = Catalog()
    followed: list[str] = []
    for uri in models:
        if follows(uri):
            followed.append(uri)
            catalog.chat_models[uri] = FollowedChatModel(uri)
        else:
            catalog.chat_models[uri] = load_chat_model(uri)
    for ref in stacks:
        stack = build_stack(ref, workspace)
        catalog.stacks[f"stack:{stack.stack_name}"] = stack
        # aliases are followed; versions (a locked stack's) are held, never re-resolved
        followed += [uri for uri in stack.resolved.models.values() if resolvable(uri)]
    for uri in embedders:
        catalog.embedders[uri] = load_embedder(uri)
    if not catalog.names():
        raise ConfigError("nothing to serve: give --model, --stack or --embedder")
    if followed or challengers:
        catalog.follower = AliasFollower(workspace, [*followed, *challengers], poll_s=poll_s)
        catalog.follower.start()
    return catalog


def read_keys_file(path: Path) -> list[str]:
    """One API key per line; blank lines and # comments are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read keys file {path}: {exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ConfigError(f"keys file {path} holds no key")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError(f"keys file {path}: every key must be at least 16 characters")
    return keys


def uvicorn_config(
    app: object,
    host: str,
    port: int,
    *,
    log_config: object = None,
    header_timeout_s: float | None = DEFAULT_HEADER_TIMEOUT_S,
) -> uvicorn.Config:
    """uvicorn's settings; ``header_timeout_s``: how long a request's headers may take to
    arrive before the connection is answered 408 and closed (None: no limit, uvicorn's own
    protocol)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=log_config,  # type: ignore[arg-type]
        access_log=False,
        timeout_graceful_shutdown=30,  # finish in-flight requests, then end them cleanly
        lifespan="on",
        http="auto" if header_timeout_s is None else header_timeout_protocol(header_timeout_s),
    )


@contextmanager
def running_server(
    catalog: Catalog, runtime: Runtime, config: ServeConfig, *, port: int
) -> Iterator[str]:
    """A server on 127.0.0.1:port in a background thread (for tests and benchmarks);
    yields its base URL and shuts it down gracefully afterwards."""
    app = create_app(catalog, runtime, config)
    server = uvicorn.Server(
        uvicorn_config(app, "127.0.0.1", port, header_timeout_s=config.header_timeout_s)
    )
    thread = threading.Thread(target=server.run, name="slmops-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
