"""Training datasets: validation, versions, the id-based split, and examples built from an
eval dataset (through a stack's prompt) and from stored traces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from slmops.apps.build import build_stack
from slmops.apps.templates import init_stack
from slmops.eval.datasets import Datasets, EvalCase
from slmops.store import Workspace
from slmops.train.datasets import (
    TrainDataError,
    TrainDatasets,
    TrainExample,
    read_examples,
    split_of,
)
from slmops.train.sources import examples_from_eval_dataset, examples_from_traces
from tests.train.conftest import sums


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
        encoding="utf-8",
    )
    return path


CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "line 2: the last message must be"),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]},
            "line 2: messages.1.role",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": " "},
                ]
            },
            "line 2: messages.1.content is empty",
        ),
        ({"prompt": "2+2="}, "line 2: needs messages, or both prompt and completion"),
        ({"prompt": "2+2=", "completion": "4"}, "line 2: a completion example among chat"),
        ({**CHAT, "extra": 1}, "line 2: extra: Extra inputs are not permitted"),
    ],
)
def test_a_bad_line_is_reported_by_number_and_field(tmp_path, bad, message):
    path = write_lines(tmp_path / "train.jsonl", [CHAT, bad])
    with pytest.raises(TrainDataError, match=message):
        read_examples(path)


def test_split_is_decided_by_id_alone_so_examples_never_change_sides(workspace: Workspace):
    datasets = TrainDatasets(workspace)
    first, created = datasets.add("sums", sums(40), split=0.8)
    assert created and first.examples == 40 and first.train + first.heldout == 40
    assert 20 < first.train < 40 and first.heldout > 0  # ~80/20 by hash
    second, _ = datasets.add("sums", sums(60), split=0.8)
    _, old = datasets.examples(first.ref)
    _, new = datasets.examples(second.ref)
    sides = {e.id: e.split for e in new}
    assert all(sides[e.id] == e.split for e in old)
    assert all(e.split == split_of(e.id, 0.8) for e in new)
    again, created = datasets.add("sums", sums(60), split=0.8)
    assert not created and again.version == second.version


def test_a_dataset_refuses_mixed_formats_duplicates_and_bad_splits(workspace: Workspace):
    datasets = TrainDatasets(workspace)
    completion = TrainExample(prompt="2+2=", completion="4")
    with pytest.raises(TrainDataError, match="cannot share a dataset"):
        datasets.add("mixed", [*sums(2), completion])
    with pytest.raises(TrainDataError, match="ids must be unique"):
        datasets.add("twice", [sums(1)[0], sums(1)[0]])
    with pytest.raises(TrainDataError, match="split 1.5"):
        datasets.add("sums", sums(3), split=1.5)
    with pytest.raises(TrainDataError, match="training dataset name"):
        datasets.add("Bad Name", sums(3))
    assert datasets.names() == []


RAG_CASES = [
    EvalCase(id="q1", input="How do I version a prompt?", reference="Use slmops prompt add."),
    EvalCase(id="q2", input="What is the capital of France?", answerable=False),
    EvalCase(id="q3", input="How are chunks made?", reference=None),
]


def test_eval_cases_become_the_exact_messages_the_stack_sends(
    workspace: Workspace, handbook, stacks_dir: Path, tiny_gguf: Path
):
    init_stack("qa", "rag", workspace, directory=stacks_dir, model=f"gguf:{tiny_gguf}")
    Datasets(workspace).add("qa-cases", RAG_CASES)
    stack = build_stack("qa", workspace)
    built = asyncio.run(examples_from_eval_dataset(workspace, "qa-cases@1", stack))
    assert [e.id for e in built.examples] == ["q1"]
    assert sum(built.skipped.values()) == 2
    messages = built.examples[0].messages
    assert messages is not None
    assert [m.role for m in messages] == ["system", "user", "assistant"]
    assert messages[-1].content == "Use slmops prompt add."
    # the rendered prompt holds the passages retrieval found, as at run time
    answer = next(node for node in stack.nodes if node.name == "answer").step
    value = asyncio.run(stack.input_of("How do I version a prompt?", "answer"))
    assert answer.render(value) == messages[:-1]
    assert "Question: How do I version a prompt?" in messages[1].content
    assert "[1]" in messages[1].content
    assert built.lineage["eval_dataset"] == "qa-cases@1"
    assert built.lineage["prompt"] == "qa-answer@1"
    assert built.lineage["corpora"] == {"docs": "docs@1"}
    # "Use slmops prompt add." is not what the passages say: not a grounded example
    with pytest.raises(TrainDataError, match="1 reference not in the passages the stack"):
        asyncio.run(examples_from_eval_dataset(workspace, "qa-cases@1", stack, grounded_only=True))


def test_examples_of_one_group_stay_on_one_side(workspace: Workspace):
    examples = [
        TrainExample(
            id=f"s{s}-q{q}",
            group=f"s{s}",
            messages=[
                {"role": "user", "content": f"Question {q} about sentence {s}?"},
                {"role": "assistant", "content": f"Sentence {s}."},
            ],
        )
        for s in range(20)
        for q in range(3)
    ]
    _, stored = TrainDatasets(workspace).examples(
        TrainDatasets(workspace).add("grouped", examples, split=0.7)[0].ref
    )
    sides: dict[str, set[str]] = {}
    for example in stored:
        sides.setdefault(example.group or "", set()).add(example.split or "")
    assert all(len(s) == 1 for s in sides.values())
    assert {side for s in sides.values() for side in s} == {"train", "heldout"}


def test_stored_traces_become_examples_of_what_the_model_answered(
    workspace: Workspace, stacks_dir: Path, tiny_gguf: Path
):
    init_stack("chatty", "chat", workspace, directory=stacks_dir, model=f"gguf:{tiny_gguf}")
    stack = build_stack("chatty", workspace)
    for text in ("hello", "good morning", "hello"):
        stack.invoke({"message": text})
    built = examples_from_traces(workspace, "chatty")
    assert len(built.examples) == 2  # the repeated conversation once
    assert built.skipped == {"the same conversation again": 1}
    messages = built.examples[0].messages
    assert messages is not None and messages[-2].content == "hello"
    assert messages[-1].role == "assistant" and messages[-1].content.strip()
    assert built.examples[0].metadata["trace_id"]
    with pytest.raises(TrainDataError, match="3 not chosen by the filter"):
        examples_from_traces(workspace, "chatty", keep=lambda trace, spans: False)
    with pytest.raises(TrainDataError, match="no usable traces of stack 'nobody'"):
        examples_from_traces(workspace, "nobody")
