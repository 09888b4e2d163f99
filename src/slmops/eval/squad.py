"""SQuAD-format question answering sets (v1.1 and v2.0) as a corpus plus eval cases.

A SQuAD file holds articles of paragraphs (``context``), each with questions and the answer
spans crowd workers marked. For a retrieval-augmented stack the paragraphs become the
corpus (one JSONL document each, so retrieval is scored against the paragraph a question
was written on) and the questions become cases: the first answer is the reference, the
other distinct answers are accepted alternatives, and v2.0's unanswerable questions are
cases the stack should refuse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from slmops.eval.datasets import DatasetError, EvalCase


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SQuAD variants add fields of their own


class SquadAnswer(_Lenient):
    text: str


class SquadQuestion(_Lenient):
    id: str
    question: str
    answers: list[SquadAnswer] = []
    is_impossible: bool = False

    @model_validator(mode="after")
    def _complete(self) -> SquadQuestion:
        if not self.question.strip():
            raise ValueError(f"question {self.id!r} is empty")
        if not self.is_impossible and not any(a.text.strip() for a in self.answers):
            raise ValueError(f"question {self.id!r} has no answer and is not is_impossible")
        return self


class SquadParagraph(_Lenient):
    context: str
    qas: list[SquadQuestion]


class SquadArticle(_Lenient):
    title: str = ""
    paragraphs: list[SquadParagraph]


class SquadFile(_Lenient):
    version: str | None = None
    data: list[SquadArticle]


@dataclass(frozen=True)
class SquadSet:
    """The paragraphs as JSONL documents (``id``, ``title``, ``text``) and the cases."""

    documents: list[dict[str, str]]
    cases: list[EvalCase]

    def write_documents(self, path: Path) -> Path:
        """The corpus file to ingest; its name is part of every reference id."""
        lines = [json.dumps(document, ensure_ascii=False) for document in self.documents]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", title).strip("_") or "article"


def read_squad(path: Path, *, documents_file: str, limit: int | None = None) -> SquadSet:
    """Read a SQuAD JSON file. Reference ids name documents of ``documents_file`` (the JSONL
    file the paragraphs will be ingested from). ``limit`` keeps the first questions only;
    every paragraph stays in the corpus, so the others are distractors for retrieval."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    try:
        squad = SquadFile.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "file"
        problem = error["msg"].removeprefix("Value error, ")
        raise DatasetError(f"{path} is not a SQuAD file: {where}: {problem}") from None

    documents: list[dict[str, str]] = []
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for article in squad.data:
        for number, paragraph in enumerate(article.paragraphs):
            key = f"{_slug(article.title)}-{number}"
            documents.append({"id": key, "title": article.title, "text": paragraph.context})
            for qa in paragraph.qas:
                if qa.id in seen:
                    raise DatasetError(f"{path}: question id {qa.id!r} appears twice")
                seen.add(qa.id)
                answers = list(dict.fromkeys(a.text.strip() for a in qa.answers if a.text.strip()))
                cases.append(
                    EvalCase(
                        id=qa.id,
                        input=qa.question.strip(),
                        reference=None if qa.is_impossible else answers[0],
                        alternatives=[] if qa.is_impossible else answers[1:],
                        reference_ids=[f"{documents_file}#{key}"],
                        context=paragraph.context,
                        answerable=not qa.is_impossible,
                        tags=["squad"],
                        metadata={"title": article.title},
                    )
                )
    if not cases:
        raise DatasetError(f"{path} holds no question")
    return SquadSet(documents, cases[:limit] if limit else cases)
