"""The real shipped models (kept few and fast)."""

from __future__ import annotations

import numpy as np
import pytest

from slmops.errors import ModelError
from slmops.models import ChatMessage, GenerationParams

pytestmark = pytest.mark.model


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_shipped_chat_model_answers_correctly(shipped_chat_model):
    result = shipped_chat_model.chat(
        ask("What is the capital of France? Answer in one sentence."),
        GenerationParams(max_tokens=24),
    )
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 10 and 0 < result.usage.completion_tokens <= 24
    assert result.latency_s > 0


@pytest.mark.parametrize(
    ("question", "max_tokens"), [("Name a colour.", 40), ("Tell me a long story.", 6)]
)
def test_streamed_usage_equals_non_streamed_usage(shipped_chat_model, question, max_tokens):
    params = GenerationParams(max_tokens=max_tokens)
    whole = shipped_chat_model.chat(ask(question), params)
    streamed = shipped_chat_model.stream_to_result(ask(question), params)
    assert streamed.text == whole.text
    assert streamed.usage == whole.usage
    assert streamed.finish_reason == whole.finish_reason
    assert streamed.time_to_first_token_s is not None


def test_json_schema_constrains_the_reply(shipped_chat_model):
    import json

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    result = shipped_chat_model.chat(
        ask("Which city is the capital of France? Reply as JSON."),
        GenerationParams(max_tokens=32),
        json_schema=schema,
    )
    assert isinstance(json.loads(result.text)["city"], str)


def test_generation_is_repeatable_whatever_ran_before(shipped_chat_model):
    params = GenerationParams(max_tokens=24)
    first = shipped_chat_model.chat(ask("Name a colour."), params).text
    shipped_chat_model.chat(ask("Something else entirely, please."), params)
    assert shipped_chat_model.chat(ask("Name a colour."), params).text == first


def test_prompt_beyond_the_context_window_is_a_model_error(shipped_chat_model):
    too_long = "word " * (shipped_chat_model.context_length + 100)
    with pytest.raises(ModelError, match="context window|exceed"):
        shipped_chat_model.complete(too_long, GenerationParams(max_tokens=8))


def test_shipped_embedder_gives_normalised_meaningful_vectors(shipped_embedder):
    vectors = shipped_embedder.embed(
        ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly revenue rose 4%."]
    )
    assert vectors.shape == (3, shipped_embedder.dimension) == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2
    assert shipped_embedder.count_tokens("hello world") == 2
    assert shipped_embedder.max_tokens == 256
    assert shipped_embedder.embed([]).shape == (0, 384)


def test_gguf_converts_to_a_transformers_checkpoint_served_by_hf_uri(tmp_path):
    from slmops.models import load_chat_model
    from slmops.models.conversion import gguf_to_transformers
    from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

    gguf = shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])
    folder = gguf_to_transformers(gguf, tmp_path / "ckpt")
    model = load_chat_model(f"hf:{folder}")
    result = model.chat(
        ask("What is the capital of France? Answer in one sentence."),
        GenerationParams(max_tokens=12),
    )
    assert "Paris" in result.text
    assert result.usage.completion_tokens <= 12


def test_closing_a_stream_stops_generation(shipped_chat_model):
    import time

    params = GenerationParams(max_tokens=400)
    stream = shipped_chat_model.stream(ask("Write a very long essay about the sea."), params)
    next(stream), next(stream)
    started = time.perf_counter()
    stream.close()
    quick = shipped_chat_model.chat(ask("Say hi."), GenerationParams(max_tokens=4))
    # 400 tokens would take ~4 s; the model is free again at once.
    assert time.perf_counter() - started < 1.5
    assert quick.usage.completion_tokens <= 4


def test_calls_from_many_threads_are_serialised_correctly(shipped_chat_model):
    from concurrent.futures import ThreadPoolExecutor

    params = GenerationParams(max_tokens=20)
    question = ask("What is the capital of France? Answer in one sentence.")
    expected = shipped_chat_model.chat(question, params).text
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: shipped_chat_model.chat(question, params).text, range(4)))
    assert answers == [expected] * 4
