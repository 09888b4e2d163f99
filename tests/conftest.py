"""Shared fixtures: every test runs against its own temporary workspace."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmops.apps.quickstart import bundled_docs
from slmops.core.runtime import Runtime, use_runtime
from slmops.data.corpus import corpora_for
from slmops.models import ChatModel, load_chat_model, load_embedder
from slmops.store import Workspace
from slmops.store.traces import get_trace
from slmops.train.base import prepare_base
from slmops.train.tracking import Tracker
from tests.train.tiny_model import write_tiny_gguf


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path / "ws"))
    with Workspace.open(tmp_path / "ws") as ws:
        yield ws


@pytest.fixture(autouse=True)
def runtime(workspace: Workspace) -> Iterator[Runtime]:
    """Runs inside tests trace and cache into the test's workspace, never into ./.slmops."""
    rt = Runtime.from_workspace(workspace)
    with use_runtime(rt):
        yield rt


@pytest.fixture
def spans_of(workspace: Workspace) -> Any:
    """spans_of(trace_id) -> {span name: span row} for a stored trace."""

    def lookup(trace_id: str) -> dict[str, dict[str, Any]]:
        _, spans = get_trace(workspace.engine, trace_id)
        return {span["name"]: span for span in spans}

    return lookup


@pytest.fixture(scope="session")
def shipped_chat_model() -> ChatModel:
    return load_chat_model("local:smollm2-135m")


@pytest.fixture(scope="session")
def shipped_embedder() -> Any:
    return load_embedder("local:all-minilm-l6-v2")


requires_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz 'dot' is not installed (apt-get install graphviz)"
)


@pytest.fixture
def stacks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "stacks"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def handbook(workspace: Workspace) -> Any:
    """Corpus 'docs' holding the bundled slmops handbook (version 1)."""
    corpora_for(workspace).ingest("docs", [bundled_docs()])
    return corpora_for(workspace)


# --- fine-tuning: a tiny Llama model and a pre-migrated MLflow store (session-wide) ---


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_base(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model dequantized once, as ``prepare_base`` leaves a GGUF base (it records
    the GGUF, so exports copy its metadata): an ``hf:`` URI that loads in a second."""
    with Workspace.open(tmp_path_factory.mktemp("tiny-base")) as ws:
        base = prepare_base(f"gguf:{tiny_gguf}", ws)
    return f"hf:{base.checkpoint}"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store migrated once (about 7 s); each test gets a copy (milliseconds)."""
    home = tmp_path_factory.mktemp("mlflow-template")
    with Workspace.open(home) as ws:
        Tracker(ws)
    return home / "mlflow.db"
