"""A server to attack: the real FastAPI app with scripted models (no model loads, every
answer in a millisecond), two app stacks made of Python steps and a fake embedder."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from slmops.apps.build import build_stack
from slmops.core.runtime import Runtime
from slmops.serve.app import Catalog, ServeConfig, create_app
from slmops.serve.server import running_server
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel

FAKE_KEY = "fuzz-key-0123456789abcdef"
CHAT = "local:scripted"
EMBEDDER = "local:fake-embedder"
ECHO, ADDER = "stack:echo", "stack:adder"

_STACKS = {
    "echo": (
        '[stack]\nname = "echo"\n[[steps]]\nname = "say"\nkind = "function"\n'
        'call = "echo_steps:say"\ninput = "input.text"\n',
        "echo_steps",
        "def say(text: str) -> str:\n    return text[:200]\n",
    ),
    "adder": (
        '[stack]\nname = "adder"\n[stack.input]\na = "integer"\nb = "integer"\n'
        '[[steps]]\nname = "add"\nkind = "function"\ncall = "adder_steps:add"\n',
        "adder_steps",
        "from pydantic import BaseModel\n"
        "class Pair(BaseModel):\n    a: int\n    b: int\n"
        "def add(pair: Pair) -> str:\n    return str(pair.a + pair.b)\n",
    ),
}


def read_to_close(connection: socket.socket) -> bytes:
    """All a raw socket receives until the server closes it; a reset after the answer (the
    server closed with our last bytes unread) keeps what arrived."""
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeEmbedder:
    """Four dimensions, all ones: what matters here is the wire format, not the vectors."""

    uri = EMBEDDER

    def embed(self, texts: Sequence[str]) -> Any:
        return np.ones((len(texts), 4), dtype="float32")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def fake_catalog(root: Path, workspace: Workspace) -> Catalog:
    stacks = {}
    for name, (manifest, module, code) in _STACKS.items():
        folder = root / "stacks" / name
        folder.mkdir(parents=True)
        (folder / "slmops.toml").write_text(manifest)
        (folder / f"{module}.py").write_text(code)
        stacks[f"stack:{name}"] = build_stack(folder / "slmops.toml", workspace)
    return Catalog(
        chat_models={CHAT: ScriptedChatModel(["Paris is the capital of France."], uri=CHAT)},
        stacks=stacks,
        embedders={EMBEDDER: FakeEmbedder()},  # type: ignore[dict-item]
    )


def fake_config(**config: Any) -> ServeConfig:
    return ServeConfig(**{"api_keys": (FAKE_KEY,), "monitor": None, **config})


def fake_app(root: Path, **config: Any) -> tuple[FastAPI, Workspace]:
    """The app over a fresh workspace in ``root``; ``config`` goes to ServeConfig."""
    workspace = Workspace.open(root / "ws")
    catalog = fake_catalog(root, workspace)
    return create_app(catalog, Runtime.from_workspace(workspace), fake_config(**config)), workspace


@contextmanager
def fake_server(root: Path, **config: Any) -> Iterator[str]:
    """The same, served by uvicorn on a loopback port; yields its base URL."""
    workspace = Workspace.open(root / "ws")
    catalog = fake_catalog(root, workspace)
    runtime = Runtime.from_workspace(workspace)
    try:
        with running_server(catalog, runtime, fake_config(**config), port=free_port()) as url:
            yield url
    finally:
        workspace.close()


@contextmanager
def shipped_model_server(root: Path, model: str) -> Iterator[str]:
    """slmops serve over a real model (no stacks, embedders or monitor) on a loopback port, in a
    fresh workspace in ``root``; yields its base URL."""
    from slmops.serve.server import build_catalog

    workspace = Workspace.open(root / "ws")
    catalog = build_catalog(workspace, models=[model], stacks=[], embedders=[])
    runtime = Runtime.from_workspace(workspace)
    try:
        with running_server(catalog, runtime, ServeConfig(monitor=None), port=free_port()) as url:
            yield url
    finally:
        workspace.close()


@pytest.fixture(scope="module")
def fake_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app, workspace = fake_app(tmp_path_factory.mktemp("fake-serve"))
    yield app
    workspace.close()
