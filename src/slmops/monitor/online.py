"""Online evaluation: live traces scored with reference-free metrics, off the request path.

The server offers each finished trace to an :class:`OnlineScorer`; a seeded coin keeps the
configured share, and a background thread scores the kept ones and stores one row per
metric in ``monitor_scores``. A request only pays for the coin and a queue put; when the
queue is full the trace is dropped and counted, never waited for. ``score_traces`` scores
stored traces the same way from the CLI (a backfill, or a judge stack that must not share
the serving process's model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, insert, select

from slmops.data.corpus import corpora_for
from slmops.errors import SlmopsError
from slmops.eval.metrics import CaseResult, Faithfulness, JudgeScore
from slmops.monitor.figures import LIVE_TRAFFIC
from slmops.monitor.records import TraceRecord, load_records
from slmops.store.schema import monitor_scores, traces
from slmops.store.workspace import Workspace

log = logging.getLogger("slmops.monitor")

ONLINE_METRICS: dict[str, str] = {
    "faithfulness": "share of the answer's sentences supported by the retrieved passages",
    "refused": "1 when the stack refused to answer",
    "citation_support": "the cite step's support of the answer by its passages (0-1)",
    "retrieval_relevance": "the best question-passage relevance the cite step saw (0-1)",
    "answer_tokens": "tokens the model generated for the answer",
}
"""Reference-free figures scored per sampled trace (no reference answer exists live)."""

Embed = Callable[[Sequence[str]], Any]


def contexts_of(workspace: Workspace, record: TraceRecord) -> list[str]:
    """The texts of the passages a trace retrieved, from the corpus versions it used."""
    corpora = corpora_for(workspace)
    texts: list[str] = []
    for corpus, version, ids in record.retrievals:
        try:
            index = corpora.vector_index(corpora.resolve(f"{corpus}@{version}"))
        except SlmopsError:  # the corpus or version is gone: score what is left
            continue
        texts += [row["text"] for row in index.rows_for(ids)]
    return texts


def score_record(
    record: TraceRecord,
    contexts: Sequence[str],
    *,
    embed: Embed | None = None,
    judge: Any = None,
) -> dict[str, float | None]:
    """The online figures of one trace (None where a figure does not apply)."""
    case = CaseResult(
        question=record.question,
        answer=record.answer,
        contexts=list(contexts),
        refused=record.refused,
        refusal_reason=record.refusal_reason,
    )
    scores: dict[str, float | None] = {
        "faithfulness": Faithfulness(embed).score(case),
        "refused": float(record.refused),
        "citation_support": record.support,
        "retrieval_relevance": record.relevance,
        "answer_tokens": float(record.completion_tokens),
    }
    if judge is not None:
        scores["judge"] = asyncio.run(JudgeScore(judge).ascore(case))
    return scores


def store_scores(
    engine: Engine, record: TraceRecord, scores: dict[str, float | None], now: float | None = None
) -> None:
    """Replace a trace's stored scores with these, in one transaction."""
    scored_at = time.time() if now is None else now
    rows = [
        {
            "trace_id": record.trace_id,
            "metric": metric,
            "stack": record.stack,
            "value": None if value is None or not np.isfinite(value) else float(value),
            "trace_started_at": record.started_at,
            "scored_at": scored_at,
        }
        for metric, value in scores.items()
    ]
    with engine.begin() as connection:
        connection.execute(
            delete(monitor_scores).where(monitor_scores.c.trace_id == record.trace_id)
        )
        connection.execute(insert(monitor_scores), rows)


def _scorable(record: TraceRecord) -> bool:
    return record.status == "ok" and record.shadow_of is None


@dataclass
class OnlineScorer:
    """Scores a share of live traces in a background thread (start with :meth:`start`)."""

    workspace: Workspace
    share: float = 0.1
    embed: Embed | None = None
    max_queue: int = 256
    seed: int | None = None
    # Whether the machine is free (no request generating): scoring waits for it, up to
    # max_wait_s, so on a CPU the scorer takes idle cycles instead of slowing answers.
    idle: Callable[[], bool] | None = None
    max_wait_s: float = 30.0
    offered: int = 0
    sampled: int = 0
    dropped: int = 0
    scored: int = 0
    failed: int = 0
    _queue: queue.Queue[str | None] = field(init=False)
    _coin: random.Random = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise SlmopsError(f"monitor sample share {self.share} is outside 0-1")
        self._queue = queue.Queue(self.max_queue)
        self._coin = random.Random(self.seed)

    def offer(self, trace_id: str) -> bool:
        """Called on the request path: keep this trace with probability ``share``; never
        blocks. Returns whether it was queued."""
        self.offered += 1
        if not trace_id or self._coin.random() >= self.share:
            return False
        try:
            self._queue.put_nowait(trace_id)
        except queue.Full:  # scoring fell behind: drop, count, never slow a request
            self.dropped += 1
            return False
        self.sampled += 1
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="slmops-monitor", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after the trace it is scoring (what is still queued is left:
        ``slmops monitor score`` can backfill it)."""
        if self._thread is not None:
            self._stopping.set()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)  # wake a worker waiting on an empty queue
            self._thread.join(timeout_s)
            self._thread = None

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued so far is scored (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _work(self) -> None:
        while True:
            trace_id = self._queue.get()
            try:
                if trace_id is None or self._stopping.is_set():
                    return
                self._wait_for_idle()
                self._score(trace_id)
            except Exception as exc:  # one bad trace must not stop the monitor
                self.failed += 1
                log.warning("online scoring of trace %s failed: %s", trace_id, exc)
            finally:
                self._queue.task_done()

    def _wait_for_idle(self) -> None:
        if self.idle is None:
            return
        deadline = time.monotonic() + self.max_wait_s
        while not self.idle() and time.monotonic() < deadline and not self._stopping.is_set():
            time.sleep(0.05)

    def _score(self, trace_id: str) -> None:
        records = load_records(self.workspace.engine, [trace_id])
        if not records or not _scorable(records[0]):
            return
        record = records[0]
        scores = score_record(record, contexts_of(self.workspace, record), embed=self.embed)
        store_scores(self.workspace.engine, record, scores)
        self.scored += 1


def score_traces(
    workspace: Workspace,
    stack: str,
    *,
    since: float | None = None,
    limit: int | None = None,
    rescore: bool = False,
    embed: Embed | None = None,
    judge: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Score stored traces of ``stack`` (those not scored yet, unless ``rescore``), newest
    first; returns how many were scored."""
    query = select(traces.c.trace_id).where(
        traces.c.name == stack, traces.c.status == "ok", LIVE_TRAFFIC
    )
    if since is not None:
        query = query.where(traces.c.started_at >= since)
    if not rescore:
        query = query.where(traces.c.trace_id.not_in(select(monitor_scores.c.trace_id)))
    query = query.order_by(traces.c.started_at.desc())
    if limit is not None:
        query = query.limit(limit)
    with workspace.engine.connect() as connection:
        ids = [row[0] for row in connection.execute(query)]
    done = 0
    for start in range(0, len(ids), 50):
        for record in load_records(workspace.engine, ids[start : start + 50]):
            if _scorable(record):
                contexts = contexts_of(workspace, record)
                store_scores(
                    workspace.engine,
                    record,
                    score_record(record, contexts, embed=embed, judge=judge),
                )
            done += 1
            if progress:
                progress(done, len(ids))
    return done
