"""App stack figures: end-to-end RAG latency on the shipped defaults, beside its baseline.

The rag template's stack (retrieve k=4 hybrid -> answer with SmolLM2-135M, 64 new tokens at
most -> cite) runs over the bundled handbook. Each question is measured as:

- slmops stack: ``Stack.invoke`` (validation, tracing into SQLite, retrieval, generation,
  citation check) and, streamed, the time to the first token;
- baseline: the same work by hand with no slmops step around it: ``Corpora.search`` and the
  model's ``chat`` on the identical rendered prompt (no tracing, no citation check).

Run: python bench/bench_stacks.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from slmops.apps.build import build_stack
from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import init_stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.data.corpus import corpora_for
from slmops.models.loading import load_chat_model
from slmops.store import Workspace
from slmops.store.traces import get_trace

QUESTIONS = [
    "How do I version a prompt?",
    "How does slmops trace a run?",
    "What does a Decision step do?",
    "Which embedding model does slmops ship?",
    "How do I search a corpus?",
    "What happens when an ingest is killed?",
    "How are chunks made from documents?",
    "Where does slmops keep its workspace?",
]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def row(label: str, *values: str) -> None:
    print(f"  {label:<34}" + "".join(f"{v:>16}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Workspace.open(Path(tmp) / "ws") as ws:
        corpora = corpora_for(ws)
        corpora.ingest("handbook", [bundled_docs()])
        init_stack(  # generative: the figures below time the model
            "bench-rag", "rag", ws, directory=Path(tmp), corpus="handbook", answer="generative"
        )
        manifest = Path(tmp) / "bench-rag" / "slmops.toml"
        text = manifest.read_text().replace("max_tokens = 128", "max_tokens = 64")
        manifest.write_text(text.replace('stop = ["\\n\\n"]', "stop = []"))
        stack = build_stack(manifest, ws)
        runtime = Runtime.from_workspace(ws)
        answer_step = next(node.step for node in stack.nodes if node.name == "answer")
        model = load_chat_model("local:smollm2-135m")

        ours: list[float] = []
        ttft: list[float] = []
        per_token: list[float] = []
        tokens: list[int] = []
        parts: dict[str, list[float]] = {"retrieve": [], "answer": [], "cite": []}
        base: list[float] = []
        base_search: list[float] = []
        with use_runtime(runtime):
            stack.invoke(QUESTIONS[0])  # warm: model, embedder, vector index
            for _ in range(args.rounds):
                for question in QUESTIONS:
                    result = stack.invoke(question)
                    ours.append(result.duration_ms)
                    _, spans = get_trace(ws.engine, result.trace_id)
                    by_name = {span["name"]: span for span in spans}
                    for name in parts:
                        span = by_name[name]
                        parts[name].append((span["end_ns"] - span["start_ns"]) / 1e6)
                    tokens.append(by_name["answer"]["attributes"]["gen_ai.usage.output_tokens"])
                    first, between = asyncio.run(_stream_timing(stack, question))
                    ttft.append(first)
                    per_token.append(between)

                    started = time.perf_counter()
                    _, hits = corpora.search("handbook@1", question, k=4, mode="hybrid")
                    searched = time.perf_counter()
                    passages = [hit.model_dump() for hit in hits]
                    messages = answer_step.render({"question": question, "passages": passages})
                    model.chat(messages, answer_step.params)
                    base.append((time.perf_counter() - started) * 1000)
                    base_search.append((searched - started) * 1000)

        runs = len(ours)
        print(f"\nRAG stack on the shipped defaults: {runs} questions ({args.rounds} rounds)")
        print(f"  generation: at most 64 new tokens; mean {statistics.mean(tokens):.1f} generated")
        row("", "slmops p50", "slmops p95", "baseline p50", "baseline p95")
        row(
            "end to end (ms)",
            f"{p50(ours):.0f}",
            f"{p95(ours):.0f}",
            f"{p50(base):.0f}",
            f"{p95(base):.0f}",
        )
        row(
            "  retrieve (ms)",
            f"{p50(parts['retrieve']):.1f}",
            f"{p95(parts['retrieve']):.1f}",
            f"{p50(base_search):.1f}",
            f"{p95(base_search):.1f}",
        )
        row("  generate (ms)", f"{p50(parts['answer']):.0f}", f"{p95(parts['answer']):.0f}")
        row("  cite check (ms)", f"{p50(parts['cite']):.1f}", f"{p95(parts['cite']):.1f}")
        row("time to first token, streamed (ms)", f"{p50(ttft):.0f}", f"{p95(ttft):.0f}")
        row("time per further token (ms)", f"{p50(per_token):.1f}", f"{p95(per_token):.1f}")
        # The model often stops before 64 tokens; this is what a full 64-token answer costs.
        full = p50(parts["retrieve"]) + p50(ttft) + 63 * p50(per_token) + p50(parts["cite"])
        row("end to end for exactly 64 tokens (ms)", f"{full:.0f}", "(p50 parts)")


async def _stream_timing(stack: object, question: str) -> tuple[float, float]:
    """(time to first token, mean time between the following tokens), in ms."""
    started = time.perf_counter()
    stamps: list[float] = []
    async for _piece in stack.astream(question):  # type: ignore[attr-defined]
        stamps.append((time.perf_counter() - started) * 1000)
    if not stamps:
        return float("nan"), float("nan")
    between = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    return stamps[0], between


if __name__ == "__main__":
    main()
