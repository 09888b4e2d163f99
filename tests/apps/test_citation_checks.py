"""The citation step's lexical echo check, without a model."""

from __future__ import annotations

import pytest

from slmops.apps.citations import adds_nothing


@pytest.mark.parametrize(
    ("question", "answer", "echo"),
    [
        ("What is the full text of a product code?", "The full text of a product code is:", True),
        ("How do I version a prompt?", "You version prompts by versioning them.", True),
        # a restatement that ends in a fact adds something (cosine similarity said echo: 0.93)
        (
            "What is the default location for the workspace folder?",
            "The default location for the workspace folder is `.slmops`.",
            False,
        ),
        ("Who won Super Bowl XX?", "The Chicago Bears.", False),
    ],
)
def test_an_answer_that_adds_no_content_word_is_an_echo(
    question: str, answer: str, echo: bool
) -> None:
    assert adds_nothing(question, answer) is echo
