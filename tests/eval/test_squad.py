"""SQuAD-format files become a corpus of paragraphs and cases scored against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slmops.eval.datasets import DatasetError
from slmops.eval.squad import read_squad

SQUAD_V2: dict[str, Any] = {
    "version": "v2.0",
    "data": [
        {
            "title": "Lighthouse keeping",
            "paragraphs": [
                {
                    "context": "The Skerry lighthouse was lit in 1872. Its keeper, Ana Brodie, "
                    "trimmed the wicks every four hours through the night.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "When was the Skerry lighthouse lit?",
                            "answers": [
                                {"text": "1872", "answer_start": 33},
                                {"text": "in 1872", "answer_start": 30},
                                {"text": "1872", "answer_start": 33},
                            ],
                            "is_impossible": False,
                        },
                        {
                            "id": "q2",
                            "question": "Who painted the Skerry lighthouse?",
                            "answers": [],
                            "plausible_answers": [{"text": "Ana Brodie", "answer_start": 51}],
                            "is_impossible": True,
                        },
                    ],
                },
                {
                    "context": "Fog signals replaced the bell in 1901; a diaphone sounded twice "
                    "a minute.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "How often did the diaphone sound?",
                            "answers": [{"text": "twice a minute", "answer_start": 60}],
                        }
                    ],
                },
            ],
        }
    ],
}


def write(tmp_path: Path, data: Any, name: str = "squad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_paragraphs_become_documents_and_questions_cases(tmp_path: Path) -> None:
    squad = read_squad(write(tmp_path, SQUAD_V2), documents_file="light.jsonl")
    assert [d["id"] for d in squad.documents] == ["Lighthouse_keeping-0", "Lighthouse_keeping-1"]
    first, impossible, third = squad.cases
    assert first.id == "q1" and first.input == "When was the Skerry lighthouse lit?"
    assert first.reference == "1872" and first.alternatives == ["in 1872"]  # duplicates dropped
    assert first.reference_ids == ["light.jsonl#Lighthouse_keeping-0"]
    assert impossible.answerable is False and impossible.reference is None
    assert third.reference_ids == ["light.jsonl#Lighthouse_keeping-1"]
    assert read_squad(write(tmp_path, SQUAD_V2), documents_file="x.jsonl", limit=1).cases == [
        read_squad(write(tmp_path, SQUAD_V2), documents_file="x.jsonl").cases[0]
    ]
    written = squad.write_documents(tmp_path / "light.jsonl").read_text().splitlines()
    assert json.loads(written[1])["text"].startswith("Fog signals")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"articles": []}, "is not a SQuAD file: data: Field required"),
        ({"data": [{"paragraphs": [{"context": "c"}]}]}, "data.0.paragraphs.0.qas: Field required"),
        (
            {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q?"}]}]}]},
            "question 'a' has no answer and is not is_impossible",
        ),
        ({"data": [{"paragraphs": [{"context": "c", "qas": []}]}]}, "holds no question"),
    ],
)
def test_a_file_that_is_not_squad_says_why(
    tmp_path: Path, data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(DatasetError, match=problem):
        read_squad(write(tmp_path, data), documents_file="d.jsonl")


def test_repeated_question_ids_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    qa = {"id": "same", "question": "q?", "answers": [{"text": "a"}]}
    twice = {"data": [{"paragraphs": [{"context": "c", "qas": [qa, qa]}]}]}
    with pytest.raises(DatasetError, match="question id 'same' appears twice"):
        read_squad(write(tmp_path, twice), documents_file="d.jsonl")
    with pytest.raises(DatasetError, match="cannot read"):
        read_squad(tmp_path / "missing.json", documents_file="d.jsonl")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="is not a SQuAD file"):
        read_squad(tmp_path / "broken.json", documents_file="d.jsonl")
