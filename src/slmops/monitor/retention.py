"""Retention: delete old traces and keep what the monitor's figures need of them.

:func:`prune_traces` deletes the traces (with their spans and online scores) that started
before a cutoff, hour by hour. Before it deletes an hour it adds that hour's tally
(:func:`slmops.monitor.figures.live_tally`: counts, token and score sums, a latency
histogram) to the hour's row in ``monitor_rollups``, in the same transaction, so an
interrupted prune leaves every hour either fully live or fully rolled up: never lost and
never counted twice. Figures of windows made of whole hours are the same afterwards,
except the latency percentiles, which come from the histogram (within about 2.5%).

Feedback is kept: its rows are small, they are the training signal, and figures count
them by when they were given, not from traces. Rollups therefore never hold feedback
counts (:func:`~slmops.monitor.figures.live_tally` leaves them out), or figures would
count feedback twice after a prune.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, func, insert, select, update

from slmops.errors import ConfigError, WorkspaceError
from slmops.monitor import figures
from slmops.store.schema import monitor_rollups, monitor_scores, spans, traces

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass
class StackPruned:
    """What one stack lost (or would lose, on a dry run)."""

    traces: int = 0
    spans: int = 0
    scores: int = 0
    hours: int = 0


@dataclass
class PruneResult:
    cutoff: float  # unix seconds at a whole hour: traces that started before it were pruned
    dry_run: bool = False
    traces: int = 0
    spans: int = 0
    scores: int = 0  # monitor_scores rows
    hours: int = 0  # stack-hours rolled up
    stacks: dict[str, StackPruned] = field(default_factory=dict)

    def _add(self, stack: str, traces: int, spans: int, scores: int) -> None:
        counts = self.stacks.setdefault(stack, StackPruned())
        counts.traces += traces
        counts.spans += spans
        counts.scores += scores
        counts.hours += 1
        self.traces += traces
        self.spans += spans
        self.scores += scores
        self.hours += 1


def retention_cutoff(older_than_days: float, now: float | None = None) -> float:
    """``now`` less ``older_than_days``, rounded down to a whole hour."""
    if (
        isinstance(older_than_days, bool)
        or not isinstance(older_than_days, int | float)
        or not (math.isfinite(older_than_days) and older_than_days > 0)
    ):
        raise ConfigError(
            f"retention needs a number of days greater than 0, got {older_than_days!r}; "
            "traces older than that many days are deleted (e.g. 30)"
        )
    moment = time.time() if now is None else now
    return math.floor((moment - older_than_days * DAY_S) / HOUR_S) * HOUR_S


def _hours_to_prune(engine: Engine, cutoff: float, stack: str | None) -> list[tuple[str, float]]:
    """(stack, hour start) of every hour before ``cutoff`` that holds traces, in order."""
    query = select(traces.c.name, traces.c.started_at).where(traces.c.started_at < cutoff)
    if stack is not None:
        query = query.where(traces.c.name == stack)
    found: set[tuple[str, float]] = set()
    with engine.connect() as connection:
        for name, started_at in connection.execute(query.execution_options(yield_per=10_000)):
            found.add((name, math.floor(started_at / HOUR_S) * HOUR_S))
    return sorted(found)


def _window(
    stack: str, start: float, end: float
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The conditions selecting the hour's traces and its online scores (the same ones
    :func:`~slmops.monitor.figures.live_tally` counts)."""
    in_traces = and_(
        traces.c.name == stack, traces.c.started_at >= start, traces.c.started_at < end
    )
    in_scores = and_(
        monitor_scores.c.stack == stack,
        monitor_scores.c.trace_started_at >= start,
        monitor_scores.c.trace_started_at < end,
    )
    return in_traces, in_scores


def _count_hour(
    connection: Connection, stack: str, start: float, end: float
) -> tuple[int, int, int]:
    in_traces, in_scores = _window(stack, start, end)
    ids = select(traces.c.trace_id).where(in_traces)
    traces_n, spans_n, scores_n = (
        int(connection.execute(query).scalar_one())
        for query in (
            select(func.count()).select_from(traces).where(in_traces),
            select(func.count()).select_from(spans).where(spans.c.trace_id.in_(ids)),
            select(func.count()).select_from(monitor_scores).where(in_scores),
        )
    )
    return traces_n, spans_n, scores_n


def _roll_up_hour(
    connection: Connection, stack: str, start: float, end: float
) -> tuple[int, int, int]:
    """Fold one hour's live traces into its rollup and delete them (inside the caller's
    transaction: both happen or neither)."""
    in_traces, in_scores = _window(stack, start, end)
    live = figures.live_tally(connection, stack, start, end)
    stored_traces = int(
        connection.execute(select(func.count()).select_from(traces).where(in_traces)).scalar_one()
    )  # shadow runs included: they go too, though figures never counted them
    ids = select(traces.c.trace_id).where(in_traces)
    spans_gone = connection.execute(delete(spans).where(spans.c.trace_id.in_(ids))).rowcount
    scores_gone = connection.execute(delete(monitor_scores).where(in_scores)).rowcount
    traces_gone = connection.execute(delete(traces).where(in_traces)).rowcount
    if traces_gone != stored_traces or live.requests > stored_traces:
        # Someone wrote or deleted traces of this hour between the count and the delete:
        # rolling back keeps the hour live rather than miscounted.
        raise WorkspaceError(
            f"traces of stack {stack!r} in the hour starting at {start:.0f} changed while "
            f"being pruned ({stored_traces} counted, {traces_gone} deleted); run it again"
        )
    key = (monitor_rollups.c.stack == stack) & (monitor_rollups.c.hour == start)
    stored = connection.execute(select(monitor_rollups.c.figures).where(key)).first()
    if stored is None:
        connection.execute(
            insert(monitor_rollups).values(stack=stack, hour=start, figures=live.to_rollup())
        )
    else:
        merged = figures.Tally.from_rollup(stored.figures)
        merged.merge(live)
        connection.execute(update(monitor_rollups).where(key).values(figures=merged.to_rollup()))
    return traces_gone, spans_gone, scores_gone


def prune_traces(
    engine: Engine,
    *,
    older_than_days: float,
    now: float | None = None,
    stack: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Delete the traces (and their spans and online scores) that started more than
    ``older_than_days`` before ``now``, keeping their hourly rollups so monitored figures
    of those hours stay as they were.

    The cutoff is rounded down to a whole hour: an hour is either entirely live or
    entirely rolled up. Each stack-hour is rolled up and deleted in one transaction, so a
    crash loses nothing and a rerun carries on where it stopped; pruning twice deletes
    nothing the second time. Feedback rows are kept (they are small and are the training
    signal; figures count them from the feedback table, never from rollups).

    ``stack`` limits the prune to that stack's traces; ``dry_run`` only counts what would
    go; ``progress(done, total)`` is called after each stack-hour.
    """
    cutoff = retention_cutoff(older_than_days, now)
    result = PruneResult(cutoff=cutoff, dry_run=dry_run)
    hours = _hours_to_prune(engine, cutoff, stack)
    for done, (name, start) in enumerate(hours, start=1):
        end = start + HOUR_S
        if dry_run:
            with engine.connect() as connection:
                counts = _count_hour(connection, name, start, end)
        else:
            with engine.begin() as connection:
                counts = _roll_up_hour(connection, name, start, end)
        result._add(name, *counts)
        if progress is not None:
            progress(done, len(hours))
    return result
