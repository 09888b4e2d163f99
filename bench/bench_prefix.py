"""Prompt-prefix reuse: time to first token of each turn of a chat, with and without reuse.

A five-turn conversation with a few-shot system prompt (about 600 tokens) on the shipped
SmolLM2-135M, run twice on fresh engines: with prefix reuse (the default: each turn reads only
what is new since the slot's last prompt) and without (SLMOPS_PREFIX_REUSE=0: every turn reads
the whole conversation again). Answers are greedy; the script checks that both runs give the
same answers, turn by turn, and prints TTFT and the prompt tokens read from cache per turn.

Run: python bench/bench_prefix.py [--turns 5]
"""

from __future__ import annotations

import argparse
import time

from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.llamacpp import EngineSettings, LlamaCppChatModel
from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

EXAMPLES = [
    ("What is the boiling point of water at sea level?", "100 degrees Celsius."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("What is the largest planet in the solar system?", "Jupiter."),
    ("How many continents are there?", "Seven."),
    ("What gas do plants absorb from the air?", "Carbon dioxide."),
    ("What is the chemical symbol for gold?", "Au."),
    ("Which ocean is the largest?", "The Pacific Ocean."),
    ("What is the square root of 81?", "Nine."),
]
SYSTEM = (
    "You are a precise assistant for a science quiz. Answer in one short sentence, with no "
    "explanation unless asked. Spell numbers as words. If you do not know, say so.\n\n"
    + "\n".join(f"Q: {q}\nA: {a}" for q, a in EXAMPLES * 3)
)
QUESTIONS = [
    "What is the capital of Japan?",
    "How many legs does an insect have?",
    "What is the freezing point of water?",
    "Which planet is known as the red planet?",
    "Who wrote Romeo and Juliet?",
    "What is the hardest natural substance?",
    "How many days are in a leap year?",
]


def run(model: LlamaCppChatModel, turns: int) -> list[tuple[float, int, int, str]]:
    """Per turn: (TTFT s, prompt tokens, tokens reused from cache, answer)."""
    messages = [ChatMessage(role="system", content=SYSTEM)]
    figures = []
    for question in QUESTIONS[:turns]:
        messages.append(ChatMessage(role="user", content=question))
        started = time.perf_counter()
        first = None
        parts = []
        usage = None
        for chunk in model.stream(messages, GenerationParams(max_tokens=32)):
            if chunk.text and first is None:
                first = time.perf_counter() - started
            parts.append(chunk.text)
            usage = chunk.usage or usage
        answer = "".join(parts)
        assert usage is not None
        figures.append((first or float("nan"), usage.prompt_tokens, usage.cached_tokens, answer))
        messages.append(ChatMessage(role="assistant", content=answer))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    path = shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])
    results = {}
    for name, reuse in (("reuse", True), ("no reuse", False)):
        model = LlamaCppChatModel(path, settings=EngineSettings(slots=1, prefix_reuse=reuse))
        run(model, 1)  # pages the weights in, so turn 1 is not a cold start for either
        model = LlamaCppChatModel(path, settings=EngineSettings(slots=1, prefix_reuse=reuse))
        results[name] = run(model, args.turns)
    print(f"\n{'turn':<6}{'prompt tok':>11}{'TTFT reuse':>12}{'cached':>8}{'TTFT none':>11}")
    for turn, (ours, theirs) in enumerate(zip(results["reuse"], results["no reuse"], strict=True)):
        print(f"{turn + 1:<6}{ours[1]:>11}{ours[0]:>12.3f}{ours[2]:>8}{theirs[0]:>11.3f}")
    same = [a[3] == b[3] for a, b in zip(results["reuse"], results["no reuse"], strict=True)]
    last_reuse, last_none = results["reuse"][-1][0], results["no reuse"][-1][0]
    print(f"\nturn {args.turns} TTFT: {last_reuse:.3f} s with reuse, {last_none:.3f} s without")
    print(f"({last_none / last_reuse:.1f}x); answers identical on {sum(same)}/{len(same)} turns")


if __name__ == "__main__":
    main()
