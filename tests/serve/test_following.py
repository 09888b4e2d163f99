"""Serving registry aliases live (tiny models): the server follows an alias as it moves,
with no failed request under streaming load, splits traffic to a canary, and shadows."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from slmops.core.runtime import Runtime
from slmops.registry.registration import register_uri
from slmops.registry.store import ModelRegistry
from slmops.serve.app import ServeConfig
from slmops.serve.following import parse_canary, parse_shadow
from slmops.serve.server import build_catalog, running_server
from slmops.store import Workspace
from slmops.store.traces import get_trace, list_traces
from tests.serve.test_server import free_port
from tests.train.tiny_model import write_tiny_gguf

ALIAS = "registry:tiny@champion"


@pytest.fixture
def registry(
    workspace: Workspace, mlflow_template: Path, tiny_gguf: Path, tmp_path
) -> ModelRegistry:
    shutil.copy(mlflow_template, workspace.home / "mlflow.db")
    registry = ModelRegistry(workspace)
    register_uri(registry, name="tiny", uri=f"gguf:{tiny_gguf}")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    register_uri(registry, name="tiny", uri=f"gguf:{other}")
    registry.set_alias(name="tiny", alias="champion", version=1)
    registry.set_alias(name="tiny", alias="challenger", version=2)
    return registry


@pytest.fixture
def serve(workspace: Workspace, registry: ModelRegistry) -> Iterator[Any]:
    def start(config: ServeConfig | None = None, challengers: tuple[str, ...] = ()) -> Any:
        catalog = build_catalog(
            workspace, models=[ALIAS], stacks=[], embedders=[], challengers=challengers, poll_s=0.1
        )
        return running_server(
            catalog, Runtime.from_workspace(workspace), config or ServeConfig(), port=free_port()
        )

    yield start


def ask(url: str, *, stream: bool = False) -> tuple[str, str]:
    """(model version that answered, trace id) of one chat request."""
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    if not stream:
        response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        response.raise_for_status()
        return response.headers["X-Slmops-Model-Version"], response.headers["X-Slmops-Trace-Id"]
    final: dict[str, Any] = {}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                import json

                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(event["error"])
                if event.get("slmops"):
                    final = event["slmops"]
    return final["model_version"], final["trace_id"]


def test_the_server_follows_an_alias_with_no_failed_request(serve, registry, workspace):
    with serve() as url:
        assert ask(url)[0] == "registry:tiny@1"
        answered: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    answered.append(ask(url, stream=True)[0])
                except Exception as exc:  # any failure counts
                    failures.append(repr(exc))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        registry.set_alias(name="tiny", alias="champion", version=2)  # as MLflow's client would
        deadline = time.monotonic() + 20
        while "registry:tiny@2" not in answered[-8:] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        assert failures == []
        assert "registry:tiny@1" in answered and answered[-1] == "registry:tiny@2"
        switch = answered.index("registry:tiny@2")
        assert set(answered[switch + 4 :]) == {"registry:tiny@2"}  # once moved, it stays
        version, trace_id = ask(url)
        _, spans = get_trace(workspace.engine, trace_id)
        assert {s["attributes"].get("gen_ai.response.model") for s in spans} == {version}
        metrics = httpx.get(url + "/metrics").text
        assert 'slmops_alias_switches_total{alias="registry:tiny@champion"' in metrics
        assert 'version="registry:tiny@1"' in metrics and 'version="registry:tiny@2"' in metrics


def test_a_canary_answers_its_share_and_a_shadow_answers_into_the_traces(serve, workspace):
    canary = parse_canary("registry:tiny@challenger=50%")
    with serve(ServeConfig(canary=canary), (canary.uri,)) as url:
        versions = [ask(url)[0] for _ in range(24)]
    assert {"registry:tiny@1", "registry:tiny@2"} == set(versions)
    shadow = parse_shadow("registry:tiny@challenger")
    with serve(ServeConfig(shadow=shadow), (shadow.uri,)) as url:
        version, primary = ask(url)
        assert version == "registry:tiny@1"
        deadline = time.monotonic() + 20
        shadows: list[dict[str, Any]] = []
        while not shadows and time.monotonic() < deadline:
            time.sleep(0.1)
            shadows = [
                t
                for t in list_traces(workspace.engine, limit=50)
                if t["attributes"].get("slmops.shadow_of") == primary
            ]
        assert len(shadows) == 1
        _, spans = get_trace(workspace.engine, shadows[0]["trace_id"])
        assert {s["attributes"].get("gen_ai.response.model") for s in spans} == {"registry:tiny@2"}


def test_bad_canary_and_shadow_options_are_refused():
    from slmops.errors import ConfigError

    for bad in ("registry:tiny@b=0%", "registry:tiny@b=150%", "gguf:/m.gguf=10%", "x"):
        with pytest.raises(ConfigError, match="--canary"):
            parse_canary(bad)
    with pytest.raises(ConfigError, match="--shadow"):
        parse_shadow("local:smollm2-135m")


def test_a_served_stack_on_an_alias_follows_it(workspace, registry, stacks_dir):
    from slmops.apps.templates import init_stack

    init_stack("chatty", "chat", workspace, directory=stacks_dir, model=ALIAS)
    catalog = build_catalog(workspace, models=[], stacks=["chatty"], embedders=[], poll_s=0.1)
    body = {"model": "stack:chatty", "messages": [{"role": "user", "content": "Hi"}]}
    with running_server(
        catalog, Runtime.from_workspace(workspace), ServeConfig(), port=free_port()
    ) as url:

        def answered_by() -> str:
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            response.raise_for_status()
            return response.headers["X-Slmops-Model-Version"]

        assert answered_by() == "registry:tiny@1"
        registry.set_alias(name="tiny", alias="champion", version=2)
        deadline = time.monotonic() + 20
        while answered_by() != "registry:tiny@2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answered_by() == "registry:tiny@2"
