"""A short soak: ``slmops serve`` as a process, serving a tiny GGUF through llama.cpp, under
overload for half a minute (``make soak`` runs the same for ten minutes with the shipped
model). Nothing may hang or fail with a 5xx, and the process must end as it began: the same
open files and threads, bounded memory, a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

from slmops.core.runtime import Runtime
from slmops.models.base import ChatChunk, ChatMessage, GenerationParams
from slmops.models.loading import load_embedder
from slmops.serve.app import Catalog, ServeConfig
from slmops.serve.server import running_server
from slmops.store import Workspace
from tests.fakes import ScriptedChatModel
from tests.serve.conftest import free_port
from tests.train.tiny_model import write_tiny_gguf

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak_serve.py"


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_serve", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_server_survives_overload_and_ends_as_it_began(tmp_path: Path) -> None:
    soak = soak_module()
    config = soak.SoakConfig(
        model=f"gguf:{write_tiny_gguf(tmp_path / 'tiny.gguf')}",
        embedder=None,  # the real embedder would take most of the time
        duration_s=20,
        clients=16,
        max_queue=3,
        max_tokens=32,
        sample_every_s=1.0,
        hang_after_s=30,
        warmup_s=10,
        home=tmp_path / "ws",
    )
    report = soak.run_soak(config, log=lambda *_: None)
    summary = "\n".join(f"{name}: {value}" for name, value in report.summary())

    assert not report.hung, summary
    assert report.server_errors() == 0 and not report.errors, summary
    # overload for real: most requests refused at once, some answered, some abandoned
    assert report.statuses["429"] > report.statuses["200"] > 0, summary
    assert report.disconnects > 0, summary
    # nothing held a generation slot after its client left: the next request is served
    assert report.probe_s is not None and report.probe_s < 5, summary
    assert report.baseline is not None and report.after is not None
    assert report.after.fds <= report.baseline.fds + 2, summary
    assert report.after.connections <= report.baseline.connections + 1, summary
    assert report.after.threads <= report.baseline.threads + 2, summary
    assert report.rss_growth_after_warmup_mb() < 50, summary
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why
    assert report.exit_code in (0, -signal.SIGTERM), summary
    assert report.shutdown_s is not None and report.shutdown_s < 30, summary


class SlowModel(ScriptedChatModel):
    """Streams its reply a word every 0.1 s, so a request holds the model for a while."""

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        for chunk in super().stream(messages, params):
            time.sleep(0.1)
            yield chunk


def test_a_client_that_leaves_the_line_gives_up_its_place(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    model = SlowModel(
        ["one two three four five six seven eight nine ten eleven twelve"], "local:slow"
    )
    catalog = Catalog(chat_models={"local:slow": model})
    body = {"model": "local:slow", "messages": [{"role": "user", "content": "hi"}]}
    # one at a time, one may wait; the next gets 429
    config = ServeConfig(monitor=None, max_queue=1, local_concurrency=1)
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), config, port=free_port()
        ) as url:
            holding = threading.Thread(
                target=httpx.post,
                args=(url + "/v1/chat/completions",),
                kwargs={"json": body, "timeout": 30},
            )
            holding.start()
            time.sleep(0.3)  # the model is busy for a second more
            with pytest.raises(httpx.TimeoutException):  # waits in line, then leaves
                httpx.post(url + "/v1/chat/completions", json=body, timeout=0.2)
            time.sleep(0.4)  # the server notices
            waiting = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
            holding.join()
            assert waiting.status_code == 200, waiting.text  # the place was free again
            # the one that left was never generated: two answers, not three
            assert len(model.calls) == 2
    finally:
        workspace.close()


class ThreadRecordingEmbedder:
    uri = "local:recording"

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def embed(self, texts: Sequence[str]) -> Any:
        self.threads.add(threading.get_ident())
        time.sleep(0.01)
        return np.ones((len(texts), 4), dtype="float32")

    def count_tokens(self, text: str) -> int:
        self.threads.add(threading.get_ident())
        return len(text.split())


def test_concurrent_embeddings_run_on_one_thread(tmp_path: Path) -> None:
    """Embedders take one call at a time; a thread per concurrent request only left idle
    threads behind (each with its own OpenMP team under torch)."""
    workspace = Workspace.open(tmp_path / "ws")
    embedder = ThreadRecordingEmbedder()
    catalog = Catalog(embedders={embedder.uri: embedder})  # type: ignore[dict-item]
    body = {"model": embedder.uri, "input": ["a text", "another text"]}
    try:
        with running_server(
            catalog, Runtime.from_workspace(workspace), ServeConfig(monitor=None), port=free_port()
        ) as url:

            async def many() -> list[int]:
                async with httpx.AsyncClient(timeout=30) as client:
                    replies = await asyncio.gather(
                        *(client.post(url + "/v1/embeddings", json=body) for _ in range(24))
                    )
                return [r.status_code for r in replies]

            assert asyncio.run(many()) == [200] * 24
        assert len(embedder.threads) == 1
    finally:
        workspace.close()


@pytest.mark.model
def test_counting_tokens_while_embedding_is_safe() -> None:
    """The server counts an input's tokens while another request embeds: both use the one
    tokenizer, which is not thread-safe (encode failed now and then under load)."""
    embedder = load_embedder("local:all-minilm-l6-v2")

    def work(i: int) -> None:
        if i % 2:
            embedder.embed(["a short text", "another one"] * 3)
        else:
            for j in range(20):
                embedder.count_tokens(f"a short text number {j}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(300)))  # raises the first failure
