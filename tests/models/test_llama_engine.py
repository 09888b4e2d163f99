"""llama.cpp's server engine (xllamacpp) as slmops' local GGUF backend: concurrent requests are
decoded together and a slot's KV cache is reused for a shared prefix, and neither may change a
temperature-0 answer."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from slmops.errors import ConfigError, ModelError
from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.llamacpp import (
    EngineSettings,
    LlamaCppChatModel,
    check_json_schema,
    kv_types,
)
from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

SYSTEM = "You are a helpful assistant. Answer briefly and precisely."
QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis briefly.",
    "Write a haiku about rain.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
    "What is 2+2?",
    "Describe a cat.",
    "Why is the sky blue?",
    "Give me a recipe for tea.",
    "What is Python?",
    "Name a planet.",
    "Translate hello to Spanish.",
    "What does a CPU do?",
    "Tell me a joke.",
    "How many legs does a spider have?",
    "What is a corpus in linguistics?",
]
PARAMS = GenerationParams(max_tokens=24)


def _conversation(question: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=question)]


@pytest.fixture(scope="module")
def gguf_path():
    return shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"])


@pytest.fixture(scope="module")
def lone(gguf_path) -> LlamaCppChatModel:
    """The reference: one slot, nothing reused, each request read from scratch."""
    return LlamaCppChatModel(gguf_path, settings=EngineSettings(slots=1, prefix_reuse=False))


@pytest.fixture(scope="module")
def batched(gguf_path) -> LlamaCppChatModel:
    return LlamaCppChatModel(gguf_path, settings=EngineSettings(slots=4, prefix_reuse=True))


@pytest.mark.model
def test_batched_and_reused_answers_equal_the_lone_answers(lone, batched):
    reference = [lone.chat(_conversation(q), PARAMS) for q in QUESTIONS]
    assert all(r.usage.cached_tokens == 0 for r in reference)
    before = batched.engine_counters()
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: batched.chat(_conversation(q), PARAMS), QUESTIONS))
    after = batched.engine_counters()
    # the engine really decoded several sequences per step, not one after another
    decodes = after["n_decode_total"] - before["n_decode_total"]
    predicted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    assert decodes < predicted * 0.6, (decodes, predicted)
    # again one by one: every slot now holds the shared system prompt, which is reused
    again = [batched.chat(_conversation(q), PARAMS) for q in QUESTIONS]
    assert sum(r.usage.cached_tokens > 0 for r in again) >= len(QUESTIONS) - 1
    assert [r.text for r in together] == [r.text for r in reference]
    assert [r.text for r in again] == [r.text for r in reference]
    assert [r.usage for r in again] == [r.usage for r in reference]


@pytest.mark.model
def test_a_chat_turn_reuses_the_earlier_turns_and_answers_as_from_scratch(lone, batched):
    messages = [ChatMessage(role="system", content=SYSTEM)]
    for turn, question in enumerate(QUESTIONS[:4]):
        messages.append(ChatMessage(role="user", content=question))
        reused = batched.chat(messages, PARAMS)
        fresh = lone.chat(messages, PARAMS)
        assert reused.text == fresh.text, f"turn {turn + 1}"
        if turn:
            # all earlier turns came from the cache; only the newest one was read
            assert reused.usage.cached_tokens > reused.usage.prompt_tokens // 2
        messages.append(ChatMessage(role="assistant", content=reused.text))


@pytest.mark.model
def test_streams_from_many_threads_equal_their_whole_answers(lone, batched):
    reference = [lone.chat(_conversation(q), PARAMS).text for q in QUESTIONS[:6]]

    def streamed(question: str) -> str:
        return "".join(c.text for c in batched.stream(_conversation(question), PARAMS))

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(streamed, QUESTIONS[:6])) == reference


def _long_conversations() -> list[list[ChatMessage]]:
    """Four prompts of 300-500 tokens (the handbook's pages, two at a time): long enough that
    a request decoding alone attends over 512 or more KV cells, where ggml's f16/f16 flash
    attention would split the keys between threads and round otherwise than beside others."""
    from slmops.apps.quickstart import bundled_docs

    pages = [page.read_text() for page in sorted(bundled_docs().glob("*.md"))]
    return [
        [
            ChatMessage(role="system", content="Answer from the text."),
            ChatMessage(role="user", content=f"{a}\n{b}\n\nWhat is this text about?"),
        ]
        for a, b in itertools.pairwise(pages[:5])
    ]


@pytest.mark.model
def test_long_prompts_decoded_together_answer_as_alone(lone, batched):
    conversations = _long_conversations()
    reference = [lone.chat(c, PARAMS) for c in conversations]
    assert min(r.usage.prompt_tokens for r in reference) > 300
    with ThreadPoolExecutor(len(conversations)) as pool:
        together = list(pool.map(lambda c: batched.chat(c, PARAMS), conversations))
    assert [r.text for r in together] == [r.text for r in reference]


@pytest.mark.model
def test_closing_a_stream_stops_its_generation(batched):
    before = batched.engine_counters()["tokens_predicted_total"]
    stream = batched.stream(
        _conversation("Tell me a very long story."), GenerationParams(max_tokens=2000)
    )
    for _ in range(3):
        next(stream)
    stream.close()
    time.sleep(0.5)  # the engine stops at its next token
    spent = batched.engine_counters()["tokens_predicted_total"] - before
    assert spent < 50, spent
    assert batched.chat(_conversation("Name a planet."), GenerationParams(max_tokens=4)).text


@pytest.mark.model
def test_a_stream_never_read_asks_the_engine_for_nothing(batched):
    before = batched.engine_counters()["tokens_predicted_total"]
    params = GenerationParams(max_tokens=300)
    stream = batched.stream(_conversation("Tell me a long story."), params)
    time.sleep(1.0)  # an engine started at the call would have written tokens by now
    del stream
    assert batched.engine_counters()["tokens_predicted_total"] == before


@pytest.mark.model
def test_json_schema_constrains_and_a_bad_schema_is_refused_before_decoding(batched):
    schema = {
        "type": "object",
        # Bounded: LLGuidance ends the digits at the bound, where a 135M model left free may
        # write 1s until max_tokens (whether it stops is chance, and moved with every change
        # of the engine's rounding).
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "population": {"type": "integer", "minimum": 0, "maximum": 99_999_999},
        },
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    import json

    reply = batched.chat(_conversation("Which city is the capital of France?"), json_schema=schema)
    value = json.loads(reply.text)
    assert set(value) == {"city", "population"} and isinstance(value["population"], int)
    assert 0 <= value["population"] <= 99_999_999 and len(value["city"]) <= 40
    with pytest.raises(ModelError, match="not a valid JSON schema at type"):
        batched.chat(_conversation("x"), json_schema={"type": "objectx"})


@pytest.mark.model
def test_a_prompt_beyond_one_slot_is_a_context_error(batched):
    with pytest.raises(ModelError, match="context"):
        batched.chat([ChatMessage(role="user", content="word " * (batched.context_length + 50))])


def test_bad_json_schemas_are_named():
    for schema, where in (
        ({"type": "objectx"}, "type"),
        ({"type": "string", "pattern": "(("}, "pattern"),
        ({"properties": {"a": {"minimum": "x"}}}, "properties/a/minimum"),
    ):
        with pytest.raises(ModelError, match=f"at {where}"):
            check_json_schema(schema)
    check_json_schema({"type": "object", "properties": {"a": {"type": "integer"}}})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SLMOPS_LLAMA_SLOTS", "zero", "whole number"),
        ("SLMOPS_LLAMA_SLOTS", "0", "between 1 and 64"),
        ("SLMOPS_LLAMA_CONTEXT", "100", "between 256"),
        ("SLMOPS_PREFIX_REUSE", "maybe", "1 \\(on\\) or 0 \\(off\\)"),
        ("SLMOPS_LLAMA_KV_TYPE", "q2", "f16, bf16, q8_0, q4_0"),
        ("SLMOPS_LLAMA_KV_TYPE", "f16/bf16/q8_0", "KEYS/VALUES"),
    ],
)
def test_engine_settings_from_the_environment_are_checked(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}.*{message}"):
        EngineSettings.from_environment()


def test_engine_settings_defaults_and_switches(monkeypatch):
    assert EngineSettings.from_environment() == EngineSettings()
    monkeypatch.setenv("SLMOPS_LLAMA_SLOTS", "16")
    monkeypatch.setenv("SLMOPS_PREFIX_REUSE", "off")
    monkeypatch.setenv("SLMOPS_LLAMA_KV_TYPE", "Q8_0")
    settings = EngineSettings.from_environment()
    assert (settings.slots, settings.prefix_reuse, settings.kv_type) == (16, False, "q8_0/q8_0")
    monkeypatch.setenv("SLMOPS_LLAMA_KV_TYPE", " F16 / q8_0 ")
    assert kv_types(EngineSettings.from_environment().kv_type) == ("f16", "q8_0")


@pytest.mark.model
def test_ctrl_c_still_reaches_python_after_the_engine_starts(gguf_path):
    """llama.cpp's server installs SIGINT/SIGTERM handlers of its own; slmops puts Python's
    back, or Ctrl+C would stop the engine and leave the process running."""
    code = (
        "import os, signal, sys\n"
        # Python's own handler, even when started with SIGINT ignored (a shell's & job)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from slmops.models.llamacpp import LlamaCppChatModel, EngineSettings\n"
        f"m = LlamaCppChatModel({str(gguf_path)!r}, settings=EngineSettings(slots=1))\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    import time; time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert out.stdout.strip() == "interrupted", out.stderr[-2000:]


@pytest.mark.model
def test_an_engine_freed_right_after_it_starts_does_not_hang(gguf_path):
    """xllamacpp's engine freed before its task loop ran used to wait for it forever."""
    code = (
        "from slmops.models.llamacpp import LlamaCppChatModel, EngineSettings\n"
        "for _ in range(6):\n"
        f"    LlamaCppChatModel({str(gguf_path)!r}, settings=EngineSettings(slots=1))\n"
        "print('freed')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=os.environ
    )
    assert out.stdout.strip() == "freed", out.stderr[-2000:]


def test_objects_are_closed_unless_a_schema_opens_them():
    from slmops.models.llamacpp import _closed_objects

    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
            "pick": {"enum": [{"properties": {"x": 1}}]},
        },
        "$defs": {"Item": {"type": "object", "properties": {"b": {"type": "string"}}}},
    }
    closed = _closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert set(closed["properties"]) == {"properties", "open", "pick"}  # a field, not a keyword
    assert closed["properties"]["properties"]["additionalProperties"] is False
    assert closed["properties"]["open"]["additionalProperties"] is True
    assert closed["properties"]["pick"] == schema["properties"]["pick"]  # data is left alone
    assert closed["$defs"]["Item"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the caller's schema is not changed


@pytest.mark.model
def test_a_quantized_kv_cache_runs_with_flash_attention(gguf_path):
    model = LlamaCppChatModel(
        gguf_path, settings=EngineSettings(slots=1, context_per_slot=512, kv_type="q8_0")
    )
    reply = model.chat(_conversation(QUESTIONS[0]), PARAMS)
    assert reply.text.strip() and reply.usage.completion_tokens > 0
