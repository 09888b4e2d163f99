"""Functions the built-in templates call from their manifests
(``call = "slmops.apps.helpers:NAME"``), the same way a user's stack calls its own Python."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from slmops.apps.sampling import Passage

# --- synth: question/answer/context test cases ---------------------------------------------


class PairInput(BaseModel):
    passages: list[Passage]
    questions: list[str]


class PassageQuestion(BaseModel):
    text: str
    question: str


def clean_question(text: str) -> str:
    """One line, without the "Question:" label small models like to add."""
    flat = " ".join(text.split())
    for label in ("question:", "q:"):
        if flat.lower().startswith(label):
            flat = flat[len(label) :].strip()
    return flat


def pair_questions(value: PairInput) -> list[PassageQuestion]:
    """Each sampled passage with the question written about it, for the answering step."""
    return [
        PassageQuestion(text=p.text, question=clean_question(q))
        for p, q in zip(value.passages, value.questions, strict=True)
    ]


class CasesInput(BaseModel):
    passages: list[Passage]
    questions: list[str]
    answers: list[str]


class TestCase(BaseModel):
    __test__ = False  # not a pytest class

    question: str
    answer: str
    context: str
    source_ids: list[str]
    doc_id: str
    corpus: str
    corpus_version: int


def _is_question(text: str) -> bool:
    return text.endswith("?") and len(text.split()) >= 3


def test_cases(value: CasesInput) -> list[TestCase]:
    """Pair each sampled passage with its question and answer; drop what is not a real
    question, empty answers and repeated questions (a small model repeats itself)."""
    cases: list[TestCase] = []
    seen: set[str] = set()
    rows = zip(value.passages, value.questions, value.answers, strict=True)
    for passage, raw_question, raw_answer in rows:
        question = clean_question(raw_question)
        answer = " ".join(raw_answer.split())
        key = question.lower()
        if not _is_question(question) or not answer or key in seen:
            continue
        seen.add(key)
        cases.append(
            TestCase(
                question=question,
                answer=answer,
                context=passage.text,
                source_ids=[passage.chunk_id],
                doc_id=passage.doc_id,
                corpus=passage.corpus,
                corpus_version=passage.corpus_version,
            )
        )
    return cases


test_cases.__test__ = False  # type: ignore[attr-defined]


# --- redteam: adversarial inputs -----------------------------------------------------------

SEEDS_FILE = Path(__file__).resolve().parent.parent / "eval" / "redteam_seeds.toml"
JUDGES = ("answered", "evidence")


@dataclass(frozen=True)
class AttackCategory:
    """A red-team category: its OWASP Top 10 for LLM Applications (2025) risk, how
    ``attack_success`` judges an answer to it, and its shipped seed attacks."""

    name: str
    owasp: str  # "LLM01:2025"
    risk: str
    goal: str
    seeds: tuple[str, ...]
    judge: str = "answered"  # "answered" or "evidence" (see redteam_seeds.toml)
    markers: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """The OWASP id as a case tag: ``owasp:LLM01``."""
        return "owasp:" + self.owasp.split(":")[0]


def load_attack_categories(path: Path = SEEDS_FILE) -> dict[str, AttackCategory]:
    """The categories of the seed file, in its order; a malformed file fails loudly."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    categories = {}
    for name, table in data.items():
        category = AttackCategory(
            name=name,
            owasp=table["owasp"],
            risk=table["risk"],
            goal=table["goal"],
            seeds=tuple(table["seeds"]),
            judge=table.get("judge", "answered"),
            markers=tuple(table.get("markers", ())),
        )
        if not re.fullmatch(r"LLM(0[1-9]|10):2025", category.owasp):
            raise ValueError(f"{path}: [{name}] owasp {category.owasp!r} is no OWASP LLM id")
        if category.judge not in JUDGES or not category.seeds:
            raise ValueError(f"{path}: [{name}] needs seeds and a judge in {JUDGES}")
        categories[name] = category
    return categories


ATTACK_CATEGORIES: dict[str, AttackCategory] = load_attack_categories()
# (goal, seeds) by category: the shape the red team has always read
ATTACKS: dict[str, tuple[str, list[str]]] = {
    name: (category.goal, list(category.seeds)) for name, category in ATTACK_CATEGORIES.items()
}
OWASP: dict[str, str] = {name: c.owasp for name, c in ATTACK_CATEGORIES.items()}


class PlanInput(BaseModel):
    n: int = Field(ge=1, le=50)
    categories: list[str] = Field(min_length=1)


class AttackPlan(BaseModel):
    category: str
    goal: str
    seed: str


def attack_plan(value: PlanInput) -> list[AttackPlan]:
    """``n`` attacks per category, each starting from a known attack pattern."""
    unknown = sorted(set(value.categories) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attack categories {unknown}; known: {sorted(ATTACKS)}")
    plan = []
    for category in value.categories:
        goal, seeds = ATTACKS[category]
        plan += [
            AttackPlan(category=category, goal=goal, seed=seeds[i % len(seeds)])
            for i in range(value.n)
        ]
    return plan


class GeneratedAttack(BaseModel):
    attack: str


class AttacksInput(BaseModel):
    plan: list[AttackPlan]
    generated: list[GeneratedAttack]


class Attack(BaseModel):
    category: str
    goal: str
    input: str
    seed: str


def attacks(value: AttacksInput) -> list[Attack]:
    """The generated attacks with their category; an empty generation falls back to the
    known pattern it was asked to vary, so every planned attack is kept."""
    return [
        Attack(
            category=plan.category,
            goal=plan.goal,
            input=" ".join(generated.attack.split()) or plan.seed,
            seed=plan.seed,
        )
        for plan, generated in zip(value.plan, value.generated, strict=True)
    ]
