"""Page load time of the web console on a workspace of 10,000 stored traces.

A workspace gets ``--traces`` synthetic traces shaped like a served rag stack's (root,
retrieval, model call, cite; three stacks over the last ``--days`` days, 10% failed, some
rated), written in bulk. The console is served by uvicorn on a loopback port and each page
is fetched ``--requests`` times (one client, HTTP GET to the full body) after a warm-up;
printed: p50/p95/max per page and the page size.

Target (console issue): the trace list and a trace page load fast on 10,000 traces; aim for
p50 < 200 ms.

Run: ``python bench/bench_ui.py [--traces 10000] [--requests 50]``
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from sqlalchemy import insert

from slmops.monitor.feedback import record_feedback
from slmops.store import Workspace
from slmops.store.schema import spans, traces
from slmops.ui.server import running_console

STACKS = ("handbook-rag", "support-rag", "docs-chat")


def _trace_rows(
    number: int, now: float, days: float, rng: random.Random
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    stack = STACKS[number % len(STACKS)]
    trace_id = uuid.uuid4().hex
    started = now - rng.random() * days * 86400
    duration_ms = rng.lognormvariate(6.8, 0.5)
    status = "error" if rng.random() < 0.1 else "ok"
    start_ns = int(started * 1e9)
    length = int(duration_ms * 1e6)
    question = f"How do I do task {number} with slmops?"
    answer = f"Run the command for task {number}; see the handbook."
    ids = [uuid.uuid4().hex[:16] for _ in range(4)]

    def span(
        index: int,
        parent: str | None,
        name: str,
        kind: str,
        begin: float,
        end: float,
        attributes: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "span_id": ids[index],
            "trace_id": trace_id,
            "parent_id": parent,
            "name": name,
            "kind": kind,
            "status": status if parent is None else "ok",
            "start_ns": start_ns + int(length * begin),
            "end_ns": start_ns + int(length * end),
            "error": None,
            "attributes": attributes,
            "events": [],
        }

    output = {
        "question": question,
        "answer": answer,
        "refused": False,
        "relevance": 0.7,
        "support": 0.8,
    }
    rows = [
        span(
            0,
            None,
            stack,
            "stack",
            0.0,
            1.0,
            {
                "slmops.stack.name": stack,
                "slmops.stack.corpora": json.dumps({"docs": "docs@3"}),
                "slmops.stack.prompts": json.dumps({"answer": f"{stack}-answer@2"}),
                "slmops.stack.models": json.dumps({"chat": "local:smollm2-135m"}),
                "slmops.input": json.dumps({"question": question}),
                "slmops.output": json.dumps(output),
            },
        ),
        span(
            1,
            ids[0],
            "retrieve",
            "retrieval",
            0.01,
            0.08,
            {
                "slmops.retrieval.corpus": "docs",
                "slmops.retrieval.version": 3,
                "slmops.retrieval.chunk_ids": [f"chunk-{number % 97}", f"chunk-{number % 89}"],
                "slmops.retrieval.sources": ["handbook.md, lines 3-9", "prompts.md, lines 1-4"],
            },
        ),
        span(
            2,
            ids[0],
            "answer",
            "llm",
            0.1,
            0.93,
            {
                "gen_ai.prompt": json.dumps(
                    [{"role": "user", "content": f"Passages...\\nQuestion: {question}"}]
                ),
                "slmops.output": json.dumps(answer),
                "gen_ai.usage.input_tokens": rng.randint(300, 600),
                "gen_ai.usage.output_tokens": rng.randint(10, 80),
                "gen_ai.response.model": "local:smollm2-135m",
            },
        ),
        span(
            3,
            ids[0],
            "cite",
            "cite",
            0.94,
            0.995,
            {
                "slmops.cite.relevance": round(rng.random(), 3),
                "slmops.cite.support": round(rng.random(), 3),
                "slmops.cite.refused": rng.random() < 0.1,
            },
        ),
    ]
    trace = {
        "trace_id": trace_id,
        "name": stack,
        "status": status,
        "started_at": started,
        "duration_ms": duration_ms,
        "span_count": len(rows),
        "error": "boom" if status == "error" else None,
        "attributes": {"slmops.stack.name": stack, "slmops.request_id": f"req-{trace_id[:12]}"},
    }
    return trace, rows


def build_workspace(home: Path, count: int, days: float) -> tuple[Workspace, str]:
    workspace = Workspace.open(home)
    rng = random.Random(0)
    now = time.time()
    trace_rows, span_rows = [], []
    for number in range(count):
        trace, rows = _trace_rows(number, now, days, rng)
        trace_rows.append(trace)
        span_rows += rows
    with workspace.engine.begin() as connection:  # one transaction: seconds, not minutes
        connection.execute(insert(traces), trace_rows)
        connection.execute(insert(spans), span_rows)
    for trace in trace_rows[:: max(1, count // 200)]:  # about 200 ratings
        record_feedback(
            workspace.engine, {"trace_id": trace["trace_id"], "score": rng.randint(0, 1)}
        )
    newest = max(trace_rows, key=lambda t: t["started_at"])
    return workspace, str(newest["trace_id"])


def measure(client: httpx.Client, url: str, requests: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: templates compiled, caches filled
        client.get(url).raise_for_status()
    times, size = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(body)
    times.sort()
    return {
        "p50": median(times),
        "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "max": times[-1],
        "kb": size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--days", type=float, default=7.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        workspace, newest = build_workspace(Path(folder) / "ws", args.traces, args.days)
        print(
            f"workspace: {args.traces} traces, {args.traces * 4} spans written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        pages = {
            "/traces": "/traces",
            "/traces?status=error": "/traces?status=error",
            "/traces?feedback=negative": "/traces?feedback=negative",
            "/traces?model=smollm2&min_ms=2000": "/traces?model=smollm2&min_ms=2000",
            "/traces/{id}": f"/traces/{newest}",
            "/monitor/{stack} (1h x 24h)": f"/monitor/{STACKS[0]}",
            "/monitor": "/monitor",
            "/": "/",
        }
        with running_console(workspace) as url, httpx.Client(base_url=url, timeout=60) as client:
            print(f"{'page':38} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'KiB':>6}")
            for label, path in pages.items():
                result = measure(client, path, args.requests)
                print(
                    f"{label:38} {result['p50']:8.1f} {result['p95']:8.1f} "
                    f"{result['max']:8.1f} {result['kb']:6.0f}"
                )
        workspace.close()


if __name__ == "__main__":
    main()
