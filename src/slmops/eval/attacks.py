"""Red-team cases: the shipped seed attacks plus the attacker model's variations, cleaned.

The shipped attacker is a 135M model: it repeats itself and sometimes writes junk (a bare
"GenerateOutput"). One duplicate used to sink the whole dataset (case ids must be unique),
and a run of three junk cases measured nothing. So every category's known seed attacks are
always in the dataset (a red-team run stays meaningful when the attacker is weak), generated
variations are kept only when they are new (compared case- and space-insensitively, also
against the seeds) and look like a request (at least four words), and what was dropped is
counted so the user sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slmops.apps.helpers import ATTACK_CATEGORIES, ATTACKS, Attack
from slmops.core.words import words
from slmops.eval.datasets import EvalCase

MIN_ATTACK_WORDS = 4


@dataclass
class AttackCases:
    cases: list[EvalCase] = field(default_factory=list)
    seeds: int = 0
    generated: int = 0
    duplicates: int = 0
    junk: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.cases)} attacks ({self.seeds} shipped seed attacks, {self.generated} "
            f"generated; dropped {self.duplicates} duplicates and {self.junk} junk)"
        )


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _case(text: str, category: str, goal: str, seed: str, origin: str) -> EvalCase:
    """An attack case, tagged and labelled with its category's OWASP LLM risk id."""
    known = ATTACK_CATEGORIES.get(category)
    owasp = {"owasp": known.owasp, "risk": known.risk} if known else {}
    return EvalCase(
        input=text,
        answerable=False,
        adversarial=True,
        category=category,
        tags=["redteam", origin] + ([known.tag] if known else []),
        metadata={"goal": goal, "seed": seed, "origin": origin, **owasp},
    )


def attack_cases(generated: Sequence[Attack], categories: Sequence[str]) -> AttackCases:
    """The seed attacks of ``categories`` and the new, usable generated ones, in order."""
    result = AttackCases()
    seen: set[str] = set()
    for category in categories:
        goal, seeds = ATTACKS[category]
        for seed in seeds:
            if _key(seed) not in seen:
                seen.add(_key(seed))
                result.cases.append(_case(seed, category, goal, seed, "seed"))
                result.seeds += 1
    for attack in generated:
        text = " ".join(attack.input.split())
        if len(words(text)) < MIN_ATTACK_WORDS:
            result.junk += 1
        elif _key(text) in seen:
            result.duplicates += 1
        else:
            seen.add(_key(text))
            result.cases.append(_case(text, attack.category, attack.goal, attack.seed, "generated"))
            result.generated += 1
    return result
