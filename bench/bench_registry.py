"""An alias switch under load: does any request fail, and how much later do answers come?

The shipped SmolLM2-135M is registered twice (versions 1 and 2: two copies of the weights, so
the switch really loads another file) and ``slmops serve -m registry:bench@champion`` runs
in-process on loopback. Four clients stream chat completions (64 new tokens at most) without
pause; after ``--before`` seconds the alias moves from version 1 to version 2 (as ``model
promote`` or MLflow's own client would move it), and the clients go on for ``--after``
seconds. Printed: requests and failures, the time from the move to the first answer of
version 2, and request latency before, across and after the switch (the longest added
latency: the slowest request that overlapped the switch, beside the p95 before it).

Run: ``python bench/bench_registry.py [--clients 4] [--before 15] [--after 15]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import httpx

from slmops.core.runtime import Runtime
from slmops.registry.registration import register_uri
from slmops.registry.store import ModelRegistry
from slmops.serve.app import ServeConfig
from slmops.serve.server import build_catalog, running_server
from slmops.store import Workspace

ALIAS = "registry:bench@champion"


@dataclass
class Request:
    started: float
    ended: float
    version: str
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stream_once(url: str, index: int) -> Request:
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": f"Tell me a short story about number {index}."}],
        "max_tokens": 64,
        "stream": True,
    }
    started = time.perf_counter()
    version, error = "", None
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}"
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        error = event["error"]["message"]
                    version = (event.get("slmops") or {}).get("model_version", version)
    except httpx.HTTPError as exc:
        error = repr(exc)
    return Request(started, time.perf_counter(), version, error)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--before", type=float, default=15.0)
    parser.add_argument("--after", type=float, default=15.0)
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="slmops-bench-registry-"))
    try:
        ws = Workspace.open(home)
        registry = ModelRegistry(ws)
        register_uri(registry, name="bench", uri="local:smollm2-135m")
        register_uri(registry, name="bench", uri="local:smollm2-135m")
        registry.set_alias(name="bench", alias="champion", version=1)
        catalog = build_catalog(ws, models=[ALIAS], stacks=[], embedders=[], poll_s=1.0)
        done: list[Request] = []
        stop = threading.Event()
        with running_server(
            catalog, Runtime.from_workspace(ws), ServeConfig(max_queue=64), port=free_port()
        ) as url:

            def client(number: int) -> None:
                count = 0
                while not stop.is_set():
                    done.append(stream_once(url, number * 1000 + count))
                    count += 1

            threads = [threading.Thread(target=client, args=(n,)) for n in range(options.clients)]
            for thread in threads:
                thread.start()
            time.sleep(options.before)
            moved_at = time.perf_counter()
            registry.set_alias(name="bench", alias="champion", version=2)
            time.sleep(options.after)
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    failed = [r for r in done if r.error or not r.version]
    before = [r.seconds for r in done if r.ended < moved_at]
    across = [
        r for r in done if r.started < moved_at + 2 < r.ended or r.started <= moved_at <= r.ended
    ]
    after_first_v2 = min((r.ended for r in done if r.version.endswith("@2")), default=None)
    after = [r.seconds for r in done if after_first_v2 and r.started > after_first_v2]
    stragglers = [
        r
        for r in done
        if after_first_v2 and r.started > after_first_v2 and r.version.endswith("@1")
    ]
    print(f"\n== alias switch under {options.clients} streaming clients (64 new tokens at most)")
    print("| figure | value |")
    print("| --- | --- |")
    print(
        f"| requests | {len(done)} ({sum(r.version.endswith('@1') for r in done)} by version 1, "
        f"{sum(r.version.endswith('@2') for r in done)} by version 2) |"
    )
    print(f"| failed requests | {len(failed)} (target 0) |")
    if after_first_v2 is not None:
        print(
            f"| move -> first answer by version 2 | {after_first_v2 - moved_at:.2f} s "
            "(the watcher checks every 1 s; an answer ends a whole generation later) |"
        )
    late = len(stragglers)
    print(f"| requests started after version 2 first answered, answered by version 1 | {late} |")
    print(f"| latency before the switch, p50 / p95 | {median(before):.2f} / {p95(before):.2f} s |")
    if across:
        slowest = max(r.seconds for r in across)
        print(
            f"| slowest request overlapping the switch | {slowest:.2f} s "
            f"({slowest - p95(before):+.2f} s against the p95 before) |"
        )
    if after:
        print(f"| latency after the switch, p50 / p95 | {median(after):.2f} / {p95(after):.2f} s |")
    for r in failed[:5]:
        print(f"failure: {r.error}")


if __name__ == "__main__":
    main()
