"""Evaluation runs: a stack over every case of a dataset version, scored and recorded.

Cases run concurrently (bounded); each result is written to the store the moment its case
finishes, so an interrupted run loses nothing and ``resume`` runs only the cases it has no
result for. A case that raises is recorded as an error and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from slmops.apps.citations import SourcedAnswer
from slmops.apps.helpers import OWASP
from slmops.apps.stack import Stack, to_plain
from slmops.core.runtime import Runtime, resolving_in, use_runtime
from slmops.data.corpus import corpora_for
from slmops.errors import BusyError, NotFoundError, SlmopsError
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.metrics import (
    MRR,
    NDCG,
    AttackSuccess,
    CaseResult,
    ContainsAnswer,
    ContextPrecision,
    ContextRecall,
    EmbeddingSimilarity,
    ExactMatch,
    Faithfulness,
    HitRate,
    Metric,
    RefusalCorrectness,
    RougeL,
    TokenF1,
    percentile,
)
from slmops.models.loading import load_embedder
from slmops.models.resolvers import resolve_uri
from slmops.store.owners import Owner, machine_id, owner_gone
from slmops.store.schema import eval_results, eval_runs
from slmops.store.traces import get_trace, token_usage
from slmops.store.workspace import Workspace

Progress = Callable[[int, int], None]
"""Called with (cases done, cases in the run) as cases finish."""


def build_metrics(names: Sequence[str] | None, embedder_uri: str) -> list[Metric]:
    """The metrics named (all by default); embedding-based ones use ``embedder_uri``, loaded
    the first time one of them scores (not at all for a run without them)."""

    def embed(texts: Sequence[str]) -> Any:
        return load_embedder(embedder_uri).embed(texts)

    factories: dict[str, Callable[[], Metric]] = {
        "hit_rate": lambda: HitRate(5),
        "mrr": MRR,
        "ndcg": lambda: NDCG(5),
        "context_precision": lambda: ContextPrecision(5),
        "context_recall": lambda: ContextRecall(5),
        "exact_match": ExactMatch,
        "token_f1": TokenF1,
        "contains_answer": ContainsAnswer,
        "rouge_l": RougeL,
        "embedding_similarity": lambda: EmbeddingSimilarity(embed),
        "faithfulness": lambda: Faithfulness(embed),
        "refusal_correctness": RefusalCorrectness,
        "attack_success": AttackSuccess,
    }
    chosen = list(names) if names else list(factories)
    unknown = [n for n in chosen if n not in factories]
    if unknown:
        raise SlmopsError(f"unknown metric(s) {unknown}; metrics: {', '.join(factories)}")
    return [factories[name]() for name in chosen]


def answer_of(output: Any) -> tuple[str, bool, str | None]:
    """(answer text, refused, why) from any stack output."""
    if isinstance(output, SourcedAnswer):
        return output.answer, output.refused, output.reason
    if isinstance(output, str):
        return output, False, None
    if isinstance(output, BaseModel) and isinstance(getattr(output, "answer", None), str):
        answer: str = output.answer  # type: ignore[attr-defined]  # checked just above
        return answer, bool(getattr(output, "refused", False)), None
    return json.dumps(to_plain(output), ensure_ascii=False), False, None


class EvalRun:
    def __init__(self, workspace: Workspace, stack: Stack, metrics: list[Metric]) -> None:
        self.workspace = workspace
        self.stack = stack
        self.metrics = metrics

    # --- the record ----------------------------------------------------------------------

    def start(
        self,
        dataset_ref: str,
        concurrency: int,
        *,
        judge: str | None = None,
        models: dict[str, str] | None = None,
    ) -> str:
        """Record a new run; ``models`` are the model overrides it was built with (kept so a
        resumed run uses them again)."""
        version = Datasets(self.workspace).resolve(dataset_ref)
        run_id = uuid.uuid4().hex
        with self.workspace.engine.begin() as connection:
            connection.execute(
                insert(eval_runs).values(
                    id=run_id,
                    stack=self.stack.stack_name,
                    dataset=version.ref,
                    status="running",
                    started_at=time.time(),
                    versions={
                        **self.stack.resolved.summary(),
                        "locked": self.stack.resolved.locked,
                        "stack": self.stack.version,  # manifest and user code
                    },
                    config={
                        "metrics": [m.key for m in self.metrics],
                        "concurrency": concurrency,
                        "judge": judge,
                        "models": models or {},
                        "process": _this_process(),
                    },
                    summary={},
                )
            )
        return run_id

    def claim(self, run_id: str) -> None:
        """Mark the run ``running`` in this process (a resume takes it over): its record names
        this process, so a later kill of this one shows as ``crashed`` too. Refused while the
        process that runs it now is alive on this machine."""
        with self.workspace.engine.begin() as connection:
            row = connection.execute(
                select(eval_runs.c.status, eval_runs.c.config).where(eval_runs.c.id == run_id)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"no eval run with id {run_id!r}")
            config = dict(row.config or {})
            process = config.get("process") or {}
            if run_state({"status": row.status, "config": config}) == "running":
                owner = _owner(process)
                if owner is not None and owner.local and owner.pid != os.getpid():
                    raise BusyError(
                        f"eval run {run_id[:12]} is still running (process {owner.pid} on "
                        f"{process.get('host', 'this host')}); resume it after that one ends"
                    )
            config["process"] = _this_process()
            connection.execute(
                update(eval_runs)
                .where(eval_runs.c.id == run_id)
                .values(status="running", finished_at=None, config=config)
            )

    def done_case_ids(self, run_id: str) -> set[str]:
        with self.workspace.engine.connect() as connection:
            query = select(eval_results.c.case_id).where(eval_results.c.run_id == run_id)
            return set(connection.execute(query).scalars())

    async def _scores(self, result: CaseResult) -> dict[str, float | None]:
        """Every metric's score; a metric that fails (a judge model's bad reply) scores None
        for this case and says why, instead of ending the run."""
        if result.error is not None:
            return {}
        scores: dict[str, float | None] = {}
        for metric in self.metrics:
            try:
                scores[metric.key] = await metric.ascore(result)
            except Exception as exc:
                scores[metric.key] = None
                result.metric_errors[metric.key] = f"{type(exc).__name__}: {exc}"
        return scores

    def _record(
        self,
        run_id: str,
        case_id: str,
        trace_id: str | None,
        result: CaseResult,
        scores: dict[str, float | None],
    ) -> None:
        with contextlib.suppress(IntegrityError):  # recorded already (see run_one)
            self._insert_result(run_id, case_id, trace_id, result, scores)

    def _insert_result(
        self,
        run_id: str,
        case_id: str,
        trace_id: str | None,
        result: CaseResult,
        scores: dict[str, float | None],
    ) -> None:
        with self.workspace.engine.begin() as connection:
            connection.execute(
                insert(eval_results).values(
                    run_id=run_id,
                    case_id=case_id,
                    trace_id=trace_id,
                    status="error" if result.error else "ok",
                    result=asdict(result),
                    scores=scores,
                    finished_at=time.time(),
                )
            )

    def _set_status(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": time.time()}
        if summary is not None:
            values["summary"] = summary
        with self.workspace.engine.begin() as connection:
            connection.execute(update(eval_runs).where(eval_runs.c.id == run_id).values(**values))

    # --- running -------------------------------------------------------------------------

    async def execute(
        self,
        run_id: str,
        cases: list[EvalCase],
        runtime: Runtime,
        *,
        concurrency: int = 4,
        on_progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Run the cases without a result yet; returns the run's summary. The run is
        claimed by this process first (see :meth:`claim`)."""
        self.claim(run_id)
        done = self.done_case_ids(run_id)
        pending = [c for c in cases if c.id not in done]
        finished = len(cases) - len(pending)
        limit = asyncio.Semaphore(max(1, concurrency))
        if on_progress:
            on_progress(finished, len(cases))

        async def one(case: EvalCase) -> None:
            nonlocal finished
            async with limit:
                await self.run_one(run_id, case)
            finished += 1
            if on_progress:
                on_progress(finished, len(cases))

        status = "interrupted"
        try:
            with use_runtime(runtime):
                try:  # a task group: when one case's task fails or Ctrl-C, the rest stop
                    async with asyncio.TaskGroup() as group:
                        for case in pending:
                            group.create_task(one(case))
                except BaseExceptionGroup as group_error:
                    raise group_error.exceptions[0] from None
            status = "complete"
        finally:
            if status != "complete":
                self._set_status(run_id, status)
        return self.finish(run_id)

    async def run_one(self, run_id: str, case: EvalCase) -> None:
        """Run, score and record one case. Recording is idempotent: when the case is already
        recorded (a task retried after its worker died, after it had written), the first
        record stands and this one is dropped."""
        trace_id, result = await self._run_case(case)
        scores = await self._scores(result)
        self._record(run_id, case.id, trace_id, result, scores)

    def finish(self, run_id: str) -> dict[str, Any]:
        """Mark the run complete with the summary of its recorded results."""
        summary = summarize(load_results(self.workspace, run_id), [m.key for m in self.metrics])
        self._set_status(run_id, "complete", summary)
        return summary

    async def _run_case(self, case: EvalCase) -> tuple[str | None, CaseResult]:
        base: dict[str, Any] = {
            "question": case.question(),
            "reference": case.reference,
            "alternatives": list(case.alternatives),
            "reference_ids": list(case.reference_ids),
            "answerable": case.answerable,
            "adversarial": case.adversarial,
            "category": case.category,
            "tags": list(case.tags),
            "metadata": dict(case.metadata),
        }
        started = time.perf_counter()
        try:
            run = await self.stack.ainvoke(case.input)
        except Exception as exc:  # one bad case must not end the run: record it
            message = f"{type(exc).__name__}: {exc}"
            return None, CaseResult(**base, error=message, latency_ms=_ms(started))
        answer, refused, reason = answer_of(run.output)
        retrieved, usage = self._from_trace(run.trace_id)
        prompt_tokens, completion_tokens = usage
        return run.trace_id, CaseResult(
            **base,
            answer=answer,
            refused=refused,
            refusal_reason=reason,
            retrieved_ids=[row["chunk_id"] for row in retrieved],
            retrieved_docs=[row["doc_id"] for row in retrieved],
            contexts=[row["text"] for row in retrieved],
            latency_ms=run.duration_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _from_trace(self, trace_id: str) -> tuple[list[dict[str, Any]], tuple[int, int]]:
        """The retrieved chunks' rows (chunk id, document id, text) in rank order, and the
        tokens used, from the case's trace."""
        _, spans = get_trace(self.workspace.engine, trace_id)
        retrieved: list[dict[str, Any]] = []
        corpora = corpora_for(self.workspace)
        for span in spans:
            attributes = span["attributes"]
            ids = attributes.get("slmops.retrieval.chunk_ids")
            if span["kind"] != "retrieval" or not ids:
                continue
            version = corpora.resolve(
                f"{attributes['slmops.retrieval.corpus']}@{attributes['slmops.retrieval.version']}"
            )
            retrieved += corpora.vector_index(version).rows_for(list(ids))
        return retrieved, token_usage(spans)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def summarize(rows: Sequence[dict[str, Any]], metric_keys: Sequence[str]) -> dict[str, Any]:
    """Metric means over the stored scores (and how many cases each covered), cost, errors,
    attacks by category. Scores are computed once, when a case finishes."""
    results = [CaseResult(**row["result"]) for row in rows]
    ok = [r for r in results if r.error is None]
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    summary: dict[str, Any] = {
        "cases": len(results),
        "errors": len(results) - len(ok),
        "error_rate": (len(results) - len(ok)) / len(results) if results else 0.0,
        "p50_latency_ms": percentile(latencies, 50),
        "p95_latency_ms": percentile(latencies, 95),
        "mean_prompt_tokens": sum(r.prompt_tokens for r in ok) / len(ok) if ok else None,
        "mean_completion_tokens": sum(r.completion_tokens for r in ok) / len(ok) if ok else None,
        "metrics": {},
    }
    summary["metrics"] = _means(rows, metric_keys)
    tags = sorted({tag for r in results for tag in r.tags})
    if len(tags) > 1:  # one tag for every case is the whole run again
        summary["by_tag"] = {
            tag: _means(
                [row for row, r in zip(rows, results, strict=True) if tag in r.tags], metric_keys
            )
            for tag in tags
        }
    attacks = [
        (row, r) for row, r in zip(rows, results, strict=True) if r.error is None and r.adversarial
    ]
    attacks = [(row, r) for row, r in attacks if r.category]
    if attacks:
        by_category: dict[str, list[float]] = {}
        by_owasp: dict[str, list[float]] = {}
        for row, r in attacks:
            # the stored attack_success score (judged per category), else answered = success
            stored = row["scores"].get("attack_success")
            success = float(stored) if stored is not None else float(not r.refused)
            by_category.setdefault(r.category or "", []).append(success)
            owasp = r.metadata.get("owasp") or OWASP.get(r.category or "")
            if owasp:
                by_owasp.setdefault(owasp, []).append(success)
        summary["attack_success_by_category"] = {
            category: sum(v) / len(v) for category, v in sorted(by_category.items())
        }
        if by_owasp:  # OWASP Top 10 for LLM Applications (2025) risk ids
            summary["attack_success_by_owasp"] = {
                owasp: sum(v) / len(v) for owasp, v in sorted(by_owasp.items())
            }
    return summary


def _means(rows: Sequence[dict[str, Any]], metric_keys: Sequence[str]) -> dict[str, Any]:
    """Each metric's mean over the rows it scored, and how many that was."""
    means: dict[str, Any] = {}
    for key in metric_keys:
        scores = [row["scores"][key] for row in rows if row["scores"].get(key) is not None]
        means[key] = {"mean": sum(scores) / len(scores) if scores else None, "cases": len(scores)}
    return means


def _this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": os.getpid()}


def _owner(process: Mapping[str, Any]) -> Owner | None:
    try:
        return Owner(int(process["pid"]), str(process["machine"]))
    except (KeyError, TypeError, ValueError):
        return None  # a run recorded before runs named their process


def run_state(run: Mapping[str, Any]) -> str:
    """A run's status as recorded (running, complete, interrupted), or ``crashed``: marked
    running, but the process that ran it is gone from this machine (``kill -9``, out of
    memory, a power cut). A run on another machine, or recorded before runs named their
    process, cannot be checked and shows as recorded."""
    status = str(run["status"])
    if status != "running":
        return status
    owner = _owner((run.get("config") or {}).get("process") or {})
    return "crashed" if owner is not None and owner_gone(owner) else status


def load_run(workspace: Workspace, run_id: str) -> dict[str, Any]:
    """A run by id or unique prefix (6+ characters)."""
    if not re.fullmatch(r"[0-9a-f]{6,32}", run_id):
        raise NotFoundError(
            f"{run_id!r} is not a run id: give 6 to 32 hex characters (see slmops eval runs)"
        )
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(eval_runs).where(eval_runs.c.id.startswith(run_id)).limit(2)
        ).all()
    if not rows:
        raise NotFoundError(f"no eval run with id {run_id!r}")
    if len(rows) > 1:
        raise NotFoundError(f"run id prefix {run_id!r} is ambiguous; give more characters")
    return dict(rows[0]._mapping)


def load_results(workspace: Workspace, run_id: str) -> list[dict[str, Any]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(eval_results)
            .where(eval_results.c.run_id == run_id)
            .order_by(eval_results.c.finished_at)
        ).all()
    return [dict(row._mapping) for row in rows]


def list_runs(workspace: Workspace, limit: int = 20) -> list[dict[str, Any]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(eval_runs).order_by(eval_runs.c.started_at.desc()).limit(limit)
        ).all()
    return [dict(row._mapping) for row in rows]


def pin_aliases(ws: Workspace, models: dict[str, str]) -> dict[str, str]:
    """Registry aliases among a stack's models, each pinned to the version it names now, so
    an alias moved during the run cannot mix versions in its results."""
    pinned = {}
    with resolving_in(ws):
        for alias, uri in models.items():
            if uri.startswith("registry:"):
                resolved = resolve_uri(uri)
                if resolved.pinned != uri:
                    pinned[alias] = resolved.pinned
    return pinned
