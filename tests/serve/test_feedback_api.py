"""POST /v1/feedback and the server's monitor, for real: uvicorn on a loopback port, the
shipped model answering through a rag stack, online scoring of every answer, monitored
gauges on /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import ensure_workspace_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.monitor.feedback import list_feedback
from slmops.serve.app import ServeConfig
from slmops.serve.monitoring import MonitorConfig
from slmops.serve.server import build_catalog, running_server
from slmops.store import Workspace
from slmops.store.schema import monitor_scores
from tests.serve.test_server import free_port

pytestmark = pytest.mark.model
KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("feedback")
    workspace = Workspace.open(root / "ws")
    corpora_for(workspace).ingest("docs", [bundled_docs()])
    ensure_workspace_stack("docs-rag", "rag", workspace)
    catalog = build_catalog(workspace, models=[], stacks=["docs-rag"], embedders=[])
    config = ServeConfig(
        api_keys=(KEY,),
        monitor=MonitorConfig(share=1.0, interval_s=0.5, window_s=3600, drift=False),
    )
    with running_server(
        catalog, Runtime.from_workspace(workspace), config, port=free_port()
    ) as url:
        answers = []
        for question in ("How do I version a prompt?", "Where are traces stored?"):
            response = httpx.post(
                url + "/v1/chat/completions",
                json={
                    "model": "stack:docs-rag",
                    "messages": [{"role": "user", "content": question}],
                },
                headers={**AUTH, "X-Request-Id": f"req-{len(answers)}"},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            answers.append(response)
        yield {"url": url, "workspace": workspace, "answers": answers}
    workspace.close()


def post(served: dict[str, Any], body: Any, *, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(served["url"] + "/v1/feedback", json=body, headers=headers, timeout=30)


def test_feedback_by_trace_id_and_by_request_id(served: dict[str, Any]) -> None:
    first, second = served["answers"]
    trace_id = first.headers["X-Slmops-Trace-Id"]
    stored = post(served, {"trace_id": trace_id, "score": 0, "comment": "wrong version"})
    assert stored.status_code == 201, stored.text
    assert stored.json()["stack"] == "docs-rag" and stored.json()["score"] == 0.0
    by_request = post(
        served, {"request_id": "req-1", "score": 5, "correction": "In the workspace database."}
    )
    assert by_request.status_code == 201, by_request.text
    assert by_request.json()["trace_id"] == second.headers["X-Slmops-Trace-Id"]
    assert by_request.json()["score"] == 1.0  # 5 stars
    rows = list_feedback(served["workspace"].engine, stack="docs-rag", kinds=["negative"])
    assert [r["comment"] for r in rows] == ["wrong version"]
    corrected = list_feedback(served["workspace"].engine, kinds=["corrected"])
    assert corrected[0]["correction"] == "In the workspace database."


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"trace_id": "abcdef1234", "score": 1}, 404, "no stored trace"),
        ({"request_id": "never-sent", "score": 1}, 404, "no stored trace"),
        ({"score": 1}, 400, "trace_id or request_id"),
        ({"trace_id": "zz-not-hex", "score": 1}, 400, "hexadecimal"),
        ({"trace_id": "abcdef1234", "score": 7}, 400, "outside 1-5"),
        ({"trace_id": "abcdef1234", "score": 4, "scale": "thumbs"}, 400, "outside 0-1"),
        ({"trace_id": "abcdef1234", "comment": "x" * 2001}, 400, "comment"),
        ({"trace_id": "abcdef1234", "labels": ["has space"]}, 400, "label"),
        ({"trace_id": "abcdef1234", "score": 1, "mood": "great"}, 400, "mood"),
        ({"trace_id": "abcdef1234"}, 400, "at least one of score"),
        ("not an object", 400, "invalid feedback"),
        ({"trace_id": "abcdef1234", "score": 1, "source": "reviewer"}, 400, "slmops review"),
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_stored(
    served: dict[str, Any], body: Any, status: int, needle: str
) -> None:
    before = len(list_feedback(served["workspace"].engine, limit=None))
    response = post(served, body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert len(list_feedback(served["workspace"].engine, limit=None)) == before


def test_feedback_needs_the_api_key_and_json(served: dict[str, Any]) -> None:
    assert post(served, {"request_id": "req-0", "score": 1}, key=None).status_code == 401
    response = httpx.post(
        served["url"] + "/v1/feedback", content=b"{nope", headers=AUTH, timeout=30
    )
    assert response.status_code == 400 and "not JSON" in response.json()["error"]["message"]


def test_answers_are_scored_online_and_monitored_on_metrics(served: dict[str, Any]) -> None:
    engine = served["workspace"].engine
    trace_ids = {a.headers["X-Slmops-Trace-Id"] for a in served["answers"]}
    deadline = time.monotonic() + 30
    metrics = ""
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            scored = {r[0] for r in connection.execute(select(monitor_scores.c.trace_id))}
        metrics = httpx.get(served["url"] + "/metrics", timeout=10).text
        if (
            scored >= trace_ids
            and 'slmops_monitor_figure{figure="requests",stack="docs-rag"} 2.0' in metrics
        ):
            break
        time.sleep(0.2)
    assert scored >= trace_ids  # share 1.0: every stack answer was scored off the request path
    with engine.connect() as connection:
        metric_names = {r[0] for r in connection.execute(select(monitor_scores.c.metric))}
    assert {"faithfulness", "refused", "answer_tokens", "retrieval_relevance"} <= metric_names
    assert 'slmops_monitor_figure{figure="requests",stack="docs-rag"} 2.0' in metrics
    assert 'slmops_monitor_traces_total{outcome="scored"}' in metrics
    assert 'slmops_alerts_firing{stack="docs-rag"} 0.0' in metrics
