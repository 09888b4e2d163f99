"""Why prompts are read 32 tokens per pass: greedy answers and prefill speed per micro-batch.

For each micro-batch size, 6 chats of 4 turns on the shipped SmolLM2-135M are answered twice:
by an engine that reuses each earlier turn from its KV cache, and by one that reads every
prompt from scratch (one slot, reuse off). It prints how many turns' answers differ, and the
prefill speed on a ~1,500-token prompt (best of 3) at that micro-batch.

Run: python bench/bench_exactness.py [--micro-batches 16 32 64 512]
"""

from __future__ import annotations

import argparse

from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.llamacpp import EngineSettings, LlamaCppChatModel
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


def differing_turns(micro_batch: int) -> tuple[int, int]:
    path = shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])
    reuse = LlamaCppChatModel(
        path, settings=EngineSettings(slots=1, prefix_reuse=True, micro_batch=micro_batch)
    )
    lone = LlamaCppChatModel(
        path, settings=EngineSettings(slots=1, prefix_reuse=False, micro_batch=micro_batch)
    )
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


def prefill_tokens_per_s(micro_batch: int) -> float:
    path = shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])
    model = LlamaCppChatModel(
        path, settings=EngineSettings(slots=1, prefix_reuse=False, micro_batch=micro_batch)
    )
    prompt = " ".join(f"word{i}" for i in range(400))
    request = {"prompt": prompt, "max_tokens": 1, "cache_prompt": False}
    model._server.handle_completions(request)  # pages the weights in
    best = min(model._server.handle_completions(request)["timings"]["prompt_ms"] for _ in range(3))
    tokens = model.count_tokens(prompt)
    return tokens / best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[16, 32, 64, 512])
    args = parser.parse_args()
    print(f"{'micro-batch':>12}{'turns differing':>18}{'prefill tok/s':>15}")
    for size in args.micro_batches:
        differ, turns = differing_turns(size)
        print(f"{size:>12}{f'{differ} of {turns}':>18}{prefill_tokens_per_s(size):>15.0f}")


if __name__ == "__main__":
    main()
