"""Leftovers of killed writers: named for their owner, swept once the owner is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from slmops.store import Workspace
from slmops.store.artifacts import STAGING
from slmops.store.debris import SCRATCH, scratch_prefix
from slmops.store.owners import machine_id, owner_in, owner_tag, pid_alive

DAY = 24 * 3600


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def old(path: Path, seconds: float = 2 * DAY) -> Path:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def test_owner_tags_name_this_process() -> None:
    owner = owner_in(f"{scratch_prefix()}abcd1234")
    assert owner is not None and owner.pid == os.getpid() and owner.local
    assert owner_tag() == f"{os.getpid()}-{machine_id()}"
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())


def test_a_write_killed_mid_way_is_swept_by_the_next_open(tmp_path: Path) -> None:
    home = tmp_path / "killed"
    with Workspace.open(home) as workspace:
        workspace.artifacts.put_bytes("eval-datasets/qs/v1.jsonl", b"kept\n")
    writer = textwrap.dedent(
        f"""
        import time
        from slmops.store import artifacts
        from slmops.store.artifacts import ArtifactStore

        real = artifacts._write_durable
        def stalled(path, data):
            real(path, data)
            print("written", flush=True)
            time.sleep(600)  # killed here: between the write and the move
        artifacts._write_durable = stalled
        ArtifactStore({str(home / "artifacts")!r}).put_bytes("eval-datasets/qs/v2.jsonl", b"x")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
        staged = list((home / "artifacts" / STAGING).iterdir())
        assert len(staged) == 1 and owner_in(staged[0].name).pid == child.pid  # type: ignore[union-attr]
        with Workspace.open(home):  # the writer is alive: its temporary stays
            assert staged[0].exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with Workspace.open(home) as workspace:
        assert not staged[0].exists()
        assert workspace.artifacts.get_bytes("eval-datasets/qs/v1.jsonl") == b"kept\n"
        assert not workspace.artifacts.exists("eval-datasets/qs/v2.jsonl")


def test_the_sweep_keeps_live_and_unknown_young_leftovers(tmp_path: Path) -> None:
    home = tmp_path / "sweep"
    with Workspace.open(home) as workspace:
        workspace.artifacts.put_bytes("data/a.bin", b"a")
        staging = home / "artifacts" / STAGING
        here = machine_id()
        dead = staging / f"{dead_pid()}-{here}-{uuid.uuid4().hex}.tmp"
        live = staging / f"{owner_tag()}-{uuid.uuid4().hex}.tmp"
        remote_young = staging / f"{os.getpid()}-0badf00d-{uuid.uuid4().hex}.tmp"
        remote_old = staging / f"{os.getpid()}-0badf00d-{uuid.uuid4().hex}.tmp"
        for path in (dead, live, remote_young, remote_old):
            path.write_bytes(b"partial")
        old(remote_old)
        old(live)  # however old, a live writer's file is its own
        scratch = workspace.scratch_dir()
        dead_dir = scratch / f"{dead_pid()}-{here}-abcd1234"
        (dead_dir / "m.gguf").parent.mkdir()
        (dead_dir / "m.gguf").write_bytes(b"weights")
        live_dir = Path(tempfile.mkdtemp(dir=scratch, prefix=scratch_prefix()))

        swept = workspace.sweep_debris()

        assert sorted(swept.removed) == sorted([str(dead), str(remote_old), str(dead_dir)])
        assert swept.freed_bytes == 2 * len(b"partial") + len(b"weights")
        assert live.exists() and remote_young.exists() and live_dir.exists()
        assert workspace.artifacts.get_bytes("data/a.bin") == b"a"
        assert (home / SCRATCH).is_dir()


def test_the_deep_sweep_takes_older_kinds_of_leftovers_by_age(tmp_path: Path) -> None:
    home = tmp_path / "deep"
    with Workspace.open(home) as workspace:
        workspace.artifacts.put_bytes("eval-datasets/qs/v1.jsonl", b"v1")
        folder = home / "artifacts" / "eval-datasets" / "qs"
        legacy_old = folder / f".{uuid.uuid4().hex}.tmp"  # written before the staging folder
        legacy_old.write_bytes(b"x")
        old(legacy_old)
        legacy_young = folder / f".{uuid.uuid4().hex}.tmp"
        legacy_young.write_bytes(b"x")
        legacy_scratch = home / "tmpab_cd123"
        (legacy_scratch / "m").mkdir(parents=True)
        old(legacy_scratch / "m")
        old(legacy_scratch)
        partial = home / "models" / "registry" / "tiny" / ".0123456789abcdef.partial"
        partial.mkdir(parents=True)
        old(partial)
        young_partial = home / "training" / "r1" / "checkpoints" / ".step-2.ab12cd34.partial"
        young_partial.mkdir(parents=True)
        user_file = home / "notes.tmp"  # not a name slmops makes: never touched
        user_file.write_text("mine")
        old(user_file)

        assert workspace.sweep_debris().removed == []  # the cheap sweep does not walk
        swept = workspace.sweep_debris(deep=True)

        assert sorted(swept.removed) == sorted(
            str(p) for p in (legacy_old, legacy_scratch, partial)
        )
        assert legacy_young.exists() and young_partial.exists() and user_file.exists()
        assert workspace.artifacts.get_bytes("eval-datasets/qs/v1.jsonl") == b"v1"


def test_slmops_clean_runs_the_deep_sweep(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slmops.cli.main import app

    home = tmp_path / "clean"
    with Workspace.open(home) as workspace:
        workspace.artifacts.put_bytes("data/a.bin", b"a")
    legacy = home / "artifacts" / "data" / f".{uuid.uuid4().hex}.tmp"
    legacy.write_bytes(b"xyz")
    old(legacy, 3 * 3600)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    kept = runner.invoke(app, ["clean", "-w", str(home)])  # 3 hours old: kept at 24 h
    assert kept.exit_code == 0, kept.output
    assert "0 leftovers removed" in kept.output and legacy.exists()
    cleaned = runner.invoke(app, ["clean", "--older-than-hours", "2", "-w", str(home)])
    assert cleaned.exit_code == 0, cleaned.output
    assert "1 leftovers removed" in cleaned.output and not legacy.exists()
    with Workspace.open(home) as workspace:
        assert workspace.artifacts.get_bytes("data/a.bin") == b"a"
    refused = runner.invoke(app, ["clean", "--older-than-hours", "-1", "-w", str(home)])
    assert refused.exit_code == 2
