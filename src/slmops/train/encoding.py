"""Examples as token ids with a loss mask, and the batches a training epoch runs.

A chat example is rendered with the base model's own chat template (the one llama.cpp applies
from the GGUF at run time), and only the assistant turns' tokens carry a label: the model
learns to answer, not to predict the question. Token positions are matched to the answer by
character offsets, so a tokenizer that merges across the boundary cannot shift the mask.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slmops.train.datasets import TrainDataError, TrainExample

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass(frozen=True)
class Encoded:
    example_id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def _answer_spans(tokenizer: Any, example: TrainExample) -> tuple[str, list[tuple[int, int]]]:
    """The full text and the character spans of what the model must produce."""
    if example.messages is None:
        assert example.prompt is not None and example.completion is not None
        eos = tokenizer.eos_token or ""
        text = example.prompt + example.completion + eos
        return text, [(len(example.prompt), len(text))]
    messages = [m.model_dump() for m in example.messages]
    spans = []
    text = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(
            messages[:index], tokenize=False, add_generation_prompt=True
        )
        text = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not text.startswith(prefix):
            raise TrainDataError(
                "the base model's chat template does not render the prompt as the start of "
                "the conversation, so the answer cannot be told apart for the loss"
            )
        spans.append((len(prefix), len(text)))
    return text, spans


def encode(tokenizer: Any, example: TrainExample) -> Encoded:
    """Token ids and labels (``IGNORE`` outside the answers) for one example."""
    text, spans = _answer_spans(tokenizer, example)
    # Chat templates write their own special tokens; a raw completion gets the tokenizer's.
    encoding = tokenizer(
        text, add_special_tokens=example.messages is None, return_offsets_mapping=True
    )
    ids = list(encoding["input_ids"])
    labels = [IGNORE] * len(ids)
    for position, (start, end) in enumerate(encoding["offset_mapping"]):
        if end > start and any(s <= start < e for s, e in spans):
            labels[position] = ids[position]
    eos = tokenizer.eos_token_id
    if example.messages is None and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
        labels.append(eos)
    return Encoded(example.id, ids, labels)


def encode_all(
    tokenizer: Any, examples: Sequence[TrainExample], max_tokens: int
) -> tuple[list[Encoded], int]:
    """Every example that fits in ``max_tokens`` and has something to learn, and how many
    were left out (too long, or nothing labelled)."""
    kept, left_out = [], 0
    for example in examples:
        encoded = encode(tokenizer, example)
        if len(encoded.input_ids) > max_tokens or encoded.trained_tokens == 0:
            left_out += 1
        else:
            kept.append(encoded)
    return kept, left_out


def epoch_batches(
    examples: Sequence[Encoded], micro_batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """The micro-batches of one epoch, as indices into ``examples``. Shuffled by (seed,
    epoch) alone, so a resumed run sees exactly the batches it would have; within windows of
    a few batches, examples of similar length are grouped, which saves padding."""
    order = list(range(len(examples)))
    rng = random.Random(f"{seed}:{epoch}")
    rng.shuffle(order)
    window = micro_batch_size * 8
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i].input_ids))
        batches += [chunk[i : i + micro_batch_size] for i in range(0, len(chunk), micro_batch_size)]
    rng.shuffle(batches)
    return batches
