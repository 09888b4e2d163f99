"""Versioned evaluation datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmops.errors import NotFoundError
from slmops.eval.datasets import DatasetError, Datasets, EvalCase, cases_from, read_cases
from slmops.store import Workspace


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_versions_log_and_identical_adds(workspace: Workspace, tmp_path: Path) -> None:
    datasets = Datasets(workspace)
    first = read_cases(
        write(
            tmp_path / "qa.jsonl",
            '{"input": "How long do refunds take?", "reference": "Five days", "tags": ["refunds"]}',
            '{"id": "france", "input": "Capital of France?", "answerable": false}',
        )
    )
    v1, created = datasets.add("qa", first, message="first")
    assert created and v1.ref == "qa@1" and v1.cases == 2 and v1.source == "file"
    assert datasets.add("qa", first) == (v1, False)  # identical: no new version
    v2, _ = datasets.add("qa", first[:1], message="fewer", source="synth")
    assert [v.version for v in datasets.log("qa")] == [2, 1]
    version, cases = datasets.cases("qa@1")
    assert version == v1 and cases == first
    assert cases[1].id == "france" and not cases[1].answerable
    assert cases[0].id == EvalCase(input="How long do refunds take?").id  # stable content id
    assert datasets.cases("qa")[0] == v2
    assert datasets.names() == ["qa"]


def test_bad_lines_are_named(tmp_path: Path) -> None:
    bad_json = write(tmp_path / "a.jsonl", '{"input": "ok"}', "{not json")
    with pytest.raises(DatasetError, match=r"a.jsonl, line 2: not valid JSON"):
        read_cases(bad_json)
    unknown = write(tmp_path / "b.jsonl", '{"input": "ok", "answer": "x"}')
    with pytest.raises(DatasetError, match=r"line 1: answer: Extra inputs are not permitted"):
        read_cases(unknown)
    empty_input = write(tmp_path / "c.jsonl", '{"input": "  "}')
    with pytest.raises(DatasetError, match=r"line 1: .*input is empty"):
        read_cases(empty_input)
    with pytest.raises(DatasetError, match="holds no test case"):
        read_cases(write(tmp_path / "d.jsonl", ""))
    with pytest.raises(DatasetError, match="cannot read"):
        read_cases(tmp_path / "missing.jsonl")


def test_refusals(workspace: Workspace) -> None:
    datasets = Datasets(workspace)
    with pytest.raises(DatasetError, match="dataset name 'Bad Name'"):
        datasets.add("Bad Name", [EvalCase(input="q")])
    with pytest.raises(DatasetError, match="ids must be unique"):
        datasets.add("dup", [EvalCase(id="a", input="q"), EvalCase(id="a", input="r")])
    with pytest.raises(NotFoundError, match="no dataset named 'nope'"):
        datasets.cases("nope")
    datasets.add("one", cases_from([{"input": "q"}]))
    with pytest.raises(NotFoundError, match="has no version 3"):
        datasets.cases("one@3")


def test_a_tampered_file_is_detected(workspace: Workspace) -> None:
    datasets = Datasets(workspace)
    version, _ = datasets.add("qa", [EvalCase(input="q")])
    path = Path(version.uri)
    path.write_text(path.read_text().replace('"q"', '"changed"'))
    with pytest.raises(DatasetError, match="does not match its checksum"):
        datasets.cases("qa@1")
