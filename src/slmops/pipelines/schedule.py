"""When a pipeline runs by itself: on a cron schedule, and when what it watches changes.

``Scheduler`` is the small scheduler process (`slmops pipeline schedule NAME`): it sleeps until
the next cron time or until a watched path's files (or a watched corpus' latest version)
change, then runs the pipeline, one run at a time. A run that finds nothing changed costs
little: its steps are cached. For machines that already run cron, ``crontab_line`` writes the
equivalent entry instead.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from slmops.pipelines.spec import PipelineError, PipelineSpec
from slmops.store.workspace import Workspace


def check_cron(expression: str, *, where: str = "schedule") -> None:
    """Raise PipelineError naming the problem when ``expression`` is not a cron expression."""
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime.now())
    except CronSimError as exc:
        raise PipelineError(
            f"{where}: {expression!r} is not a cron expression ({exc}); "
            "five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"
        ) from None


def next_time(expression: str, after: float) -> float:
    """The first time (unix seconds) after ``after`` that matches ``expression``."""
    from cronsim import CronSim

    check_cron(expression)
    return next(CronSim(expression, datetime.fromtimestamp(after))).timestamp()


def watch_state(workspace: Workspace, spec: PipelineSpec) -> dict[str, str]:
    """What each watched thing is now: a digest of a path's files, a corpus' latest version."""
    from slmops.data.corpus import corpora_for
    from slmops.errors import NotFoundError
    from slmops.pipelines.ops import files_digest

    state = {}
    for target in spec.watch:
        if target.startswith("corpus:"):
            name = target.removeprefix("corpus:")
            try:
                state[target] = str(corpora_for(workspace).resolve(f"{name}@latest").version)
            except NotFoundError:
                state[target] = "none"
        else:
            path = Path(target).expanduser()
            path = path if path.is_absolute() else spec.directory / path
            state[target] = files_digest([path]) if path.exists() else "missing"
    return state


@dataclass(frozen=True)
class Trigger:
    reason: str  # schedule | watch:TARGET


class Scheduler:
    """Waits for the next trigger of ``spec`` and calls ``run`` with it; ``max_runs`` and
    ``until`` (unix seconds) bound it (a test or a one-off), otherwise it runs until stopped."""

    def __init__(
        self,
        workspace: Workspace,
        spec: PipelineSpec,
        run: Callable[[Trigger], None],
        *,
        cron: str | None = None,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.workspace = workspace
        self.spec = spec
        self.run = run
        self.cron = cron or spec.schedule
        if self.cron is not None:
            check_cron(self.cron)
        if self.cron is None and not spec.watch:
            raise PipelineError(
                f"pipeline {spec.name!r} has nothing to wait for: give a cron expression "
                "(--cron or [pipeline] schedule) or watch paths ([pipeline] watch or --watch)"
            )
        if poll_s <= 0:
            raise PipelineError("the poll interval must be a positive number of seconds")
        self.poll_s = poll_s
        self.clock = clock
        self.sleep = sleep

    def serve(
        self,
        *,
        max_runs: int | None = None,
        until: float | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> int:
        """Run on each trigger; returns how many runs were started. ``on_start`` is called
        once the watched things' state is read (a change from then on triggers a run)."""
        runs = 0
        seen = watch_state(self.workspace, self.spec)
        if on_start is not None:
            on_start()
        due = next_time(self.cron, self.clock()) if self.cron else None
        while (max_runs is None or runs < max_runs) and (until is None or self.clock() < until):
            trigger = None
            now = self.clock()
            if due is not None and now >= due:
                trigger = Trigger("schedule")
                due = next_time(self.cron or "", now)
            elif self.spec.watch:
                current = watch_state(self.workspace, self.spec)
                changed = [t for t in current if current[t] != seen.get(t)]
                if changed:
                    trigger = Trigger(f"watch:{changed[0]}")
            if trigger is None:
                wait = self.poll_s if due is None else max(0.0, min(self.poll_s, due - now))
                if until is not None:
                    wait = min(wait, max(0.0, until - now))
                self.sleep(wait)
                continue
            self.run(trigger)
            runs += 1
            # what the run itself changed (a corpus it ingested) must not trigger it again
            seen = watch_state(self.workspace, self.spec)
        return runs


def crontab_line(spec: PipelineSpec, cron: str, *, workspace: Path) -> str:
    """A crontab entry that runs the pipeline at ``cron`` with this interpreter's slmops."""
    check_cron(cron)
    if spec.source is None:
        raise PipelineError("only a pipeline read from a file can be scheduled by cron")
    slmops = Path(sys.executable).with_name("slmops")
    command = " ".join(
        shlex.quote(part)
        for part in (
            str(slmops),
            "pipeline",
            "run",
            str(spec.source),
            "--trigger",
            "cron",
            "--workspace",
            str(workspace),
        )
    )
    logs = workspace / "logs"
    log = shlex.quote(str(logs / f"pipeline-{spec.name}.log"))
    folder = shlex.quote(str(spec.directory))
    return f"{cron} mkdir -p {shlex.quote(str(logs))} && cd {folder} && {command} >> {log} 2>&1"
