"""Scale-out figures: the Ray executor against the local one, in one run.

1. ingest of a generated corpus (--docs x --paragraphs chunks): chunks/s locally, and with the
   embedding spread over 1 and 2 Ray actors (the cluster's CPUs);
2. eval of --cases questions on the bundled handbook with an extractive rag stack: cases/s
   locally (concurrency 1) and on 1 and 2 Ray actors;
3. the store's write rates that bound a bigger cluster: eval results recorded per second
   (one transaction each, as workers write them) and one corpus commit.

It needs a running cluster (`ray start --head ...; ray start --address ...`, as .ci/run does)
at --address (default $SLMOPS_RAY_ADDRESS). On one 2-core machine "two workers" share the
cores with the driver, so the figures bound what two machines would do from below.

Run: python bench/bench_ray.py --address ray://127.0.0.1:10001 [--docs 40] [--cases 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")
sys.path.insert(0, str(Path(__file__).parent))

from bench_data import vocabulary, write_corpus
from slmops.apps.build import build_stack
from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import init_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.runner import EvalRun, build_metrics
from slmops.models import load_embedder
from slmops.pipelines.ray_executor import RayEmbedding, connect, run_eval_cases
from slmops.store import Workspace

METRICS = ["contains_answer", "hit_rate"]
TOPICS = ["prompt", "workspace", "trace", "stack", "corpus", "chain", "ingest", "version"]


def row(label: str, *values: str) -> None:
    print(f"  {label:<44}" + "".join(f"{v:>16}" for v in values))


def bench_ingest(ws: Workspace, folder: Path, address: str) -> None:
    print("\n1. ingest (load, chunk, embed, index, commit)")
    row("", "chunks", "seconds", "chunks/s", "vs local")
    corpora = corpora_for(ws)
    load_embedder(ws.settings.embedder)  # loaded before timing, as a warm process would have
    started = time.perf_counter()
    local = corpora.ingest("local", [folder])
    base = time.perf_counter() - started
    row(
        "local (this process)",
        str(local.chunks),
        f"{base:.1f}",
        f"{local.chunks / base:.1f}",
        "1.00x",
    )
    for actors in (1, 2):
        with RayEmbedding(ws.settings.embedder, address=address, actors=actors) as spread:
            list(spread([["warm up"]] * actors))  # each actor has loaded its model
            started = time.perf_counter()
            report = corpora.ingest(f"ray{actors}", [folder], embed_batches=spread)
            took = time.perf_counter() - started
        row(
            f"ray, {actors} actor(s)",
            str(report.chunks),
            f"{took:.1f}",
            f"{report.chunks / took:.1f}",
            f"{base / took:.2f}x",
        )


def bench_eval(ws: Workspace, stacks: Path, address: str, n: int) -> None:
    print("\n2. eval (extractive rag stack on the bundled handbook)")
    row("", "cases", "seconds", "cases/s", "vs local")
    corpora_for(ws).ingest("docs", [bundled_docs()])
    init_stack("hb", "rag", ws, directory=stacks, corpus="docs")
    cases = [
        EvalCase(
            id=f"q{i}",
            input=f"What does slmops do with a {TOPICS[i % 8]} ({i})?",
            reference=TOPICS[i % 8],
        )
        for i in range(n)
    ]
    Datasets(ws).add("qa", cases)
    runner = EvalRun(
        ws, build_stack(stacks / "hb", ws), build_metrics(METRICS, ws.settings.embedder)
    )
    warm = runner.start("qa", 1)  # models loaded before timing
    asyncio.run(runner.execute(warm, cases[:1], Runtime.from_workspace(ws)))
    run_id = runner.start("qa", 1)
    started = time.perf_counter()
    asyncio.run(runner.execute(run_id, cases, Runtime.from_workspace(ws), concurrency=1))
    base = time.perf_counter() - started
    row("local (concurrency 1)", str(n), f"{base:.1f}", f"{n / base:.2f}", "1.00x")
    for actors in (1, 2):
        warmup = runner.start("qa", 1)  # the actors' stack and models load outside the timing
        run_eval_cases(
            home=str(ws.home),
            stack=str(runner.stack.manifest.path),
            models={},
            metrics=METRICS,
            run_id=warmup,
            cases=cases[:actors],
            address=address,
            actors=actors,
        )
        run_id = runner.start("qa", 1)
        started = time.perf_counter()
        run_eval_cases(
            home=str(ws.home),
            stack=str(runner.stack.manifest.path),
            models={},
            metrics=METRICS,
            run_id=run_id,
            cases=cases,
            address=address,
            actors=actors,
        )
        took = time.perf_counter() - started
        runner.finish(run_id)
        row(
            f"ray, {actors} actor(s) (incl. actor start)",
            str(n),
            f"{took:.1f}",
            f"{n / took:.2f}",
            f"{base / took:.2f}x",
        )


def bench_store(ws: Workspace, stacks: Path) -> None:
    print("\n3. store write rates (what a larger cluster waits on)")
    from slmops.eval.metrics import CaseResult

    runner = EvalRun(ws, build_stack(stacks / "hb", ws), [])
    run_id = runner.start("qa", 1)
    result = CaseResult(question="q", answer="a", latency_ms=1.0)
    n = 300
    started = time.perf_counter()
    for i in range(n):
        runner._record(run_id, f"c{i}", None, result, {"contains_answer": 1.0})
    took = time.perf_counter() - started
    row(f"eval results, one transaction each ({ws.engine.dialect.name})", f"{n / took:.0f}/s")
    folder = Path(tempfile.mkdtemp())
    (folder / "one.md").write_text("# One\n\nA single short document.\n")
    started = time.perf_counter()
    corpora_for(ws).ingest("tiny", [folder])
    row(
        "one corpus version (1 chunk; lock, write, commit)",
        f"{time.perf_counter() - started:.2f} s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("SLMOPS_RAY_ADDRESS"))
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--paragraphs", type=int, default=20)
    parser.add_argument("--cases", type=int, default=24)
    args = parser.parse_args()
    if not args.address:
        sys.exit("give --address ray://HOST:10001 (a running cluster) or set SLMOPS_RAY_ADDRESS")
    ray = connect(args.address)
    print(
        f"cluster: {ray.cluster_resources().get('CPU', 0):.0f} CPUs; this machine: "
        f"{os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with Workspace.open(root / "ws") as ws:
            corpus = root / "corpus"
            corpus.mkdir()
            write_corpus(corpus, args.docs, args.paragraphs, vocabulary(), random.Random(0))
            bench_ingest(ws, corpus, args.address)
            (root / "stacks").mkdir()
            bench_eval(ws, root / "stacks", args.address, args.cases)
            bench_store(ws, root / "stacks")


if __name__ == "__main__":
    main()
