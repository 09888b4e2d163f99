"""Serving under load: slmops serve beside llama-cpp-python's own OpenAI server.

Both serve the same GGUF (the shipped SmolLM2-135M) on loopback with the same thread count,
one server at a time (never both at once, so they do not share the CPU). At 1, 4 and 16
concurrent clients, each client streams chat completions (64 new tokens at most,
temperature 0) from a fixed prompt list; the figures are requests/s, latency p50/p95, time to
first token p50 and aggregate tokens/s. Every run is bounded in requests and seconds.

llama_cpp.server runs with ``--interrupt_requests false``: by default a new request cuts the
one being streamed short, which would make it look faster while dropping answers.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: llama_cpp.server's dependencies).
Run: python bench/bench_serve.py [--requests-per-client 3]
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
            return [
                await one_request(client, url, model, PROMPTS[(index + i) % len(PROMPTS)])
                for i in range(per_client)
            ]

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


def measure(
    name: str, command: list[str], port: int, model: str, ready: str, per_client: int
) -> dict:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    figures = {}
    try:
        wait_ready(url, process, ready)
        asyncio.run(load(url, model, 1, 1))  # warm up
        for clients in LEVELS:
            wall, samples = asyncio.run(load(url, model, clients, per_client))
            figures[clients] = {
                "rps": len(samples) / wall,
                "p50": statistics.median(s.latency_s for s in samples),
                "p95": sorted(s.latency_s for s in samples)[math.ceil(0.95 * len(samples)) - 1],
                "ttft": statistics.median(s.ttft_s for s in samples),
                "tps": sum(s.tokens for s in samples) / wall,
                "n": len(samples),
            }
            print(f"  {name}: {clients} clients done", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-client", type=int, default=3)
    args = parser.parse_args()
    gguf = str(_builtin(BUILTIN_CHAT_MODELS, "smollm2-135m", "chat model"))
    ours_port, theirs_port = free_port(), free_port()
    ours = measure(
        "slmops",
        [
            sys.executable,
            "-m",
            "slmops.cli.main",
            "serve",
            "--port",
            str(ours_port),
            "-m",
            f"gguf:{gguf}",
            "--max-queue",
            "64",
        ],
        ours_port,
        f"gguf:{gguf}",
        "/readyz",
        args.requests_per_client,
    )
    theirs = measure(
        "llama_cpp.server",
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--port",
            str(theirs_port),
            "--n_ctx",
            "4096",
            "--n_threads",
            str(THREADS),
            "--n_threads_batch",
            str(THREADS),
            "--interrupt_requests",
            "false",
        ],
        theirs_port,
        "smollm2",
        "/v1/models",
        args.requests_per_client,
    )
    print(
        f"\nStreaming chat, 64 new tokens at most, {args.requests_per_client} requests per client"
    )
    print(f"  {'clients':<8}{'':<10}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'TTFT s':>8}{'tok/s':>8}")
    for clients in LEVELS:
        for name, figures in (("slmops", ours), ("llama-cpp", theirs)):
            f = figures[clients]
            print(
                f"  {clients:<8}{name:<10}{f['rps']:>8.2f}{f['p50']:>8.2f}{f['p95']:>8.2f}"
                f"{f['ttft']:>8.2f}{f['tps']:>8.1f}"
            )
    ratio = ours[16]["tps"] / theirs[16]["tps"]
    print(f"\n  aggregate tokens/s at 16 clients, slmops / llama-cpp: {ratio:.2f} (target >= 1.00)")


if __name__ == "__main__":
    main()
