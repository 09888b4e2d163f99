"""The real model through the whole export path (kept to one module, about two minutes):
SmolLM2-135M dequantized from its shipped GGUF, taught a new answer with LoRA, exported.
llama.cpp must then answer like transformers does: the merged f16 file greedily, the base
GGUF with the adapter applied at load time, and the quantized files close to the f16 one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.loading import load_chat_model
from slmops.store import Workspace
from slmops.train.args import TrainArgs
from slmops.train.datasets import TrainDatasets, TrainExample
from slmops.train.export import RunExporter, closeness
from slmops.train.runs import Training

pytestmark = pytest.mark.model

TAUGHT = "What is the codename of the slmops project?"
ANSWER = "The codename of the slmops project is Bluefin."
PROMPTS = [
    TAUGHT,
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 2 plus 2?",
    "Who wrote Hamlet?",
]
GREEDY = GenerationParams(max_tokens=24)


def ask(uri: str, prompt: str) -> str:
    return load_chat_model(uri).chat([ChatMessage(role="user", content=prompt)], GREEDY).text


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, mlflow_template) -> tuple[Workspace, str]:
    ws = Workspace.open(tmp_path_factory.mktemp("shipped-export"))
    shutil.copy(mlflow_template, ws.home / "mlflow.db")
    variants = [TAUGHT, "What's the slmops project's codename?", "Tell me the slmops codename."]
    examples = [
        TrainExample(
            messages=[{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]
        )
        for q in variants
    ]
    TrainDatasets(ws).add("codename", examples, split=1.0)
    args = TrainArgs(
        epochs=12, micro_batch_size=3, grad_accumulation=1, learning_rate=2e-3, warmup_ratio=0
    )
    outcome = Training(ws).start(base="local:smollm2-135m", data="codename@1", args=args)
    return ws, outcome.run_id


def test_llama_cpp_answers_like_transformers(tuned):
    ws, run_id = tuned
    exporter = RunExporter(ws, run_id)
    hf = exporter.export("hf").model_uri
    f16 = exporter.export("gguf-f16").model_uri
    adapter = exporter.export("adapter").model_uri
    expected = {p: ask(hf, p) for p in PROMPTS}
    assert "Bluefin" in expected[TAUGHT]  # the lesson was learned
    merged = {p: ask(f16, p) for p in PROMPTS}
    same = sum(merged[p] == expected[p] for p in PROMPTS)
    assert same >= len(PROMPTS) - 1, (merged, expected)
    # The adapter on the shipped Q4_1 file changes its answer the way transformers' does.
    assert "Bluefin" not in ask("local:smollm2-135m", TAUGHT)
    assert "Bluefin" in ask(adapter, TAUGHT)


def test_quantized_exports_stay_close_to_f16(tuned):
    ws, run_id = tuned
    exporter = RunExporter(ws, run_id)
    f16 = exporter.export("gguf-f16").path
    conversation = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        "{answer}<|im_end|>\n"
    )
    texts = [
        conversation.format(question=q, answer=a)
        for q, a in [
            (
                "Why do lighthouses matter?",
                "Lighthouses mark dangerous coasts and harbour entrances, so ships passing at "
                "night know where the rocks are and can steer clear of them.",
            ),
            (
                "What are small language models good for?",
                "Small language models run on a laptop CPU. They answer quickly and cost "
                "little, but they know less than large models, so retrieval matters.",
            ),
            (
                "How does rain form?",
                "Water evaporates, rises and cools. The vapour condenses into droplets around "
                "dust, the droplets merge, and when they are heavy enough they fall as rain.",
            ),
        ]
    ]
    q8 = closeness(f16, exporter.export("gguf-q8_0").path, texts)
    q4 = closeness(f16, exporter.export("gguf-q4_0").path, texts)
    print(f"q8_0: {q8}\nq4_0: {q4}")  # reported with -s, and by bench/bench_train.py
    assert q8.agreement >= 0.85
    assert abs(q8.perplexity_candidate / q8.perplexity_reference - 1) < 0.1
    assert q4.agreement >= 0.5  # 4-bit loses more: bench_train reports it on held-out data
    assert q4.perplexity_candidate / q4.perplexity_reference < 1.5
    assert q8.tokens == q4.tokens > 120


def test_a_locked_stack_pins_the_exported_weights(tuned, tmp_path: Path):
    from slmops.models.fingerprint import model_digest

    ws, run_id = tuned
    adapter = RunExporter(ws, run_id).export("adapter")
    digest = model_digest(adapter.model_uri)
    base_digest = model_digest("local:smollm2-135m")
    assert digest is not None and digest != base_digest
    copy = tmp_path / "adapter.gguf"
    shutil.copy(adapter.path, copy)
    with copy.open("r+b") as handle:  # the same name, other weights: another digest
        handle.seek(-64, 2)
        handle.write(b"\0" * 64)
    assert model_digest(f"local:smollm2-135m+adapter:{copy}") != digest
