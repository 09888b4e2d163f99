"""Extractive and hybrid answers: sentence splitting, scoring, locations, the cite step's
decisions in each mode, the manifest's `select` step and `when`, and calibration."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from slmops.apps.build import build_stack
from slmops.apps.citations import Cite, SourcedAnswer
from slmops.apps.extractive import (
    SelectInput,
    Selection,
    SelectSentences,
    sentence_location,
    split_sentences,
)
from slmops.apps.manifest import ManifestError, parse_manifest
from slmops.apps.templates import init_stack
from slmops.data.corpus import Corpora, Hit
from slmops.data.retrieve import RetrievalResult
from slmops.eval.calibrate import (
    CalibrationCase,
    apply_threshold,
    calibration,
    sweep,
    with_check_off,
)
from slmops.eval.datasets import EvalCase
from slmops.store import Workspace


def hit(text: str, location: str = "lines 10-20", chunk: str = "c1") -> Hit:
    return Hit(
        chunk_id=chunk,
        text=text,
        score=1.0,
        doc_id="doc.md",
        source="doc.md",
        location=location,
        section="",
        file_type="markdown",
    )


def test_sentences_split_at_ends_blank_lines_and_list_items_not_wrapped_lines() -> None:
    text = (
        "## Install\n\nRun the installer. Dr. Smith says version 3.5 works,\n"
        "e.g. on Linux. It wraps across\nlines here!\n- a bullet with four words\n- no\n"
        "| a | table row here |"
    )
    spans = split_sentences(text)
    assert [s.text for s in spans] == [
        "Run the installer.",
        "Dr. Smith says version 3.5 works, e.g. on Linux.",
        "It wraps across lines here!",
        "a bullet with four words",
        "a | table row here |",
    ]
    # offsets point at the sentence's first character in the passage
    assert all(text[s.start] == s.text[0] for s in spans)
    under = "## Search\nVector search finds similar passages.\n# Only a heading"
    assert [s.text for s in split_sentences(under)] == ["Vector search finds similar passages."]
    assert split_sentences(under)[0].start == under.index("Vector")


def test_a_sentence_location_narrows_the_chunk_lines() -> None:
    text = "First line here.\nSecond sentence starts\nand ends here."
    passage = hit(text, "lines 10-12")
    second = split_sentences(text)[1]
    assert sentence_location(passage, second.start, second.end) == "lines 11-12"
    assert sentence_location(passage, 0, 16) == "line 10"
    assert sentence_location(hit(text, "page 3"), 0, 16) == "page 3"


def overlap_scorer(query: str, texts: Sequence[str]) -> list[float]:
    """A stand-in scorer: the share of the query's words in each text."""
    wanted = set(query.lower().split())
    return [len(wanted & set(t.lower().split())) / len(wanted) for t in texts]


def select(mode: str, question: str, hits: list[Hit], **options: Any) -> Selection:
    step = SelectSentences(scorer=overlap_scorer, lexical_weight=0.0, **options)
    retrieval = RetrievalResult(query=question, corpus="docs", version=1, hits=hits)
    value = SelectInput(question=question, retrieval=retrieval, mode=mode)  # type: ignore[arg-type]
    return asyncio.run(step._execute(value))


PASSAGES = [
    hit("The sky is blue on clear days. Grass is green in spring.", chunk="a"),
    hit("The default port is 8000 for the server. Logs go to stderr always.", chunk="b"),
]


def test_extractive_answers_with_the_best_sentence_and_a_close_runner_up() -> None:
    chosen = select("extractive", "which port is the server default", PASSAGES)
    assert chosen.answer == "The default port is 8000 for the server."
    assert chosen.answer_sentences[0].chunk_id == "b" and chosen.answer_sentences[0].passage == 2
    assert not chosen.generate
    assert chosen.best_score == pytest.approx(4 / 6, abs=1e-4)  # "server." keeps its stop
    both = select("extractive", "which port is the server default", PASSAGES, margin=1.0)
    assert len(both.answer_sentences) == 2


def test_hybrid_gives_the_model_sentences_and_generative_whole_passages() -> None:
    hybrid = select("hybrid", "default port", PASSAGES, context_sentences=2)
    assert hybrid.generate
    assert hybrid.passages[0].text == "The default port is 8000 for the server."
    assert len(hybrid.passages) == 2 and hybrid.passages[0].source == "doc.md, line 10"
    generative = select("generative", "default port", PASSAGES)
    assert [p.text for p in generative.passages] == [h.text for h in PASSAGES]
    assert generative.sentences == [] and generative.best_score == 0.0


RAG = """
[stack]
name = "qa"
output = "cite"
[stack.input]
question = "string"
[models]
chat = "local:smollm2-135m"
[corpora]
docs = "docs@latest"
[prompts]
answer = "qa-answer@latest"
[settings]
answer = "{mode}"
[[steps]]
name = "retrieve"
kind = "retrieve"
corpus = "docs"
input = "input.question"
[[steps]]
name = "select"
kind = "select"
retrieval = "retrieve"
mode = "settings.answer"
[[steps]]
name = "answer"
kind = "llm"
when = "{when}"
prompt = "answer"
input = {{ question = "input.question", passages = "select.passages" }}
[[steps]]
name = "cite"
kind = "cite"
answer = "answer"
retrieval = "retrieve"
selection = "select"
"""


def test_the_manifest_checks_the_answer_mode_and_when() -> None:
    parse_manifest(RAG.format(mode="hybrid", when="select.generate"), Path("ok.toml"))
    with pytest.raises(ManifestError, match="settings.answer must be one of .* 'fast'"):
        parse_manifest(RAG.format(mode="fast", when="select.generate"), Path("m.toml"))
    with pytest.raises(ManifestError, match="when: 'later.x' refers to 'later'"):
        parse_manifest(RAG.format(mode="hybrid", when="later.x"), Path("m.toml"))
    bad_literal = RAG.format(mode="hybrid", when="select.generate").replace(
        'mode = "settings.answer"', 'mode = "quick"'
    )
    with pytest.raises(ManifestError, match="'quick' is not one of extractive"):
        parse_manifest(bad_literal, Path("m.toml"))
    no_answer = RAG.format(mode="hybrid", when="select.generate").replace('answer = "answer"\n', "")
    parse_manifest(no_answer, Path("m.toml"))  # a selection alone can be cited
    nothing = no_answer.replace('selection = "select"\n', "")
    with pytest.raises(ManifestError, match="needs an 'answer' or a 'selection'"):
        parse_manifest(nothing, Path("m.toml"))


def test_extractive_mode_skips_the_model_and_cites_sentence_lines(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora, spans_of: Any
) -> None:
    init_stack("ex", "rag", workspace, directory=stacks_dir, answer="extractive")
    stack = build_stack("ex", workspace)
    result = stack.invoke("Which environment variable chooses the workspace folder?")
    answer = result.output
    assert isinstance(answer, SourcedAnswer)
    assert not answer.refused and answer.extracted and answer.mode == "extractive"
    assert "SLMOPS_HOME" in answer.answer
    assert answer.citations[0].source.startswith("02-workspace.md, line")
    spans = spans_of(result.trace_id)
    assert "answer" not in spans  # the model never ran
    skipped = [e for e in spans["ex"]["events"] if e["name"] == "skipped"]
    assert skipped and skipped[0]["attributes"]["step"] == "answer"
    assert spans["select"]["attributes"]["slmops.select.best_score"] >= 0.5

    off_topic = stack.run("What is the capital of France?")
    assert off_topic.refused and off_topic.citations == []

    async def consume() -> tuple[list[str], Any]:
        finished: list[Any] = []
        pieces = [
            p
            async for p in stack.astream(
                "Which environment variable chooses the workspace folder?",
                on_finish=lambda output, _: finished.append(output),
            )
        ]
        return pieces, finished[0]

    pieces, streamed = asyncio.run(consume())
    assert pieces == [] and streamed.answer == answer.answer  # nothing to stream: sent whole


def test_calibration_sweeps_a_threshold_and_writes_it(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora
) -> None:
    init_stack("cal", "rag", workspace, directory=stacks_dir, answer="extractive")
    stack = build_stack("cal", workspace)
    with pytest.raises(Exception, match="unknown check 'speed'"):
        with_check_off(stack, "speed")
    opened, current = with_check_off(stack, "sentence")
    assert current == 0.5
    cite = next(n.step for n in opened.nodes if n.name == "cite")
    assert cite.min_score < -1e6  # type: ignore[attr-defined]
    assert next(n.step for n in stack.nodes if n.name == "cite").min_score == 0.5  # type: ignore[attr-defined]

    def case(question: str, reference: str | None) -> EvalCase:
        return EvalCase(input=question, reference=reference, answerable=reference is not None)

    cases = [
        CalibrationCase(case("q1", "blue"), 0.8, "The sky is blue.", False),
        CalibrationCase(case("q2", "green"), 0.6, "Grass is green.", False),
        CalibrationCase(case("q3", None), 0.4, "Something unrelated.", False),
        CalibrationCase(case("q4", None), None, "", True),
    ]
    rows = {row.threshold: row for row in sweep(cases, [0.0, 0.5, 0.7])}
    assert rows[0.0].refusal_correctness == 0.75 and rows[0.0].contains_answer == 1.0
    assert rows[0.5].refusal_correctness == 1.0 and rows[0.5].contains_answer == 1.0
    assert rows[0.7].contains_answer == 0.5 and rows[0.7].answered == 0.25
    result = calibration("sentence", 0.3, cases, [0.0, 0.5, 0.7])
    assert result.best.threshold == 0.5 and result.at_current.refusal_correctness == 0.75

    manifest = stack.manifest.path
    before = manifest.read_text()
    apply_threshold(manifest, "cite", "min_score", 0.42)
    after = manifest.read_text()
    assert "min_score = 0.42" in after and "min_score = 0.5" not in after
    assert after.count("\n") == before.count("\n")  # one line changed, comments kept
    assert build_stack("cal", workspace).manifest.step("cite").min_score == 0.42  # type: ignore[union-attr]
    apply_threshold(manifest, "cite", "min_relevance", 0.25)  # replaces the existing line
    apply_threshold(manifest, "select", "margin", 0.05)  # a key the table lacks is added
    reread = build_stack("cal", workspace).manifest
    assert reread.step("select").margin == 0.05  # type: ignore[union-attr]
    with pytest.raises(Exception, match="no \\[\\[steps\\]\\] table named 'nope'"):
        apply_threshold(manifest, "nope", "min_score", 0.1)


def test_the_answer_mode_of_init_is_checked(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="answer mode must be one of"):
        init_stack("x", "rag", workspace, directory=tmp_path, answer="smart")
    created = init_stack("y", "rag", workspace, directory=tmp_path, answer="generative")
    assert 'answer = "generative"' in created[0].path.read_text()


def test_the_cite_checks_name_why_an_answer_is_refused() -> None:
    cite = Cite(min_relevance=0.3, min_support=0.45, min_score=0.5)
    hits = [PASSAGES[0]]

    def why(answer: str, support: float = 0.9, extractive: float | None = None) -> str | None:
        return cite._refusal("what is the default port", answer, hits, 0.8, support, extractive)

    assert why("The default port is 8000.") is None
    assert why("Which port does the server use?") == "the answer is itself a question"
    assert "not supported" in (why("Port 8000.", support=0.2) or "")
    # an extracted sentence is checked on its score, not on support
    assert why("The default port is 8000.", support=0.2, extractive=0.7) is None
    assert "best sentence score 0.40 < 0.5" in (why("Port 8000 it is.", extractive=0.4) or "")
    assert "best relevance" in (cite._refusal("q", "a b", hits, 0.1, 0.9, None) or "")
    assert cite._refusal("q", "a b", [], 0.0, 0.0, None) == "retrieval found no passages"
    loose = cite.with_thresholds(min_score=0.1)
    assert loose.min_score == 0.1 and cite.min_score == 0.5
    with pytest.raises(Exception, match="unknown threshold"):
        cite.with_thresholds(min_speed=1.0)


HYBRID_WITH_A_FUNCTION = """
[stack]
name = "hy"
output = "cite"
[stack.input]
question = "string"
[corpora]
docs = "docs@latest"
[settings]
answer = "hybrid"
[[steps]]
name = "retrieve"
kind = "retrieve"
corpus = "docs"
input = "input.question"
[[steps]]
name = "select"
kind = "select"
retrieval = "retrieve"
mode = "settings.answer"
[[steps]]
name = "answer"
kind = "function"
when = "select.generate"
call = "writer:{function}"
input = "input.question"
[[steps]]
name = "cite"
kind = "cite"
answer = "answer"
retrieval = "retrieve"
selection = "select"
"""


def test_hybrid_falls_back_to_the_sentences_when_the_written_answer_fails(
    workspace: Workspace, stacks_dir: Path, handbook: Corpora
) -> None:
    folder = stacks_dir / "hy"
    folder.mkdir()
    (folder / "writer.py").write_text(
        "def ask_back(question: str) -> str:\n    return 'Which variable is it?'\n\n"
        "def good(question: str) -> str:\n"
        "    return 'The SLMOPS_HOME environment variable chooses the workspace folder.'\n"
    )
    question = "Which environment variable chooses the workspace folder?"
    (folder / "slmops.toml").write_text(HYBRID_WITH_A_FUNCTION.format(function="ask_back"))
    fallback = build_stack("hy", workspace).run(question)
    assert not fallback.refused and fallback.extracted and fallback.mode == "hybrid"
    assert "SLMOPS_HOME" in fallback.answer and fallback.answer != "Which variable is it?"
    assert fallback.citations[0].source.startswith("02-workspace.md, line")

    (folder / "slmops.toml").write_text(HYBRID_WITH_A_FUNCTION.format(function="good"))
    written = build_stack("hy", workspace).run(question)
    assert not written.refused and not written.extracted
    assert written.answer.startswith("The SLMOPS_HOME environment variable")
    # its sources: the given sentences that support it (narrowed to their lines) or passages
    assert written.citations and written.citations[0].source.startswith("02-workspace.md")
