"""The quickstart app: a small composed question-answering app on the shipped model.

It shows each kind of step at work: a validated input, a Function that normalises the
question, a Decision that picks a prompt, cached LLM calls with retry and timeout, and a
Function that checks the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from slmops.core import Chain, Decision, Function, LLMCall, Retry, Step
from slmops.models.base import ChatModel, GenerationParams

DEFAULT_QUESTION = "What is the capital of France?"
BUNDLED_DOCS = Path(__file__).parent / "quickstart_docs"


def bundled_docs() -> Path:
    """The small slmops handbook shipped with the package, for the RAG quickstart."""
    return BUNDLED_DOCS


_DEFINITION_STARTS = ("what is", "what are", "define", "explain", "who is", "who was")


class Question(BaseModel):
    question: str = Field(min_length=3, max_length=1000)


class Answer(BaseModel):
    question: str
    answer: str = Field(min_length=1)


def normalize(q: Question) -> Question:
    text = " ".join(q.question.split())
    return Question(question=text if text.endswith("?") else text + "?")


def question_kind(q: Question) -> Literal["explain", "answer"]:
    return "explain" if q.question.lower().startswith(_DEFINITION_STARTS) else "answer"


def answer_is_not_empty(text: str) -> bool:
    return bool(text.strip())


def _ask(name: str, prompt: str, model: str | ChatModel) -> LLMCall:
    return LLMCall(
        name,
        model=model,
        system="You are a concise, factual assistant.",
        prompt=prompt,
        input_type=Question,
        params=GenerationParams(max_tokens=96, temperature=0.0),
        output_validators=[answer_is_not_empty],
        retry=Retry(attempts=2, backoff_s=0.2),
        timeout_s=120.0,
        cache=True,
    )


def build_quickstart(model: str | ChatModel = "local:smollm2-135m") -> Step[Question, str]:
    """Question -> Chain(normalize, Decision(explain | answer), finalize) -> answer text."""
    explain = _ask("explain", "{{ question }} Answer in one or two short sentences.", model)
    answer = _ask("answer", "Answer briefly and directly: {{ question }}", model)
    return Chain(
        "quickstart",
        [
            Function(normalize),
            Decision("route", question_kind, {"explain": explain, "answer": answer}),
            Function(lambda text: text.strip(), name="finalize", input_type=str, output_type=str),
        ],
    )
