"""What monitoring costs a served stack, and how fast the background scorer scores.

1. Request path: the quickstart's rag stack on the shipped SmolLM2-135M is served twice in
   this process (one server without the monitor, one with online scoring of ``--share`` of
   answers and figure/drift/alert refreshes every ``--interval`` seconds). One client sends
   the same questions to each, alternating (``--block`` requests at a time) so slow drift of
   the machine falls on both; printed: p50/p95 latency of each, the added p50 and the
   median paired difference with its bootstrap interval, and
   the time one ``offer()`` (the only monitor code on the request path) takes.
2. Background scorer: ``--traces`` stored traces of the stack scored by an OnlineScorer with
   the embedder-backed faithfulness (traces/s), and one figures + drift refresh (ms).

Target (monitoring issue): < 2% added p50 latency at 10% sampling.

Run: ``python bench/bench_monitor.py [--requests 60] [--block 1] [--share 0.1]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx
import numpy as np

from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import ensure_workspace_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.models.loading import load_embedder
from slmops.monitor.online import OnlineScorer
from slmops.serve.app import ServeConfig
from slmops.serve.metrics import ServerMetrics
from slmops.serve.monitoring import MonitorConfig, ServerMonitor
from slmops.serve.server import build_catalog, running_server
from slmops.store import Workspace
from slmops.store.traces import list_traces

QUESTIONS = [
    "How do I version a prompt?",
    "Where are traces stored?",
    "How do I serve a stack?",
    "What does slmops eval compare do?",
    "How do I ingest documents into a corpus?",
    "Which command lists corpus versions?",
    "How are API keys given to the server?",
    "What is a stack lock?",
    "How do I run the tests?",
    "What does the cite step check?",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ask(url: str, question: str) -> float:
    started = time.perf_counter()
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "stack:docs-rag", "messages": [{"role": "user", "content": question}]},
        timeout=300,
    )
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def request_path(workspace: Workspace, args: argparse.Namespace) -> None:
    catalog = build_catalog(workspace, models=[], stacks=["docs-rag"], embedders=[])
    runtime = Runtime.from_workspace(workspace)
    plain = ServeConfig(monitor=None)
    monitored = ServeConfig(
        monitor=MonitorConfig(share=args.share, interval_s=args.interval, window_s=3600)
    )
    latencies: dict[str, list[float]] = {"without monitor": [], "with monitor": []}
    with (
        running_server(catalog, runtime, plain, port=free_port()) as plain_url,
        running_server(catalog, runtime, monitored, port=free_port()) as monitored_url,
    ):
        ask(plain_url, QUESTIONS[0])  # warm the model, the embedder and the caches
        ask(monitored_url, QUESTIONS[0])
        sent = 0
        while sent < args.requests:
            for name, url in (("without monitor", plain_url), ("with monitor", monitored_url)):
                for i in range(args.block):
                    question = QUESTIONS[(sent + i) % len(QUESTIONS)]
                    latencies[name].append(ask(url, question))
            sent += args.block
            if sent % 10 == 0:
                print(f"  {sent}/{args.requests} requests per server", flush=True)
    base = median(latencies["without monitor"])
    # Paired: the same question, one right after the other, on each server; the median of
    # the differences is what the monitor adds, with the machine's slow drift cancelled.
    pairs = np.subtract(latencies["with monitor"], latencies["without monitor"])
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(pairs, len(pairs))) for _ in range(2000)]
    low, high = np.percentile(boot, [2.5, 97.5])
    print(
        f"\nrequest path ({args.requests} requests each, blocks of {args.block}, "
        f"sampling {args.share:.0%}, refresh every {args.interval:g} s)"
    )
    print(f"{'':18}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in latencies.items():
        print(f"{name:18}{median(values):10.0f}{percentile(values, 95):10.0f}")
    added = (median(latencies["with monitor"]) - base) / base * 100
    print(f"added p50: {added:+.1f}% (target < 2%)")
    print(
        f"median paired difference: {np.median(pairs):+.0f} ms = "
        f"{np.median(pairs) / base * 100:+.1f}% of p50, 95% interval "
        f"[{low / base * 100:+.1f}%, {high / base * 100:+.1f}%]"
    )
    scorer = OnlineScorer(workspace, share=args.share, max_queue=1_000_000)
    rounds = 100_000
    started = time.perf_counter()
    for i in range(rounds):
        scorer.offer(f"{i:032x}")
    print(f"offer() on the request path: {(time.perf_counter() - started) / rounds * 1e6:.2f} us")


def background(workspace: Workspace, args: argparse.Namespace) -> None:
    runtime = Runtime.from_workspace(workspace)
    embed = load_embedder(workspace.settings.embedder).embed
    stack = build_catalog(workspace, models=[], stacks=["docs-rag"], embedders=[]).stacks[
        "stack:docs-rag"
    ]
    from slmops.core.runtime import use_runtime

    stored = len(
        [t for t in list_traces(workspace.engine, limit=100_000) if t["name"] == "docs-rag"]
    )
    with use_runtime(runtime):
        for i in range(max(0, args.traces - stored)):
            stack.run(QUESTIONS[i % len(QUESTIONS)] + f" ({i})")
    ids = [
        t["trace_id"]
        for t in list_traces(workspace.engine, limit=100_000)
        if t["name"] == "docs-rag" and t["status"] == "ok"
    ][: args.traces]
    scorer = OnlineScorer(workspace, share=1.0, embed=embed, max_queue=len(ids) + 1)
    scorer.start()
    started = time.perf_counter()
    for trace_id in ids:
        scorer.offer(trace_id)
    scorer.drain(timeout_s=600)
    seconds = time.perf_counter() - started
    scorer.stop()
    print(
        f"\nbackground scorer: {scorer.scored} traces in {seconds:.1f} s = "
        f"{scorer.scored / seconds:.1f} traces/s ({scorer.failed} failed)"
    )
    # Two windows that split the stored traffic in halves, so drift has both to compare.
    times = sorted(t["started_at"] for t in list_traces(workspace.engine, limit=100_000))
    now = times[-1] + 0.001
    window = (now - times[0]) / 2 + 0.001
    config = MonitorConfig(window_s=window, drift_interval_s=0)
    monitor = ServerMonitor(workspace, ["docs-rag"], ServerMetrics(), config, embed=embed)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        monitor.refresh(now=now)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"one refresh (figures, drift on both windows, alert rules): {median(timings):.0f} ms "
        f"median of 3, over {len(times)} traces"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--block", type=int, default=1)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--traces", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="Keep the bench workspace.")
    parser.add_argument(
        "--parts", nargs="+", default=["request", "background"], choices=["request", "background"]
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="slmops-bench-monitor-"))
    try:
        workspace = Workspace.open(root / "ws")
        corpora_for(workspace).ingest("docs", [bundled_docs()])
        ensure_workspace_stack("docs-rag", "rag", workspace, answer="generative")
        if "request" in args.parts:
            request_path(workspace, args)
        if "background" in args.parts:
            background(workspace, args)
        workspace.close()
    finally:
        if args.keep:
            print(f"workspace kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
