"""slmops data ... as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import assert_one_line_error, python_in, slmops

pytestmark = pytest.mark.model


def test_data_commands_end_to_end(tmp_path):
    home, docs = tmp_path / "ws", tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    (docs / "shipping.md").write_text("# Shipping\n\nShipping is free over 50 euros.\n")
    (docs / "broken.txt").write_bytes(b"\x00\x00binary")

    first = slmops("data", "ingest", str(docs), "--corpus", "kb", "-m", "first", home=home)
    assert first.returncode == 0, first.stderr
    assert "skipped" in first.stdout and "broken.txt: binary content" in first.stdout
    assert "kb@1 committed: 2 documents, 2 chunks: 2 added" in first.stdout

    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take ten business days.\n")
    second = slmops("data", "ingest", str(docs), "--corpus", "kb", "-m", "ten days", home=home)
    assert "kb@2 committed" in second.stdout and "1 embedded" in second.stdout
    again = slmops("data", "ingest", str(docs), "--corpus", "kb", home=home)
    assert "nothing changed" in again.stdout

    found = slmops("data", "search", "kb", "how long do refunds take", "-k", "1", home=home)
    assert "ten business days" in found.stdout and "refunds.md, lines 3-3" in found.stdout
    old = slmops(
        "data", "search", "kb@1", "how long do refunds take", "-k", "1", "--json", home=home
    )
    payload = json.loads(old.stdout)
    assert payload["version"] == 1 and "five" in payload["hits"][0]["text"]
    filtered = slmops(
        "data", "search", "kb", "free", "--mode", "fts", "--where", "doc_id=shipping.md", home=home
    )
    assert "shipping.md" in filtered.stdout and "refunds.md" not in filtered.stdout

    lineage = (
        "from slmops.core import use_workspace\n"
        "from slmops.data.retrieve import Retrieve\n"
        "with use_workspace():\n"
        "    print(Retrieve('kb', k=1).invoke('refund time').trace_id)\n"
    )
    trace_id = python_in(home, lineage)
    shown = slmops("trace", "show", trace_id, home=home).stdout
    assert "corpus=kb version=2" in shown and "sources: refunds.md, lines 3-3" in shown

    assert slmops("data", "tag", "kb", "1", "launch", home=home).returncode == 0
    log = slmops("data", "log", "kb", home=home).stdout
    assert "ten days" in log and "first" in log and "launch" in log
    diff = slmops("data", "diff", "kb", "1", "2", home=home).stdout
    assert "changed refunds.md" in diff and "+1 -1 chunks" in diff
    checkout = slmops("data", "checkout", "kb@launch", home=home)
    assert "kb now serves version 1" in checkout.stdout
    listing = slmops("data", "list", home=home).stdout
    assert "kb" in listing and "local:all-minilm-l6-v2" in listing

    exported = tmp_path / "kb.parquet"
    assert slmops("data", "export", "kb@2", str(exported), home=home).returncode == 0
    imported = slmops("data", "import", str(exported), "--name", "kb2", home=home)
    assert "imported kb2@1: 2 chunks" in imported.stdout


def test_data_errors_are_one_red_line(tmp_path):
    assert_one_line_error(
        slmops("data", "search", "ghost", "x", home=tmp_path), "no corpus named 'ghost'"
    )
    assert_one_line_error(slmops("data", "log", "ghost", home=tmp_path), "no corpus named")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("text")
    assert_one_line_error(
        slmops("data", "ingest", str(docs), "-c", "Bad Name", home=tmp_path),
        "corpus name 'Bad Name'",
    )


def test_ingest_refuses_to_lose_documents_by_mistake(tmp_path):
    home, docs, other = tmp_path / "ws", tmp_path / "docs", tmp_path / "other"
    docs.mkdir()
    other.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    (docs / "shipping.md").write_text("# Shipping\n\nShipping is free over 50 euros.\n")
    (other / "returns.md").write_text("# Returns\n\nReturns are accepted for 30 days.\n")
    assert slmops("data", "ingest", str(docs), "-c", "kb", home=home).returncode == 0

    typo = tmp_path / "dcos"
    assert_one_line_error(
        slmops("data", "ingest", str(typo), "-c", "kb", home=home),
        f"path {typo} does not exist; nothing was ingested into corpus 'kb'",
    )
    refused = slmops("data", "ingest", str(other), "-c", "kb", home=home)
    assert_one_line_error(refused, "would remove 2 of the 2 documents of kb@1")
    assert "--allow-removals" in refused.stderr and "--add" in refused.stderr

    added = slmops("data", "ingest", str(other), "-c", "kb", "--add", "-m", "returns", home=home)
    assert "kb@2 committed: 3 documents, 3 chunks: 1 added, 0 removed" in added.stdout
    replaced = slmops(
        "data", "ingest", str(other), "-c", "kb", "--allow-removals", "-m", "only", home=home
    )
    assert "kb@3 committed: 1 documents" in replaced.stdout
    assert "2 documents removed" in replaced.stdout
