"""Datasets written by a model: test cases synthesized from a corpus, and red-team attacks
aimed at a stack. The CLI commands (`eval synth`, `eval redteam`) and pipeline steps call
these; each stores its cases as a dataset version (identical cases: no new version)."""

from __future__ import annotations

from dataclasses import dataclass

from slmops.apps.build import build_stack
from slmops.apps.helpers import ATTACKS, TestCase
from slmops.apps.templates import CreatedStack, ensure_workspace_stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.eval.attacks import attack_cases
from slmops.eval.datasets import Datasets, DatasetVersion, EvalCase
from slmops.store.workspace import Workspace


@dataclass(frozen=True)
class GeneratedDataset:
    version: DatasetVersion
    created: bool  # False: identical to the latest version, none committed
    summary: str  # what was kept and dropped, for a person
    trace_id: str
    new_stack: CreatedStack | None  # the workspace stack written for this the first time, if any


def synth_cases(outputs: list[TestCase]) -> list[EvalCase]:
    return [
        EvalCase(
            input=case.question,
            reference=case.answer,
            reference_ids=case.source_ids,
            context=case.context,
            tags=["synth"],
            metadata={
                "doc_id": case.doc_id,
                "corpus": case.corpus,
                "corpus_version": case.corpus_version,
            },
        )
        for case in outputs
    ]


def synthesize(
    workspace: Workspace, corpus: str, *, n: int, dataset: str | None = None
) -> GeneratedDataset:
    """Write ``n`` question/answer/context cases from ``corpus`` with the synth stack (created
    in the workspace the first time) and store them as a version of ``dataset``
    (default CORPUS-synth)."""
    name = dataset or f"{corpus}-synth"
    stack_name = f"synth-{corpus}"
    created = ensure_workspace_stack(stack_name, "synth", workspace, corpus=corpus)
    stack = build_stack(stack_name, workspace)
    with use_runtime(Runtime.from_workspace(workspace)):
        result = stack.invoke({"n": n})
    cases = synth_cases(result.output)
    version, committed = Datasets(workspace).add(
        name,
        cases,
        message=f"synth from {corpus}, trace {result.trace_id[:12]}",
        source="synth",
    )
    return GeneratedDataset(
        version,
        committed,
        f"{len(cases)} of {n} kept (empty or repeated questions dropped)",
        result.trace_id,
        created,
    )


def write_attacks(
    workspace: Workspace, target: str, *, n: int, dataset: str | None = None
) -> GeneratedDataset:
    """The shipped seed attacks plus ``n`` generated per category aimed at stack ``target``
    (the redteam stack is created in the workspace the first time), cleaned and stored as a
    version of ``dataset`` (default TARGET-redteam)."""
    victim = build_stack(target, workspace)
    name = dataset or f"{victim.stack_name}-redteam"
    stack_name = f"redteam-{victim.stack_name}"
    description = victim.description or f"the app stack {victim.stack_name}"
    created = ensure_workspace_stack(stack_name, "redteam", workspace, target=description)
    attacker = build_stack(stack_name, workspace)
    with use_runtime(Runtime.from_workspace(workspace)):
        result = attacker.invoke({"n": n})
    categories = attacker.manifest.manifest.settings.get("categories") or list(ATTACKS)
    cleaned = attack_cases(result.output, [c for c in categories if c in ATTACKS])
    version, committed = Datasets(workspace).add(
        name, cleaned.cases, message=f"redteam against {victim.stack_name}", source="redteam"
    )
    return GeneratedDataset(version, committed, cleaned.summary(), result.trace_id, created)
