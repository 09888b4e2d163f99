"""Console pages that need the shipped embedder: passage text from a real corpus version,
and drift computed on request."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from slmops.store import Workspace
from slmops.ui import create_console
from tests.ui.data import STACK, build

pytestmark = pytest.mark.model


def test_a_trace_page_shows_the_text_of_the_passages_it_retrieved(
    workspace: Workspace, handbook: Any
):
    rows = handbook.vector_index(handbook.resolve("docs@1")).rows
    chosen = [rows[0], rows[4]]
    data = build(workspace.engine, count=8, chunk_ids=tuple(r["chunk_id"] for r in chosen))
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        page = client.get(f"/traces/{data.stack_ids[1]}").text
    for row in chosen:
        first_line = str(row["text"]).splitlines()[0]
        assert first_line.replace("'", "&#39;").replace('"', "&#34;") in page
    assert "text unavailable" not in page


def test_drift_is_computed_only_when_asked_for(workspace: Workspace):
    build(workspace.engine)
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        plain = client.get(f"/monitor/{STACK}?window=6h&last=24h").text
        assert "Compute drift" in plain and "query_embedding_mmd" not in plain
        page = client.get(f"/monitor/{STACK}?window=6h&last=24h&drift=1")
    assert page.status_code == 200
    text = page.text
    assert "Compute drift" not in text
    for measure in ("query_embedding_mmd", "output_length_ks", "refusal_rate"):
        assert measure in text
