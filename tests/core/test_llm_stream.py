from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from slmops.core import LLMCall
from slmops.errors import StepDefinitionError, StepInputError
from slmops.models import GenerationParams
from slmops.store.traces import get_trace
from tests.fakes import ScriptedChatModel


class City(BaseModel):
    city: str


def test_stream_yields_pieces_and_traces_the_whole_generation(workspace):
    model = ScriptedChatModel(["Paris is the capital."])
    step = LLMCall("ask", model=model, prompt="{{ input }}", input_type=str, prompt_version="qa@2")
    finished = {}
    pieces = list(step.stream("capital?", on_finish=lambda r, t: finished.update(r=r, t=t)))
    assert len(pieces) > 1 and "".join(pieces).strip() == "Paris is the capital."
    trace, spans = get_trace(workspace.engine, finished["t"])
    attributes = spans[0]["attributes"]
    assert trace["status"] == "ok" and attributes["slmops.state"] == "complete"
    assert attributes["slmops.stream"] is True and attributes["slmops.prompt.version"] == "qa@2"
    assert attributes["gen_ai.usage.output_tokens"] == finished["r"].usage.completion_tokens
    assert "slmops.llm.time_to_first_token_ms" in attributes


def test_async_stream(workspace):
    step = LLMCall(
        "ask", model=ScriptedChatModel(["one two three"]), prompt="{{ input }}", input_type=str
    )

    async def collect() -> str:
        return "".join([piece async for piece in step.astream("x")])

    assert asyncio.run(collect()).strip() == "one two three"


def test_invalid_input_fails_the_stream_and_its_span(workspace):
    step = LLMCall("ask", model=ScriptedChatModel(["x"]), prompt="{{ input }}", input_type=int)
    with pytest.raises(StepInputError, match="step 'ask': input"):
        list(step.stream("not a number"))


def test_structured_steps_do_not_stream():
    step = LLMCall(
        "city",
        model=ScriptedChatModel(["{}"]),
        prompt="{{ input }}",
        input_type=str,
        output_type=City,
    )
    with pytest.raises(StepDefinitionError, match="streaming yields text"):
        list(step.stream("x"))


@pytest.mark.model
def test_streaming_the_shipped_model_matches_a_plain_run_and_can_stop_early(workspace):
    params = GenerationParams(max_tokens=40)
    step = LLMCall(
        "ask", prompt="{{ input }} Answer in one sentence.", input_type=str, params=params
    )
    question = "What is the capital of France?"
    assert "".join(step.stream(question)) == step.run(question)

    long_step = step.with_options(version="long")
    finished = {}
    pieces = long_step.stream(
        "Write a long essay about the sea.", on_finish=lambda r, t: finished.update(r=r)
    )
    next(pieces), next(pieces)
    pieces.close()
    assert finished == {}  # never finished: the generation was stopped
    [trace] = [t for t in _traces(workspace) if t["name"] == "ask" and t["status"] == "error"]
    _, spans = get_trace(workspace.engine, trace["trace_id"])
    assert spans[0]["attributes"]["slmops.state"] == "cancelled"


def _traces(workspace):
    from slmops.store.traces import list_traces

    return list_traces(workspace.engine, limit=50)
