"""Schedules and triggers: cron times, watched paths and corpora, the crontab line."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmops.pipelines import Pipeline, PipelineError
from slmops.pipelines.schedule import (
    Scheduler,
    Trigger,
    check_cron,
    crontab_line,
    next_time,
    watch_state,
)
from slmops.pipelines.spec import load_pipeline
from slmops.store import Workspace


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_cron_expressions_are_checked_and_give_the_next_time() -> None:
    check_cron("*/15 2-4 * * mon-fri")
    with pytest.raises(PipelineError, match="'every day' is not a cron expression"):
        check_cron("every day")
    with pytest.raises(PipelineError, match="not a cron expression"):
        check_cron("61 * * * *")
    # 2026-01-01 00:00:30 local -> the next quarter hour
    import datetime as dt

    start = dt.datetime(2026, 1, 1, 0, 0, 30).timestamp()
    assert dt.datetime.fromtimestamp(next_time("*/15 * * * *", start)).minute == 15


def test_the_scheduler_runs_on_cron_times(workspace: Workspace, tmp_path: Path) -> None:
    import datetime as dt

    pipeline = Pipeline("nightly", directory=tmp_path, schedule="0 3 * * *")
    pipeline.step("a", "python", call="os:getcwd")
    clock = FakeClock(dt.datetime(2026, 1, 1, 2, 59, 0).timestamp())
    fired: list[tuple[str, int]] = []

    def run(trigger: Trigger) -> None:
        fired.append((trigger.reason, dt.datetime.fromtimestamp(clock.now).hour))

    scheduler = Scheduler(
        workspace, pipeline.spec(), run, poll_s=30, clock=clock.time, sleep=clock.sleep
    )
    assert scheduler.serve(max_runs=2) == 2
    assert fired == [("schedule", 3), ("schedule", 3)]
    # the second run is a day after the first: it slept through the night in poll steps
    assert clock.now - dt.datetime(2026, 1, 1, 3, 0).timestamp() == pytest.approx(86400, abs=1)
    assert max(clock.slept) <= 30


def test_a_changed_watched_folder_triggers_a_run_and_its_own_changes_do_not(
    workspace: Workspace, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("one")
    pipeline = Pipeline("watcher", directory=tmp_path, watch=["docs"])
    pipeline.step("a", "python", call="os:getcwd")
    clock = FakeClock(1_000_000.0)
    fired: list[str] = []

    def run(trigger: Trigger) -> None:
        fired.append(trigger.reason)
        (docs / "written-by-the-run.md").write_text(str(len(fired)))  # not a new trigger

    def edit_later(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 3:
            (docs / "a.md").write_text("two")

    scheduler = Scheduler(
        workspace, pipeline.spec(), run, poll_s=5, clock=clock.time, sleep=edit_later
    )
    assert scheduler.serve(until=clock.now + 60) == 1
    assert fired == ["watch:docs"]


def test_a_watched_corpus_triggers_on_a_new_version(
    workspace: Workspace, tmp_path: Path, shipped_embedder: object
) -> None:
    from slmops.data.corpus import corpora_for

    pipeline = Pipeline("follower", directory=tmp_path, watch=["corpus:kb"])
    pipeline.step("a", "python", call="os:getcwd")
    spec = pipeline.spec()
    assert watch_state(workspace, spec) == {"corpus:kb": "none"}
    (tmp_path / "k.md").write_text("# K\n\nkappa")
    corpora_for(workspace).ingest("kb", [tmp_path / "k.md"])
    assert watch_state(workspace, spec) == {"corpus:kb": "1"}


def test_a_pipeline_with_nothing_to_wait_for_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    pipeline = Pipeline("idle", directory=tmp_path)
    pipeline.step("a", "python", call="os:getcwd")
    with pytest.raises(PipelineError, match="nothing to wait for"):
        Scheduler(workspace, pipeline.spec(), lambda _t: None)
    with pytest.raises(PipelineError, match="positive number"):
        Scheduler(workspace, pipeline.spec(), lambda _t: None, cron="* * * * *", poll_s=0)


def test_the_crontab_line_runs_the_pipeline_file_in_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my pipe"
    folder.mkdir()
    (folder / "pipeline.toml").write_text(
        '[pipeline]\nname = "p"\n[steps.a]\nop = "python"\ncall = "os:getcwd"\n'
    )
    spec = load_pipeline(folder / "pipeline.toml")
    line = crontab_line(spec, "0 3 * * *", workspace=tmp_path / "ws")
    assert line.startswith("0 3 * * * mkdir -p ")
    assert f"'{folder}'" in line  # quoted: the folder name has a space
    assert "pipeline run" in line and "--trigger cron" in line
    with pytest.raises(PipelineError, match="not a cron expression"):
        crontab_line(spec, "nightly", workspace=tmp_path)
