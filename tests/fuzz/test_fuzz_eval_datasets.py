"""Fuzzing evaluation datasets (JSONL test cases) and SQuAD files: cases or DatasetError, and
a dataset add that fails leaves no trace (no version row, no file)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmops.data.documents import UnusableFileError, load_file, normalize
from slmops.eval.datasets import DatasetError, Datasets, EvalCase, read_cases
from slmops.eval.squad import SquadSet, read_squad
from slmops.store import Workspace
from tests.fuzz.support import (
    NAMES,
    ODD_TEXT,
    SCALARS,
    deeply_nested_json,
    files_under,
    json_values,
    jsonl_line,
    mostly,
    parses_or_fails,
)

TEXT = st.one_of(st.text(max_size=20), ODD_TEXT)
WORDS = st.text(min_size=1, max_size=12).filter(str.strip)
ANY = json_values()
STRINGS = mostly(st.lists(WORDS, max_size=3), st.lists(st.one_of(TEXT, SCALARS), max_size=3))
CASE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": mostly(st.one_of(WORDS, st.just("same")), st.one_of(TEXT, SCALARS)),
    "input": mostly(
        st.one_of(WORDS, st.dictionaries(WORDS, WORDS, min_size=1, max_size=3)),
        st.one_of(TEXT, st.dictionaries(TEXT, ANY, max_size=3), ANY),
    ),
    "reference": mostly(st.one_of(WORDS, st.none()), ANY),
    "alternatives": mostly(STRINGS, ANY),
    "reference_ids": mostly(STRINGS, ANY),
    "context": mostly(WORDS, ANY),
    "answerable": mostly(st.booleans(), ANY),
    "adversarial": mostly(st.booleans(), ANY),
    "category": mostly(st.one_of(WORDS, st.none()), ANY),
    "tags": mostly(STRINGS, ANY),
    "metadata": mostly(st.dictionaries(TEXT, ANY, max_size=3), ANY),
    "unknown": ANY,
}


@st.composite
def case_objects(draw: st.DrawFn) -> Any:
    """A JSON value for one line: mostly a case-shaped object (some fields wrong), else
    anything."""
    if draw(st.integers(0, 9)) == 9:
        return draw(ANY)
    keys = draw(
        st.lists(st.sampled_from(sorted(set(CASE_FIELDS) - {"unknown"})), max_size=5, unique=True)
    )
    if draw(st.integers(0, 9)) == 9:
        keys.append("unknown")
    case = {key: draw(CASE_FIELDS[key]) for key in keys}
    if "input" not in case and draw(st.integers(0, 5)):
        case["input"] = draw(WORDS)
    return case


RAW_LINES = st.one_of(
    st.sampled_from(
        [
            "",
            "   ",
            "{",
            "null",
            "[]",
            '{"input": "a"} trailing',
            '{"input": "\\ud800"}',  # a lone surrogate escape
            '{"input": "a", "metadata": {"x": NaN}}',
            '{"input": "a", "metadata": {"x": Infinity}}',
            '{"input": "a", "metadata": {"x": ' + "1" * 5000 + "}}",
            '{"input": "a", "metadata": ' + deeply_nested_json(5000) + "}",
            '{"input": "a", "input": "b"}',
        ]
    ),
    st.text(max_size=40),
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(mostly(case_objects().map(jsonl_line), RAW_LINES), min_size=1, max_size=3)
    )
    data = "\n".join(lines).encode("utf-8")
    if draw(st.integers(0, 9)) == 9:  # not UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
    return data


def _store(workspace: Workspace, name: str, cases: list[EvalCase]) -> None:
    """Add the cases: a version that reads back as stored, or DatasetError and nothing new."""
    datasets = Datasets(workspace)
    before = (datasets.names(), files_under(workspace.home))
    result = parses_or_fails(datasets.add, name, cases, error=DatasetError)
    if isinstance(result, DatasetError):
        assert (datasets.names(), files_under(workspace.home)) == before, str(result)
        return
    version, _ = result
    _, stored = datasets.cases(version.ref)
    assert [c.model_dump(mode="json") for c in stored] == [c.model_dump(mode="json") for c in cases]


@given(jsonl_files(), NAMES)
@example(b'{"input": "\\ud800"}', "fuzz")
@example(b'{"input": "a", "metadata": {"x": NaN}}', "fuzz")  # was stored: NaN is not JSON
@example(b'{"input": {"q": Infinity}}', "fuzz")
@example(b'{"id": "same", "input": "a"}\n{"id": "same", "input": "b"}', "fuzz")
@example(b'{"input": "a"}', "fuzz\n")
@example('{"input": "a\u2028b", "tags": ["\u0085"]}'.encode(), "fuzz")  # was unreadable once stored
def test_case_files(workspace: Workspace, content: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cases.jsonl"
        path.write_bytes(content)
        result = parses_or_fails(read_cases, path, error=DatasetError)
    if isinstance(result, DatasetError):
        assert str(path) in str(result), str(result)
        return
    _store(workspace, name, result)


def test_cases_with_line_separators_read_back(workspace: Workspace) -> None:
    """Regression: a case holding U+2028 (or U+0085, U+001E) was stored, then cut in two by
    str.splitlines() when read back: the version could never be used."""
    cases = [EvalCase(input="a\u2028b", reference="c\u0085d", tags=["e\u001ef"])]
    version, _ = Datasets(workspace).add("seps", cases)
    assert Datasets(workspace).cases(version.ref)[1] == cases


def test_non_finite_numbers_are_refused() -> None:
    """Regression: NaN and Infinity (which JSON does not have) were stored in a dataset, and
    written out again as invalid JSON."""
    for line in ('{"input": "a", "metadata": {"x": NaN}}', '{"input": {"q": [1, -Infinity]}}'):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "cases.jsonl"
            path.write_text(line, encoding="utf-8")
            error = parses_or_fails(read_cases, path, error=DatasetError)
        assert isinstance(error, DatasetError) and "line 1" in str(error), error
        assert "not a finite number" in str(error), error


# --- SQuAD ------------------------------------------------------------------------------------

ANSWER = mostly(
    st.fixed_dictionaries({"text": WORDS}), st.one_of(ANY, st.fixed_dictionaries({"text": TEXT}))
)
QUESTION = mostly(
    st.fixed_dictionaries(
        {
            "id": mostly(WORDS, st.one_of(TEXT, st.just("q1"))),
            "question": mostly(WORDS, TEXT),
            "answers": st.lists(ANSWER, min_size=1, max_size=2),
        },
        optional={"is_impossible": mostly(st.booleans(), ANY), "plausible_answers": ANY},
    ),
    ANY,
)
PARAGRAPH = mostly(
    st.fixed_dictionaries(
        {"context": mostly(WORDS, TEXT), "qas": st.lists(QUESTION, min_size=1, max_size=3)}
    ),
    ANY,
)
ARTICLE = mostly(
    st.fixed_dictionaries(
        {"paragraphs": st.lists(PARAGRAPH, min_size=1, max_size=2)},
        optional={"title": mostly(TEXT, ANY)},
    ),
    ANY,
)
SQUAD = mostly(
    st.fixed_dictionaries(
        {"data": st.lists(ARTICLE, min_size=1, max_size=2)}, optional={"version": mostly(TEXT, ANY)}
    ),
    ANY,
)


@given(SQUAD, st.sampled_from([None, 1, 2]))
@example({"data": [{"title": "\ud800", "paragraphs": [{"context": "c", "qas": []}]}]}, None)
@example(
    {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "a\u2028b",
                        "qas": [{"id": "q", "question": "?", "answers": [{"text": "a"}]}],
                    }
                ]
            }
        ]
    },
    None,
)  # the corpus file was cut in two at the U+2028 when ingested
@example({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "?"}]}]}]}, 1)
def test_squad_files(workspace: Workspace, squad: Any, limit: int | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "squad.json"
        path.write_text(jsonl_line(squad), encoding="utf-8")
        result = parses_or_fails(
            read_squad, path, documents_file="squad.jsonl", limit=limit, error=DatasetError
        )
        if isinstance(result, SquadSet):
            # What `slmops eval import-squad` does next: write the corpus, store the cases.
            written = result.write_documents(Path(folder) / "squad.jsonl")
            documents = parses_or_fails(load_file, written, "squad.jsonl", error=UnusableFileError)
            if isinstance(documents, UnusableFileError):  # only when no paragraph has text
                assert str(documents) == "no text in it"
                assert not any(normalize(d["text"]).strip() for d in result.documents)
            else:
                assert {d.doc_id for d in documents} <= {
                    f"squad.jsonl#{d['id']}" for d in result.documents
                }
            assert result.cases and (limit is None or len(result.cases) <= limit)
            _store(workspace, "squad", result.cases)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff", b"[]", b'{"data": 1}', b"{}" * 3])
def test_squad_files_that_are_not_squad(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "squad.json"
    path.write_bytes(content)
    error = parses_or_fails(read_squad, path, documents_file="squad.jsonl", error=DatasetError)
    assert isinstance(error, DatasetError) and str(path) in str(error)
