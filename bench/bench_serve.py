"""Serving under load: slmops serve beside llama-cpp-python's OpenAI server and llama.cpp's
native server engine.

All serve the same GGUF (the shipped SmolLM2-135M) on loopback with the same thread count,
one server at a time (never two at once, so they do not share the CPU): slmops with its
default 4 engine slots and with 16, llama_cpp.server (one sequence at a time), and llama.cpp's
own server engine (xllamacpp's ``Server``, its HTTP listener) with 4 and 16 parallel slots,
a KV cache per slot as slmops has. For each: seconds from start to ready, resident memory
after the run. At 1, 4 and 16
concurrent clients, each client streams chat completions (64 new tokens at most,
temperature 0) from a fixed prompt list; the figures are requests/s, latency p50/p95, time to
first token p50/p95 and aggregate tokens/s. Every run is bounded in requests and seconds.

llama_cpp.server runs with ``--interrupt_requests false``: by default a new request cuts the
one being streamed short, which would make it look faster while dropping answers.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: llama_cpp.server's dependencies).
Run: python bench/bench_serve.py [--requests-per-client 3] [--only slmops-4,native-16]
     [--rounds 4 --levels 1,16]   # servers interleaved, ABBA, figures as medians over rounds
(variants: slmops-4, slmops-16, slmops-4-1thread, slmops-4-q8kv, slmops-16-f16kv, llama-cpp-py,
 native-4, native-16)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from slmops.models.loading import BUILTIN_CHAT_MODELS, _builtin

PROMPTS = [
    "Explain what a language model is.",
    "Write a short story about a robot learning to paint.",
    "List tips for writing clear documentation.",
    "Describe how photosynthesis works.",
]
LEVELS = (1, 4, 16)
THREADS = os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    tokens: int
    failed: bool = False  # the connection broke or the server refused: no tokens counted


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                tokens += 1  # both servers send one token per chunk
                if first is None:
                    first = time.perf_counter() - started
    return Sample(time.perf_counter() - started, first or float("nan"), tokens)


async def load(url: str, model: str, clients: int, per_client: int) -> tuple[float, list[Sample]]:
    async with httpx.AsyncClient(timeout=600) as client:

        async def worker(index: int) -> list[Sample]:
            samples = []
            for i in range(per_client):
                started = time.perf_counter()
                try:
                    prompt = PROMPTS[(index + i) % len(PROMPTS)]
                    samples.append(await one_request(client, url, model, prompt))
                except httpx.HTTPError:  # counted, not fatal: the run's other figures stand
                    samples.append(Sample(time.perf_counter() - started, math.nan, 0, True))
            return samples

        started = time.perf_counter()
        results = await asyncio.gather(*(worker(i) for i in range(clients)))
        return time.perf_counter() - started, [s for batch in results for s in batch]


def wait_ready(url: str, process: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready in 180 s")


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children (slmops serve runs in one process)."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


NATIVE = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
slots, port, threads = (int(a) for a in sys.argv[2:5])
p.n_parallel = slots
p.n_ctx = 2048 * slots  # as slmops (SLMOPS_LLAMA_CONTEXT)
p.kv_unified = False
p.port = port
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
p.verbosity = -1
p.n_threads_http = 64  # one per open stream: its default (about slots + 2) drops the rest
server = xllamacpp.Server(p)
while True:
    time.sleep(3600)
"""


def measure(
    name: str,
    command: list[str],
    port: int,
    model: str,
    ready: str,
    per_client: int,
    env: dict[str, str] | None = None,
    levels: tuple[int, ...] = LEVELS,
    embedder: str | None = None,
) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    figures: dict = {}
    try:
        wait_ready(url, process, ready)
        figures["ready_s"] = time.perf_counter() - started
        figures["rss_ready"] = resident_mb(process.pid)
        asyncio.run(load(url, model, 1, 1))  # warm up
        for clients in levels:
            wall, every = asyncio.run(load(url, model, clients, per_client))
            samples = [s for s in every if not s.failed] or every
            figures[clients] = {
                "rps": len(samples) / wall,
                "p50": statistics.median(s.latency_s for s in samples),
                "p95": sorted(s.latency_s for s in samples)[math.ceil(0.95 * len(samples)) - 1],
                "ttft": statistics.median(s.ttft_s for s in samples),
                "ttft95": sorted(s.ttft_s for s in samples)[math.ceil(0.95 * len(samples)) - 1],
                "tps": sum(s.tokens for s in samples) / wall,
                "n": len(samples),
                "failed": sum(s.failed for s in every),
            }
            print(f"  {name}: {clients} clients done", file=sys.stderr)
        figures["rss_after"] = resident_mb(process.pid)
        if embedder is not None:  # the embedder is loaded by its first request
            reply = httpx.post(
                f"{url}/v1/embeddings", json={"model": embedder, "input": ["a short text"]}
            )
            reply.raise_for_status()
            figures["rss_embedded"] = resident_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, interleaved (A B, B A, ...), and report "
        "medians and paired ratios: the host's speed drifts more over minutes than the gaps",
    )
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated")
    args = parser.parse_args()
    levels = tuple(int(level) for level in args.levels.split(","))
    gguf = str(_builtin(BUILTIN_CHAT_MODELS, "smollm2-135m", "chat model"))

    def slmops(slots: int, **settings: str) -> tuple:
        port = free_port()
        command = [sys.executable, "-m", "slmops.cli.main", "serve", "--port", str(port)]
        command += ["-m", f"gguf:{gguf}", "--max-queue", "64"]
        env = {"SLMOPS_LLAMA_SLOTS": str(slots), **settings}
        return command, port, f"gguf:{gguf}", "/readyz", env

    def native(slots: int) -> tuple:
        port = free_port()
        command = [sys.executable, "-c", NATIVE, gguf, str(slots), str(port), str(THREADS)]
        return command, port, "smollm2", "/health", None

    def llama_cpp_python() -> tuple:
        port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port)]
        command += ["--n_ctx", "4096", "--n_threads", str(THREADS)]
        command += ["--n_threads_batch", str(THREADS), "--interrupt_requests", "false"]
        return command, port, "smollm2", "/v1/models", None

    variants = {
        "slmops-4": lambda: slmops(4),
        "slmops-16": lambda: slmops(16),
        # one engine thread fewer (serve --threads 1), the 8-bit KV cache, and the f16 value
        # cache in 512-token tiles (the fast KV layout whose answers depend on batching):
        # not defaults
        "slmops-4-1thread": lambda: slmops(4, SLMOPS_LLAMA_THREADS="1"),
        "slmops-4-q8kv": lambda: slmops(4, SLMOPS_LLAMA_KV_TYPE="q8_0"),
        "slmops-16-f16kv": lambda: slmops(16, SLMOPS_LLAMA_KV_TYPE="f16/f16"),
        "llama-cpp-py": llama_cpp_python,
        "native-4": lambda: native(4),
        "native-16": lambda: native(16),
    }
    chosen = [v for v in args.only.split(",") if v] or list(variants)
    # `slmops serve` as a user starts it: the shipped chat model and embedder, then one
    # request; ready time and memory only (its load figures are slmops-4's)
    port = free_port()
    command = [sys.executable, "-m", "slmops.cli.main", "serve", "--port", str(port)]
    defaults = measure(
        "slmops serve", command, port, "local:smollm2-135m", "/readyz", 1, None, (),
        embedder="local:all-minilm-l6-v2",
    )  # fmt: skip
    print(
        f"  slmops serve with the shipped defaults: ready in {defaults['ready_s']:.1f} s, "
        f"{defaults['rss_ready']:.0f} MB resident, {defaults['rss_after']:.0f} MB after a chat "
        f"request, {defaults['rss_embedded']:.0f} MB after an embeddings request"
        " (targets < 3 s, < 350 MB)"
    )
    rounds: list[dict[str, dict]] = []
    for index in range(max(args.rounds, 1)):
        this_round: dict[str, dict] = {}
        for name in chosen if index % 2 == 0 else chosen[::-1]:
            command, port, model, ready, env = variants[name]()
            try:
                this_round[name] = measure(
                    name, command, port, model, ready, args.requests_per_client, env, levels
                )
            except Exception as exc:  # one server that fails does not lose the others' figures
                print(f"  {name}: {exc}", file=sys.stderr)
        rounds.append(this_round)
    results = {
        name: _median_figures([r[name] for r in rounds if name in r])
        for name in chosen
        if any(name in r for r in rounds)
    }
    print(
        f"\nStreaming chat, 64 new tokens at most, {args.requests_per_client} requests per client"
        + (f"; medians of {len(rounds)} interleaved rounds" if len(rounds) > 1 else "")
    )
    header = f"  {'clients':<8}{'':<17}{'req/s':>7}{'p50 s':>7}{'p95 s':>7}"
    print(header + f"{'TTFT p50':>9}{'TTFT p95':>9}{'tok/s':>8}")
    for clients in levels:
        for name, figures in results.items():
            if clients not in figures:
                continue
            f = figures[clients]
            failed = f"  ({f['failed']} requests failed)" if f["failed"] else ""
            print(
                f"  {clients:<8}{name:<17}{f['rps']:>7.2f}{f['p50']:>7.2f}{f['p95']:>7.2f}"
                f"{f['ttft']:>9.2f}{f['ttft95']:>9.2f}{f['tps']:>8.1f}{failed}"
            )
    print(f"\n  {'server':<18}{'ready s':>8}{'RSS ready MB':>14}{'RSS after MB':>14}")
    for name, figures in results.items():
        print(
            f"  {name:<18}{figures['ready_s']:>8.1f}{figures['rss_ready']:>14.0f}"
            f"{figures['rss_after']:>14.0f}"
        )
    if 16 not in levels:
        return
    for ours in ("slmops-4", "slmops-16"):
        if ours not in results:
            continue
        at16 = results[ours][16]["tps"]
        if 1 in levels:
            alone = results[ours][1]["tps"]
            print(
                f"\n  {ours}: 16 clients / 1 client aggregate tokens/s: {at16 / alone:.2f} (>= 1.6)"
            )
        for native_name in ("native-4", "native-16"):
            # each round's pair ran minutes apart at most: their ratio drifts less than either
            paired = [
                r[ours][16]["tps"] / r[native_name][16]["tps"]
                for r in rounds
                if ours in r and native_name in r and r[native_name][16]["tps"] > 0
            ]
            if paired:
                each = ", ".join(f"{ratio:.2f}" for ratio in paired)
                print(
                    f"  {ours} / {native_name} at 16 clients: {statistics.median(paired):.2f} "
                    f"(target >= 0.95; by round: {each})"
                )


def _median_figures(runs: list[dict]) -> dict:
    """One variant's figures over rounds: the median of each, failures summed."""
    merged: dict = {}
    for key, first in runs[0].items():
        if isinstance(first, dict):
            merged[key] = {
                field: (
                    sum(run[key][field] for run in runs)
                    if field == "failed"
                    else statistics.median(run[key][field] for run in runs)
                )
                for field in first
            }
        else:
            merged[key] = statistics.median(run[key] for run in runs)
    return merged


if __name__ == "__main__":
    main()
