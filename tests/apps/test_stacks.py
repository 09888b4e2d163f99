"""Stacks built from the templates, run on the shipped models, plus composition, locking
and streaming."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from slmops.apps.build import build_stack
from slmops.apps.citations import Cite, SourcedAnswer
from slmops.apps.helpers import ATTACKS, Attack, TestCase
from slmops.apps.lock import write_lock
from slmops.apps.sampling import Sample
from slmops.apps.stack import Stack
from slmops.apps.templates import TEMPLATES, ensure_workspace_stack, init_stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.data.corpus import Corpora, DataError
from slmops.errors import StepInputError
from slmops.store import Workspace
from tests.apps.conftest import write_manifest


def make(
    template: str, workspace: Workspace, directory: Path, name: str = "app", **values: str
) -> Stack:
    init_stack(name, template, workspace, directory=directory, **values)  # type: ignore[arg-type]
    return build_stack(name, workspace)


def test_every_template_writes_a_valid_manifest(workspace: Workspace, tmp_path: Path) -> None:
    for template in TEMPLATES:
        created = init_stack(f"t-{template}", template, workspace, directory=tmp_path)
        assert created[0].path.is_file()
        assert all(ref.endswith("@1") for stack in created for ref in stack.prompts)


def test_init_refuses_to_overwrite(workspace: Workspace, tmp_path: Path) -> None:
    init_stack("app", "chat", workspace, directory=tmp_path)
    with pytest.raises(Exception, match="already exists"):
        init_stack("app", "rag", workspace, directory=tmp_path)


def test_rag_answers_with_citations_and_refuses_off_topic(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora, spans_of: Any
) -> None:
    stack = make("rag", workspace, stacks_dir, answer="hybrid")
    result = stack.invoke("How do I version a prompt?")
    answer = result.output
    assert isinstance(answer, SourcedAnswer)
    assert not answer.refused and answer.answer
    assert answer.citations and answer.citations[0].source.startswith("06-prompts.md")
    assert (answer.corpus, answer.corpus_version) == ("docs", 1)
    spans = spans_of(result.trace_id)
    assert spans["app"]["kind"] == "stack"
    assert spans["answer"]["parent_id"] == spans["app"]["span_id"]
    assert spans["answer"]["attributes"]["slmops.prompt.version"] == "app-answer@1"
    assert spans["retrieve"]["attributes"]["slmops.retrieval.version"] == 1

    refused = stack.run("What is the capital of France?")
    assert refused.refused and refused.citations == []
    assert "relevance" in (refused.reason or "")


def test_chat_keeps_history(workspace: Workspace, stacks_dir: Path) -> None:
    stack = make("chat", workspace, stacks_dir)
    reply = stack.run(
        {
            "message": "What is my name?",
            "history": [
                {"role": "user", "content": "Hi, my name is Alice."},
                {"role": "assistant", "content": "Hello Alice!"},
            ],
        }
    )
    assert isinstance(reply, str) and reply.strip()
    assert isinstance(stack.run("Say hello."), str)


def test_classify_returns_one_of_its_labels(workspace: Workspace, stacks_dir: Path) -> None:
    stack = make("classify", workspace, stacks_dir)
    output = stack.run("The export button crashes the app every time I click it.")
    assert output.label in {"question", "bug_report", "feature_request", "other"}


def test_extract_returns_the_declared_record(workspace: Workspace, stacks_dir: Path) -> None:
    stack = make("extract", workspace, stacks_dir)
    output = stack.run("Hi, I am Ana Lopez from Acme (ana@acme.example). Please send the invoice.")
    assert set(type(output).model_fields) == {"name", "organization", "email", "request"}
    assert all(isinstance(getattr(output, f), str) for f in type(output).model_fields)


def test_judge_scores_on_its_scale(workspace: Workspace, stacks_dir: Path) -> None:
    stack = make("judge", workspace, stacks_dir)
    output = stack.run(
        {
            "question": "What is the capital of France?",
            "answer": "Paris is the capital of France.",
            "reference": "Paris",
        }
    )
    assert output.score in {1, 2, 3, 4, 5}
    assert output.verdict in {"pass", "fail"}
    assert isinstance(output.reason, str)


def test_synth_writes_test_cases_from_the_corpus(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora
) -> None:
    stack = make("synth", workspace, stacks_dir)
    cases = stack.run({"n": 2})
    assert 1 <= len(cases) <= 2
    chunk_ids = {row["chunk_id"] for row in handbook.rows("docs@1")}
    for case in cases:
        assert isinstance(case, TestCase)
        assert case.question and case.answer and case.context
        assert case.source_ids[0] in chunk_ids and case.corpus_version == 1
    assert stack.run({"n": 2}) == cases  # seeded sample, greedy decoding: reproducible


def test_redteam_writes_attacks_in_every_category(workspace: Workspace, stacks_dir: Path) -> None:
    stack = make("redteam", workspace, stacks_dir)
    attacks = stack.run({"n": 1})
    assert [a.category for a in attacks] == list(ATTACKS)
    assert all(isinstance(a, Attack) and a.input.strip() for a in attacks)


@pytest.mark.parametrize(
    ("request_text", "branch"),
    [
        ("How do I ingest documents into a corpus?", "docs"),
        ("Which embedding model does slmops ship?", "docs"),
        ("Hello there, how are you doing?", "chat"),
        ("Tell me a joke about penguins.", "chat"),
        ("What is the capital of Italy?", "chat"),
    ],
)
def test_router_streams_the_request_to_the_right_stack_as_a_nested_span(
    workspace: Workspace,
    stacks_dir: Path,
    handbook: Corpora,
    spans_of: Any,
    request_text: str,
    branch: str,
) -> None:
    init_stack("front", "router", workspace, directory=stacks_dir, answer="generative")
    assert (stacks_dir / "front-docs" / "slmops.toml").is_file()
    stack = build_stack("front", workspace)
    finished: list[tuple[Any, str]] = []

    async def consume() -> list[str]:
        on_finish = lambda o, t: finished.append((o, t))  # noqa: E731
        return [piece async for piece in stack.astream(request_text, on_finish=on_finish)]

    pieces = asyncio.run(consume())
    output, trace_id = finished[0]
    spans = spans_of(trace_id)
    # the similarity classifier: the docs label scores the closest handbook passage
    scores = json.loads(spans["classify"]["attributes"]["slmops.classify.scores"])
    assert set(scores) == {"docs", "chat"} and max(scores, key=scores.__getitem__) == branch
    assert spans["dispatch"]["attributes"]["slmops.decision.branch"] == branch
    target = spans[f"front-{branch}"]
    assert target["kind"] == "stack" and target["parent_id"] == spans["dispatch"]["span_id"]
    # streamed token by token through the route and the chosen stack
    assert len(pieces) > 3 and spans["dispatch"]["attributes"]["slmops.stream"] is True
    model_span = spans["answer" if branch == "docs" else "reply"]
    assert model_span["attributes"]["slmops.llm.time_to_first_token_ms"] > 0
    if branch == "docs":
        assert isinstance(output, SourcedAnswer)
        assert output.refused or output.answer == "".join(pieces).strip()
    else:
        assert output == "".join(pieces)


def test_a_stack_inside_a_stack_runs_user_python(
    workspace: Workspace, stacks_dir: Path, spans_of: Any
) -> None:
    write_manifest(
        stacks_dir,
        "shout",
        '[stack]\nname = "shout"\n[[steps]]\nname = "upper"\nkind = "function"\n'
        'call = "shouting:upper"\ninput = "input.text"\n',
    )
    (stacks_dir / "shout" / "shouting.py").write_text(
        "def upper(text: str) -> str:\n    return text.upper() + '!'\n"
    )
    write_manifest(
        stacks_dir,
        "outer",
        textwrap.dedent(
            """
            [stack]
            name = "outer"
            depends_on = ["shout"]
            [[steps]]
            name = "loud"
            kind = "stack"
            stack = "shout"
            input = { text = "input.text" }
            [[steps]]
            name = "twice"
            kind = "stack"
            stack = "shout"
            input = "loud"
            """
        ),
    )
    result = build_stack("outer", workspace).invoke("hi")
    assert result.output == "HI!!"
    spans = spans_of(result.trace_id)
    assert spans["loud"]["kind"] == "stack"
    assert spans["loud"]["parent_id"] == spans["outer"]["span_id"]
    assert spans["loud"]["attributes"]["slmops.stack.name"] == "shout"
    assert spans["upper"]["attributes"]["slmops.step.path"] in (
        "outer/loud/upper",
        "outer/twice/upper",
    )


def test_a_locked_stack_keeps_its_chunks_when_the_corpus_changes(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora, tmp_path: Path
) -> None:
    write_manifest(
        stacks_dir,
        "finder",
        textwrap.dedent(
            """
            [stack]
            name = "finder"
            [stack.input]
            question = "string"
            [corpora]
            docs = "docs@latest"
            [[steps]]
            name = "retrieve"
            kind = "retrieve"
            corpus = "docs"
            input = "input.question"
            k = 3
            """
        ),
    )
    question = "How are prompts versioned?"
    before = build_stack("finder", workspace).run(question)
    write_lock(build_stack("finder", workspace).manifest, workspace)
    extra = tmp_path / "new-docs"
    extra.mkdir()
    (extra / "prompts-v2.md").write_text(
        "# Prompt versions\n\nPrompts are versioned: every prompt add stores a new immutable "
        "version of the prompt, and prompt tags name prompt versions.\n"
    )
    # the corpus is now only this document: version 2
    handbook.ingest("docs", [extra], allow_removals=True)
    locked = build_stack("finder", workspace).run(question)
    assert locked.version == 1
    assert [h.chunk_id for h in locked.hits] == [h.chunk_id for h in before.hits]
    unlocked = build_stack("finder", workspace, use_lock=False).run(question)
    assert unlocked.version == 2 and unlocked.hits[0].doc_id == "prompts-v2.md"


def test_streaming_yields_the_answer_then_the_cited_output(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora, spans_of: Any
) -> None:
    stack = make("rag", workspace, stacks_dir, answer="generative")
    finished: list[tuple[Any, str]] = []

    async def consume() -> list[str]:
        return [
            piece
            async for piece in stack.astream(
                "How do I version a prompt?", on_finish=lambda o, t: finished.append((o, t))
            )
        ]

    pieces = asyncio.run(consume())
    output, trace_id = finished[0]
    assert len(pieces) > 3
    assert output.answer == "".join(pieces).strip()
    spans = spans_of(trace_id)
    assert spans["app"]["attributes"]["slmops.stream"] is True
    assert spans["answer"]["parent_id"] == spans["app"]["span_id"]
    assert spans["answer"]["attributes"]["slmops.llm.time_to_first_token_ms"] > 0
    assert spans["cite"]["parent_id"] == spans["app"]["span_id"]


def test_plain_text_for_a_structured_input_is_refused(
    workspace: Workspace, stacks_dir: Path
) -> None:
    stack = make("judge", workspace, stacks_dir)
    with pytest.raises(StepInputError, match="takes JSON input with fields question, answer"):
        stack.run("is this right?")
    with pytest.raises(StepInputError, match="answer"):
        stack.run({"question": "q"})


def test_a_workspace_stack_is_written_once(workspace: Workspace) -> None:
    created = ensure_workspace_stack("judge-me", "judge", workspace)
    assert (
        created is not None
        and created.path == workspace.home / "stacks" / "judge-me" / "slmops.toml"
    )
    created.path.write_text(created.path.read_text() + "# edited by hand\n")
    assert ensure_workspace_stack("judge-me", "judge", workspace) is None  # never overwritten
    assert created.path.read_text().endswith("# edited by hand\n")
    assert build_stack("judge-me", workspace).stack_name == "judge-me"  # found in the workspace


def test_corpus_steps_need_a_workspace() -> None:
    with use_runtime(Runtime.in_memory()):
        with pytest.raises(DataError, match="Sample needs a workspace"):
            Sample("sample", corpus="docs@1").run(2)
        retrieval = {"query": "q", "corpus": "docs", "version": 1, "hits": [_hit()]}
        with pytest.raises(DataError, match="Cite needs a workspace"):
            Cite().run({"question": "q", "answer": "a", "retrieval": retrieval})


def _hit() -> dict[str, Any]:
    return {
        "chunk_id": "c1",
        "text": "text",
        "score": 1.0,
        "doc_id": "d.md",
        "source": "d.md",
        "location": "",
        "section": "",
        "file_type": "md",
    }
