"""The listings read a workspace's SQLite database with the standard library when that is
certainly the database opening the workspace would use, at the shipped schema
(slmops/cli/common.py: read_database), and open the workspace otherwise; the output is the
same either way."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from slmops.cli.common import read_database
from slmops.cli.main import app
from slmops.errors import ConfigError
from slmops.store.traces import list_traces, save_trace
from slmops.store.workspace import Workspace


def _traces(ws: Workspace) -> None:
    for i, (status, started) in enumerate(
        [("ok", 100.0), ("error", 300.0), ("ok", 200.0), ("error", 50.0), ("ok", 300.5)]
    ):
        save_trace(
            ws.engine,
            {
                "trace_id": f"{i:032x}",
                "name": f"run-{i}",
                "status": status,
                "started_at": started,
                "duration_ms": 12.5 * i,
                "span_count": i + 1,
                "error": "boom" if status == "error" else None,
                "attributes": {"i": i},
            },
            [],
        )


def test_the_default_database_at_the_shipped_head_is_read_directly(tmp_path):
    home = tmp_path / "quick"
    with read_database(home) as quick:
        assert quick is None  # no workspace yet: opening it makes it
    assert not home.exists()
    with Workspace.open(home) as ws:
        _traces(ws)
        expected = list_traces(ws.engine, limit=3)
    with read_database(home) as quick:
        assert quick is not None and quick.home == home.resolve()
        from slmops.cli.trace import newest_traces

        rows = newest_traces(quick.db, limit=3, status=None)
        shown = ("trace_id", "name", "status", "started_at", "duration_ms", "span_count")
        assert rows == [{key: row[key] for key in shown} for row in expected]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            quick.db.execute("DELETE FROM traces")


def test_anything_else_opens_the_workspace(tmp_path, monkeypatch):
    home = tmp_path / "quick"
    Workspace.open(home).close()
    monkeypatch.setenv("SLMOPS_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with read_database(home) as quick:
        assert quick is None  # a database_url: SQLAlchemy's, whatever it names
    monkeypatch.delenv("SLMOPS_DATABASE_URL")
    with sqlite3.connect(home / "slmops.db") as db:
        (head,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    with read_database(home) as quick:
        assert quick is None  # opening would migrate it
    with sqlite3.connect(home / "slmops.db") as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (head,))
    with read_database(home) as quick:
        assert quick is not None
    (home / "config.toml").write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError), read_database(home):
        pass  # refused as opening refuses it


@pytest.mark.parametrize("args", [[], ["--errors"], ["-n", "2"], ["--errors", "-n", "1"]])
def test_trace_list_prints_the_same_either_way(tmp_path, monkeypatch, args):
    home = tmp_path / "quick"
    with Workspace.open(home) as ws:
        _traces(ws)
    runner = CliRunner()
    command = ["trace", "list", *args, "-w", str(home)]
    quick = runner.invoke(app, command, env={"COLUMNS": "120"})
    monkeypatch.setattr("slmops.cli.trace.read_database", _Never)
    opened = runner.invoke(app, command, env={"COLUMNS": "120"})
    assert quick.exit_code == opened.exit_code == 0, quick.output + opened.output
    assert quick.output == opened.output
    assert "run-" in quick.output


def test_empty_listings_print_the_same_either_way(tmp_path, monkeypatch):
    home = tmp_path / "quick"
    Workspace.open(home).close()
    runner = CliRunner()
    outputs = {}
    for group in ("trace", "data", "model"):
        outputs[group] = runner.invoke(app, [group, "list", "-w", str(home)]).output
    for group in ("trace", "data", "model"):
        monkeypatch.setattr(f"slmops.cli.{group}.read_database", _Never)
        assert runner.invoke(app, [group, "list", "-w", str(home)]).output == outputs[group]
    assert outputs["trace"].startswith("No traces yet")
    assert outputs["data"].startswith("No corpora yet")
    assert outputs["model"].startswith("No registered models yet")


class _Never:
    """read_database as when the workspace must be opened."""

    def __init__(self, _workspace: object) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        pass
