"""Running the console in a background thread on a loopback port (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn

from slmops.serve.server import uvicorn_config
from slmops.store.workspace import Workspace
from slmops.ui.app import create_console

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_console(
    workspace: Workspace, *, port: int | None = None, api_keys: Sequence[str] = ()
) -> Iterator[str]:
    """The console over ``workspace`` on 127.0.0.1 in a background thread; yields its base
    URL and shuts it down afterwards."""
    chosen = port or free_port()
    app = create_console(workspace, api_keys=api_keys)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", chosen))
    thread = threading.Thread(target=server.run, name="slmops-console", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the console did not start on 127.0.0.1:{chosen}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{chosen}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
