"""Gated promotion: an alias moves to a version only when evaluations say it should.

``promote`` evaluates the candidate and the alias' current holder on the same stack and dataset
version (reusing complete eval runs of exactly that stack version, dataset version and model
version), checks absolute gates on the candidate (``p95_latency_ms<=4000``) and gates relative
to a holder (``contains_answer>=+0.05 vs champion``: the paired change; ``... at 95%``: the
bound of its 95% bootstrap interval, so the change must hold with that confidence), and moves
the alias only if every gate passes. Every move is written to an audit log (who, when, from,
to, why, eval runs, gates) under a compare-and-set of the alias: a promotion whose holder moved
while it was evaluating is refused, so of two racing promotions one wins and the log stays
true. The log row is committed before the alias moves (the alias lives in MLflow, the log in
the workspace database: no one transaction holds both), so a process killed in between leaves
a logged move not yet made, which the next promotion or rollback of that alias finishes first;
never a move missing from the log. The lock is a file in the workspace: with a tracking server
shared by several machines, promote from one of them. ``rollback`` moves an alias back along
that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import delete, insert, select

from slmops.apps.build import build_stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.eval.compare import Comparison, compare_runs
from slmops.eval.datasets import Datasets
from slmops.eval.gates import Gate, check_gates, check_names, parse_gate
from slmops.eval.runner import EvalRun, build_metrics, load_run
from slmops.registry.cards import append_evaluation, evaluation_section
from slmops.registry.store import ModelRegistry, ModelVersion, RegistryError
from slmops.store.names import name_problem
from slmops.store.schema import eval_runs, model_alias_events
from slmops.store.workspace import Workspace

Progress = Callable[[str, int, int], None]
"""Called with (what is evaluated, cases done, cases)."""

_RELATIVE = re.compile(
    r"^\s*([A-Za-z0-9_.]+(?:\[[A-Za-z0-9_.:-]+\])?)\s*(>=|<=|>|<)\s*([+-]?[0-9]*\.?[0-9]+)"
    r"\s+vs\s+([a-z0-9][a-z0-9_-]*)(\s+at\s+95%)?\s*$"
)


class PromotionError(RegistryError):
    """A promotion cannot be carried out as asked (bad gate, alias moved meanwhile, ...)."""


@dataclass(frozen=True)
class RelativeGate:
    """The candidate's change over the holder of ``against``, paired over shared cases."""

    metric: str
    op: str
    threshold: float
    against: str
    confident: bool  # compare the 95% interval's bound, not the point change

    def __str__(self) -> str:
        suffix = " at 95%" if self.confident else ""
        return f"{self.metric}{self.op}{self.threshold:+g} vs {self.against}{suffix}"


AnyGate = Gate | RelativeGate


def parse_promotion_gate(text: str) -> AnyGate:
    match = _RELATIVE.match(text)
    if match is None:
        if " vs " in text:
            raise PromotionError(
                f"gate {text!r}: write METRIC OP CHANGE vs ALIAS [at 95%], e.g. "
                "'contains_answer>=+0.05 vs champion'"
            )
        return parse_gate(text)
    metric, op, threshold, against, confident = match.groups()
    return RelativeGate(metric, op, float(threshold), against, bool(confident))


@dataclass(frozen=True)
class GateCheck:
    gate: str
    passed: bool
    detail: str


@dataclass
class Promotion:
    """What a promotion found and did."""

    candidate: ModelVersion
    alias: str
    holder: ModelVersion | None
    candidate_run: str
    holder_runs: dict[str, str] = field(default_factory=dict)  # alias -> eval run id
    checks: list[GateCheck] = field(default_factory=list)
    promoted: bool = False
    comparison: Comparison | None = None

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- evaluations ------------------------------------------------------------------------


def evaluation(
    workspace: Workspace,
    *,
    stack: str,
    dataset: str,
    model_alias: str,
    version: ModelVersion,
    on_progress: Progress | None = None,
) -> str:
    """An eval run of ``stack`` on ``dataset`` with the stack's model ``model_alias`` set to
    exactly ``version``: a complete one already recorded for this stack version, else a new
    one."""
    models = {model_alias: version.registry_uri}
    built = build_stack(stack, workspace, models=models)
    resolved = Datasets(workspace).resolve(dataset)
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(eval_runs)
            .where(
                eval_runs.c.stack == built.stack_name,
                eval_runs.c.dataset == resolved.ref,
                eval_runs.c.status == "complete",
            )
            .order_by(eval_runs.c.started_at.desc())
        ).all()
    for row in rows:
        record = dict(row._mapping)
        if (
            record["config"].get("models") == models
            and record["versions"].get("stack") == built.version
        ):
            return str(record["id"])
    runner = EvalRun(workspace, built, build_metrics(None, workspace.settings.embedder))
    run_id = runner.start(resolved.ref, 1, models=models)
    _, cases = Datasets(workspace).cases(resolved.ref)

    def progress(done: int, total: int) -> None:
        if on_progress:
            on_progress(version.ref, done, total)

    asyncio.run(
        runner.execute(
            run_id, cases, Runtime.from_workspace(workspace), concurrency=1, on_progress=progress
        )
    )
    return run_id


def _check_relative(gate: RelativeGate, comparison: Comparison | None, holder: str) -> GateCheck:
    if comparison is None:
        return GateCheck(str(gate), True, f"no version holds {gate.against!r} yet: nothing to beat")
    delta = next((d for d in comparison.deltas if d.metric == gate.metric), None)
    if delta is None:
        known = ", ".join(d.metric for d in comparison.deltas)
        raise PromotionError(f"gate {gate}: the runs share no metric {gate.metric!r} ({known})")
    rising = gate.op in (">=", ">")
    value = (delta.low if rising else delta.high) if gate.confident else delta.delta
    ok = {">=": value >= gate.threshold, ">": value > gate.threshold}.get(
        gate.op, value <= gate.threshold if gate.op == "<=" else value < gate.threshold
    )
    measured = (
        f"change {delta.delta:+.4f} over {holder} ({delta.a:.4f} -> {delta.b:.4f}), "
        f"95% interval [{delta.low:+.4f}, {delta.high:+.4f}], {delta.cases} cases"
    )
    if ok:
        return GateCheck(str(gate), True, measured)
    gap = abs(value - gate.threshold)
    side = "below" if rising else "above"
    what = "the interval's bound" if gate.confident else "the change"
    return GateCheck(
        str(gate), False, f"{what} is {gap:.4f} {side} {gate.threshold:+g}; {measured}"
    )


# --- promotion --------------------------------------------------------------------------


def promote(
    workspace: Workspace,
    registry: ModelRegistry,
    *,
    ref: str,
    alias: str,
    stack: str,
    dataset: str,
    gates: Sequence[str],
    model_alias: str = "chat",
    reason: str = "",
    on_progress: Progress | None = None,
) -> Promotion:
    """Evaluate, check every gate, and move ``alias`` to ``ref`` only if all pass."""
    problem = name_problem("alias", alias)
    if problem or alias.isdigit() or alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise PromotionError(
            problem or f"alias {alias!r} looks like a version; choose a name like 'champion'"
        )
    if not gates:
        raise PromotionError("give at least one --gate: promotion goes through a gate")
    parsed = [parse_promotion_gate(g) for g in gates]
    metric_keys = [m.key for m in build_metrics(None, workspace.settings.embedder)]
    check_names([g for g in parsed if isinstance(g, Gate)], metric_keys)
    for gate in parsed:
        if isinstance(gate, RelativeGate) and gate.metric.partition("[")[0] not in metric_keys:
            raise PromotionError(
                f"gate {gate}: the runs will have no metric {gate.metric!r}; metrics: "
                + ", ".join(metric_keys)
            )
    with use_runtime(Runtime.from_workspace(workspace)):
        candidate = registry.verified(registry.resolve(ref))
        finished = finish_interrupted_move(workspace, registry, name=candidate.name, alias=alias)
        if (
            finished is not None
            and finished["action"] == "promote"
            and finished["to_version"] == candidate.version
        ):  # this promotion, run again after it died between logging the move and making it
            return _finished_promotion(workspace, registry, candidate, alias, finished)
        aliases = registry.aliases(candidate.name)
        holder_version = aliases.get(alias)
        holder = (
            registry.get(name=candidate.name, version=holder_version)
            if holder_version is not None
            else None
        )
        if holder is not None and holder.version == candidate.version:
            raise PromotionError(f"{alias!r} already points at {candidate.ref}")
        run_id = evaluation(
            workspace,
            stack=stack,
            dataset=dataset,
            model_alias=model_alias,
            version=candidate,
            on_progress=on_progress,
        )
        result = Promotion(candidate, alias, holder, run_id)
        summary = load_run(workspace, run_id)["summary"]
        absolute = [g for g in parsed if isinstance(g, Gate)]
        result.checks += [
            GateCheck(str(r.gate), r.passed, r.describe()) for r in check_gates(absolute, summary)
        ]
        for gate in (g for g in parsed if isinstance(g, RelativeGate)):
            against = aliases.get(gate.against)
            comparison = None
            if against is not None and against != candidate.version:
                other = registry.get(name=candidate.name, version=against)
                other_run = evaluation(
                    workspace,
                    stack=stack,
                    dataset=dataset,
                    model_alias=model_alias,
                    version=other,
                    on_progress=on_progress,
                )
                result.holder_runs[gate.against] = other_run
                comparison = compare_runs(workspace, other_run, run_id)
                if gate.against == alias:
                    result.comparison = comparison
            result.checks.append(_check_relative(gate, comparison, f"{candidate.name}@{against}"))
    if not result.failed:
        _move(
            workspace,
            registry,
            name=candidate.name,
            alias=alias,
            expected=holder_version,
            target=candidate.version,
            action="promote",
            reason=reason,
            evidence={
                "stack": stack,
                "dataset": dataset,
                "candidate_run": run_id,
                "holder_runs": result.holder_runs,
                "gates": [c.__dict__ for c in result.checks],
            },
        )
        result.promoted = True
    _record_on_card(registry, result, stack=stack, dataset=dataset, summary=summary)
    return result


def _finished_promotion(
    workspace: Workspace,
    registry: ModelRegistry,
    candidate: ModelVersion,
    alias: str,
    event: dict[str, Any],
) -> Promotion:
    """The promotion a logged move records (its runs and gate checks), its card written:
    what the promotion that logged it and then died would have returned."""
    evidence = event["evidence"]
    holder = (
        registry.get(name=candidate.name, version=event["from_version"])
        if event["from_version"] is not None
        else None
    )
    result = Promotion(
        candidate,
        alias,
        holder,
        evidence["candidate_run"],
        holder_runs=dict(evidence.get("holder_runs") or {}),
        checks=[GateCheck(**check) for check in evidence.get("gates") or []],
        promoted=True,
    )
    if alias in result.holder_runs:
        result.comparison = compare_runs(workspace, result.holder_runs[alias], result.candidate_run)
    summary = load_run(workspace, result.candidate_run)["summary"]
    _record_on_card(
        registry, result, stack=evidence["stack"], dataset=evidence["dataset"], summary=summary
    )
    return result


def _record_on_card(
    registry: ModelRegistry,
    result: Promotion,
    *,
    stack: str,
    dataset: str,
    summary: dict[str, Any],
) -> None:
    section = evaluation_section(
        dataset=dataset,
        stack=stack,
        summary=summary,
        run_id=result.candidate_run,
        comparison=result.comparison,
        against=f"{result.candidate.name}@{result.holder.version}" if result.holder else None,
        gates=[(c.gate, c.passed, c.detail) for c in result.checks],
        promoted_to=f"{result.candidate.name}@{result.alias}" if result.promoted else None,
    )
    fresh = registry.get(name=result.candidate.name, version=result.candidate.version)
    registry.set_card(fresh, append_evaluation(fresh.card, section))
    registry.tag(fresh, {f"slmops.eval.{result.candidate_run[:12]}": dataset})


@contextlib.contextmanager
def _alias_lock(workspace: Workspace, name: str, alias: str) -> Iterator[None]:
    """Moves of one (model, alias) take turns on this workspace."""
    locks = workspace.home / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(locks / f"model-{name}-{alias}.lock"), timeout=60):
            yield
    except Timeout:
        raise PromotionError(
            f"another promotion of {name}@{alias} holds its lock; try again"
        ) from None


def _interrupted_move(
    workspace: Workspace, registry: ModelRegistry, name: str, alias: str
) -> dict[str, Any] | None:
    """The alias' last logged move when the alias is still where that move started: the
    process making it died after logging it (see :func:`_move`). An alias found anywhere
    else was moved outside slmops, and is left to the user (rollback names it)."""
    moves = [e for e in alias_events(workspace, name) if e["alias"] == alias]
    if not moves:
        return None
    last = moves[-1]
    current = registry.aliases(name).get(alias)
    if current != last["to_version"] and current == last["from_version"]:
        return last
    return None


def _finish_locked(
    workspace: Workspace, registry: ModelRegistry, name: str, alias: str
) -> dict[str, Any] | None:
    interrupted = _interrupted_move(workspace, registry, name, alias)
    if interrupted is not None:
        registry.set_alias(name=name, alias=alias, version=interrupted["to_version"])
    return interrupted


def finish_interrupted_move(
    workspace: Workspace, registry: ModelRegistry, *, name: str, alias: str
) -> dict[str, Any] | None:
    """Make the move of ``name@alias`` that a killed promotion or rollback logged but did
    not make; returns its log row, or None when there was none. Promotions and rollbacks
    call this first: the log records what was decided, so that is carried out."""
    with _alias_lock(workspace, name, alias):
        return _finish_locked(workspace, registry, name, alias)


def _move(
    workspace: Workspace,
    registry: ModelRegistry,
    *,
    name: str,
    alias: str,
    expected: int | None,
    target: int | None,
    action: str,
    reason: str,
    evidence: dict[str, Any],
) -> None:
    """Compare-and-set the alias and log it, one at a time per (model, alias) on this
    workspace. The log row is committed first, then the alias moved: a process killed in
    between leaves a logged move that the next move of this alias finishes, where the other
    order (alias first) lost the log row of a move that was made."""
    with _alias_lock(workspace, name, alias):
        _finish_locked(workspace, registry, name, alias)
        current = registry.aliases(name).get(alias)
        if current != expected:
            raise PromotionError(
                f"{name}@{alias} moved while this ran (it was version {expected}, now "
                f"{current}); nothing was changed: run it again"
            )
        with workspace.engine.begin() as connection:
            logged = connection.execute(
                insert(model_alias_events).values(
                    model=name,
                    alias=alias,
                    from_version=expected,
                    to_version=target,
                    action=action,
                    actor=actor(),
                    reason=reason,
                    evidence=evidence,
                    created_at=time.time(),
                )
            ).inserted_primary_key
        event_id = logged[0] if logged is not None else None
        try:
            registry.set_alias(name=name, alias=alias, version=target)
        except Exception:
            # The move failed: its log row goes, so the log holds only moves made (and the
            # next move of this alias does not carry this one out).
            with workspace.engine.begin() as connection:
                connection.execute(
                    delete(model_alias_events).where(model_alias_events.c.id == event_id)
                )
            raise


def alias_events(workspace: Workspace, name: str) -> list[dict[str, Any]]:
    """The audit log of ``name``'s aliases, oldest first."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(model_alias_events)
            .where(model_alias_events.c.model == name)
            .order_by(model_alias_events.c.id)
        ).all()
    return [dict(row._mapping) for row in rows]


def rollback(
    workspace: Workspace, registry: ModelRegistry, *, name: str, alias: str, reason: str = ""
) -> tuple[int | None, int | None]:
    """Move ``alias`` back to the version it pointed at before its last promotion that is
    still standing (as the audit log records it): rolling back twice goes back two
    promotions. Returns (from, to); ``to`` None means the alias is removed. Run again after
    a rollback died between logging its move and making it, it finishes that one."""
    finished = finish_interrupted_move(workspace, registry, name=name, alias=alias)
    if finished is not None and finished["action"] == "rollback":
        return finished["from_version"], finished["to_version"]
    current = registry.aliases(name).get(alias)
    moves = [e for e in alias_events(workspace, name) if e["alias"] == alias]
    undone = {e["evidence"].get("undoes") for e in moves if e["action"] == "rollback"}
    standing = [e for e in moves if e["action"] == "promote" and e["id"] not in undone]
    if not standing:
        raise PromotionError(f"the log has no promotion of {name}@{alias} left to roll back")
    last = standing[-1]
    if last["to_version"] != current:
        raise PromotionError(
            f"{name}@{alias} points at version {current}, not at version {last['to_version']} "
            "where the log's last move left it (moved outside slmops?): set it by promotion"
        )
    target = last["from_version"]
    _move(
        workspace,
        registry,
        name=name,
        alias=alias,
        expected=current,
        target=target,
        action="rollback",
        reason=reason or f"rollback of event {last['id']}",
        evidence={"undoes": last["id"]},
    )
    return current, target
