"""Why the KV cache holds keys in f16 and values in bf16: greedy answers and prefill speed per
KV number format and micro-batch.

For each KV format pair (keys/values) and micro-batch size, on the shipped SmolLM2-135M:
- multi-turn: 6 chats of 4 turns answered twice, by an engine that reuses each earlier turn
  from its KV cache, and by one that reads every prompt from scratch (one slot, reuse off);
- long prompts: 12 prompts of 250-550 words (slices of the bundled handbook) answered one
  at a time by the one-slot engine, then 4 at a time by a 4-slot engine;
- prefill speed on a ~1,500-token prompt (best of 3).
It prints how many answers differ in each check, and the prefill speed.

Run: python bench/bench_exactness.py [--kv-types f16/f16 f16/bf16] [--micro-batches 32 63 64 512]
"""

from __future__ import annotations

import argparse
import random
from concurrent.futures import ThreadPoolExecutor

from slmops.apps.quickstart import bundled_docs
from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.llamacpp import EngineSettings, LlamaCppChatModel, kv_type_from
from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

SYSTEM = "You are a helpful assistant. Answer briefly and precisely."
QUESTIONS = [
    "Describe a cat.",
    "Why is the sky blue?",
    "Name a planet.",
    "Tell me a joke.",
    "What is the capital of France?",
    "Explain photosynthesis briefly.",
    "Write a haiku about rain.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
]
PARAMS = GenerationParams(max_tokens=24)


def engine(kv_type: str, micro_batch: int, *, slots: int = 1, reuse: bool) -> LlamaCppChatModel:
    path = shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])
    settings = EngineSettings(
        slots=slots, prefix_reuse=reuse, micro_batch=micro_batch, kv_type=kv_type
    )
    return LlamaCppChatModel(path, settings=settings)


def differing_turns(kv_type: str, micro_batch: int) -> tuple[int, int]:
    reuse = engine(kv_type, micro_batch, reuse=True)
    lone = engine(kv_type, micro_batch, reuse=False)
    differ = turns = 0
    for start in range(6):
        messages = [ChatMessage(role="system", content=SYSTEM)]
        for question in QUESTIONS[start : start + 4]:
            messages.append(ChatMessage(role="user", content=question))
            ours = reuse.chat(messages, PARAMS)
            differ += ours.text != lone.chat(messages, PARAMS).text
            turns += 1
            messages.append(ChatMessage(role="assistant", content=ours.text))
    return differ, turns


def long_prompts() -> list[list[ChatMessage]]:
    words = " ".join(p.read_text() for p in sorted(bundled_docs().glob("*.md"))).split()
    pick = random.Random(1)
    prompts = []
    for _ in range(12):
        size = pick.choice([250, 400, 550])
        start = pick.randrange(0, len(words) - size)
        text = " ".join(words[start : start + size])
        prompts.append(
            [
                ChatMessage(role="system", content="Answer from the text."),
                ChatMessage(role="user", content=f"{text}\n\nSummarise the text in one sentence."),
            ]
        )
    return prompts


def differing_long_answers(kv_type: str, micro_batch: int) -> tuple[int, int]:
    prompts = long_prompts()
    params = GenerationParams(max_tokens=48)
    lone = engine(kv_type, micro_batch, reuse=False)
    alone = [lone.chat(p, params).text for p in prompts]
    del lone
    together_engine = engine(kv_type, micro_batch, slots=4, reuse=True)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: together_engine.chat(p, params).text, prompts))
    return sum(a != b for a, b in zip(alone, together, strict=True)), len(prompts)


def prefill_tokens_per_s(kv_type: str, micro_batch: int) -> float:
    model = engine(kv_type, micro_batch, reuse=False)
    prompt = " ".join(f"word{i}" for i in range(400))
    request = {"prompt": prompt, "max_tokens": 1, "cache_prompt": False}
    model._server.handle_completions(request)  # pages the weights in
    best = min(model._server.handle_completions(request)["timings"]["prompt_ms"] for _ in range(3))
    tokens = model.count_tokens(prompt)
    return tokens / best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-types", nargs="+", default=["f16/f16", "f16/bf16"])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[32, 63, 64, 512])
    args = parser.parse_args()
    header = ("KV (K/V)", "micro-batch", "turns differing", "long, 4 at once", "prefill tok/s")
    print(f"{header[0]:>10}{header[1]:>13}{header[2]:>17}{header[3]:>17}{header[4]:>15}")
    for kv_type in (kv_type_from(raw, name="--kv-types") for raw in args.kv_types):
        for size in args.micro_batches:
            turns = "{} of {}".format(*differing_turns(kv_type, size))
            long = "{} of {}".format(*differing_long_answers(kv_type, size))
            speed = prefill_tokens_per_s(kv_type, size)
            print(f"{kv_type:>10}{size:>13}{turns:>17}{long:>17}{speed:>15.0f}", flush=True)


if __name__ == "__main__":
    main()
