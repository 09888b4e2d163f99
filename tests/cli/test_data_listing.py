"""``slmops data list`` reads the corpus catalogue in one query (slmops/cli/data.py:
CORPUS_ROWS; SQLite through the standard library) instead of through ``Corpora``: the same
rows, the same table, either way."""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import insert, text
from typer.testing import CliRunner

from slmops.cli.data import CORPUS_ROWS
from slmops.cli.main import app
from slmops.data.corpus import corpora_for
from slmops.store.schema import corpora, corpus_versions
from slmops.store.workspace import Workspace


def _catalogue(ws: Workspace) -> None:
    """Three corpora as ingests leave them in the catalogue (no LanceDB table is read)."""
    with ws.engine.begin() as connection:
        for name, checked_out in (("handbook", 1), ("empty", None), ("faq", None)):
            connection.execute(
                insert(corpora),
                [
                    {
                        "name": name,
                        "embedder": f"local:{name}-embedder",
                        "dimension": 8,
                        "chunk_tokens": 200,
                        "overlap_tokens": 32,
                        "created_at": 1.0,
                        "checked_out": checked_out,
                    }
                ],
            )
        versions = [("handbook", 1, 10), ("handbook", 2, 14), ("handbook", 3, 12), ("faq", 1, 5)]
        connection.execute(
            insert(corpus_versions),
            [
                {
                    "corpus": corpus,
                    "version": version,
                    "lance_version": version,
                    "message": "",
                    "created_at": float(version),
                    "documents": 1,
                    "chunks": chunks,
                    "stats": {},
                }
                for corpus, version, chunks in versions
            ],
        )


def _rows(ws: Workspace) -> list[tuple]:
    with ws.engine.connect() as connection:
        through_sqlalchemy = [tuple(row) for row in connection.execute(text(CORPUS_ROWS))]
    with sqlite3.connect(ws.home / "slmops.db") as db:
        assert [tuple(row) for row in db.execute(CORPUS_ROWS)] == through_sqlalchemy
    return through_sqlalchemy


def test_rows_are_what_corpora_tells(tmp_path):
    with Workspace.open(tmp_path / "data-listing") as ws:
        assert _rows(ws) == []
        _catalogue(ws)
        rows = _rows(ws)
        corpora_api = corpora_for(ws)
        expected = []
        for name in corpora_api.names():
            info, log = corpora_api.info(name), corpora_api.log(name)
            latest = log[0] if log else None
            expected.append(
                (
                    name,
                    info["checked_out"],
                    info["embedder"],
                    latest.version if latest else None,
                    latest.chunks if latest else None,
                )
            )
    assert rows == expected
    assert rows == [
        ("empty", None, "local:empty-embedder", None, None),
        ("faq", None, "local:faq-embedder", 1, 5),
        ("handbook", 1, "local:handbook-embedder", 3, 12),
    ]


@pytest.mark.parametrize("quick", [True, False])
def test_the_listing_prints_them(tmp_path, monkeypatch, quick):
    home = tmp_path / "data-listing"
    with Workspace.open(home) as ws:
        _catalogue(ws)
    if not quick:  # as when the database is not the default SQLite file, say
        monkeypatch.setattr("slmops.store.workspace._shipped_head", lambda: None)
    result = CliRunner().invoke(app, ["data", "list", "-w", str(home)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    rows = [re.split("[│┃]", line)[1:-1] for line in result.output.splitlines()]
    cells = [[cell.strip() for cell in row] for row in rows if row]
    assert cells == [
        ["corpus", "latest", "checked out", "chunks", "embedder"],
        ["empty", "-", "latest", "0", "local:empty-embedder"],
        ["faq", "1", "latest", "5", "local:faq-embedder"],
        ["handbook", "3", "1", "12", "local:handbook-embedder"],
    ]
