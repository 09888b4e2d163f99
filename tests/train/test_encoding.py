"""Encoding: the loss mask covers the answer only, with the base's own chat template; epoch
batches are a pure function of (seed, epoch)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slmops.train.datasets import TrainExample
from slmops.train.encoding import IGNORE, encode, encode_all, epoch_batches
from tests.train.conftest import sums


@pytest.fixture(scope="module")
def tokenizer(tiny_base: str):
    return AutoTokenizer.from_pretrained(tiny_base.removeprefix("hf:"))


def labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t in encoded.labels if t != IGNORE])


def test_only_the_answer_and_its_end_token_carry_labels(tokenizer):
    example = TrainExample(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "2 plus 2 is 4."},
        ]
    )
    encoded = encode(tokenizer, example)
    assert labelled_text(tokenizer, encoded).startswith("2 plus 2 is 4.<|im_end|>")
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    # the template llama.cpp applies from the GGUF renders the same prompt
    assert "<|im_start|>assistant\n2 plus 2 is 4.<|im_end|>" in text


def test_every_assistant_turn_is_learned_in_a_multi_turn_chat(tokenizer):
    example = TrainExample(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ]
    )
    text = labelled_text(tokenizer, encode(tokenizer, example))
    assert "Hello there." in text and "Goodbye." in text
    assert "Hi" not in text.replace("there", "") and "Bye" not in text.replace("Goodbye", "")


def test_a_completion_is_learned_with_an_end_token(tokenizer):
    encoded = encode(tokenizer, TrainExample(prompt="Two plus two is", completion=" four."))
    assert labelled_text(tokenizer, encoded) == " four.<|im_end|>"
    assert tokenizer.decode(encoded.input_ids) == "Two plus two is four.<|im_end|>"


def test_examples_too_long_are_left_out_and_counted(tokenizer):
    long = TrainExample(
        messages=[
            {"role": "user", "content": "word " * 300},
            {"role": "assistant", "content": "ok"},
        ]
    )
    kept, left_out = encode_all(tokenizer, [*sums(3), long], max_tokens=64)
    assert len(kept) == 3 and left_out == 1


def test_epoch_batches_depend_on_seed_and_epoch_only(tokenizer):
    encoded, _ = encode_all(tokenizer, sums(37), max_tokens=256)
    first = epoch_batches(encoded, 4, seed=3, epoch=0)
    assert first == epoch_batches(encoded, 4, seed=3, epoch=0)
    assert first != epoch_batches(encoded, 4, seed=3, epoch=1)
    assert first != epoch_batches(encoded, 4, seed=4, epoch=0)
    assert sorted(i for batch in first for i in batch) == list(range(37))
    assert all(1 <= len(batch) <= 4 for batch in first)
