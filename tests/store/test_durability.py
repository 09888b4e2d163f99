"""Durability: artifacts fsynced before and after their move; the SQLite sync setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from slmops.errors import ConfigError
from slmops.store import Workspace
from slmops.store.artifacts import STAGING, ArtifactStore


def test_put_bytes_fsyncs_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store.put_bytes("eval-datasets/qs/v1.jsonl", b"{}\n")
    folder = str(tmp_path / "artifacts" / "eval-datasets" / "qs")
    assert (Path(folder) / "v1.jsonl").read_bytes() == b"{}\n"
    # the temporary (its contents before the rename), then the folder (the rename itself)
    assert any(p.startswith(str(tmp_path / "artifacts" / STAGING)) for p in synced), synced
    assert synced[-1] == folder
    # the folders made on the way were made durable in their parents too
    assert str(tmp_path / "artifacts" / "eval-datasets") in synced
    synced.clear()
    store.put_bytes("eval-datasets/qs/v2.jsonl", b"[]\n")
    assert len(synced) == 2, synced  # an existing folder: the file and the folder only
    assert list((tmp_path / "artifacts" / STAGING).iterdir()) == []


def test_a_failed_write_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(Exception, match="Input/output error"):
        store.put_bytes("a/b.bin", b"x")
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []
    assert not (tmp_path / "artifacts" / "a" / "b.bin").exists()


def _synchronous(workspace: Workspace) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.execute(text("PRAGMA synchronous")).scalar_one())


def test_sqlite_synchronous_follows_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLMOPS_SQLITE_SYNCHRONOUS", raising=False)
    with Workspace.open(tmp_path / "default") as workspace:
        assert workspace.settings.sqlite_synchronous == "normal"
        assert _synchronous(workspace) == 1  # NORMAL
    home = tmp_path / "full"
    home.mkdir()
    (home / "config.toml").write_text('sqlite_synchronous = "full"\n')
    with Workspace.open(home) as workspace:
        assert _synchronous(workspace) == 2  # FULL
    monkeypatch.setenv("SLMOPS_SQLITE_SYNCHRONOUS", "NORMAL")  # the environment wins
    with Workspace.open(home) as workspace:
        assert _synchronous(workspace) == 1


def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "bad"
    home.mkdir()
    (home / "config.toml").write_text('sqlite_synchronous = "off"\n')
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        Workspace.open(home)
