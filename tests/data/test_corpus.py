from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from slmops.data.corpus import Corpora, DataError
from slmops.errors import NotFoundError

pytestmark = pytest.mark.model  # embeds with the shipped embedder

HANDBOOK = {
    "install.md": "# Install\n\nInstall slmops with pip install slmops.\n\n"
    "# Upgrade\n\nUpgrade with pip install --upgrade slmops.\n",
    "serve.md": "# Serve\n\nslmops serve starts an OpenAI-compatible server on port 8000.\n",
    "faq.txt": "Refunds take five business days.\n\nSupport answers within one day.\n",
}


def write(folder, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(text)


def test_ingest_commits_a_version_and_reingest_embeds_only_changes(corpora, docs):
    write(docs, HANDBOOK)
    first = corpora.ingest("handbook", [docs], message="initial import")
    # install.md: 2 sections; serve.md: 1; faq.txt: its two short paragraphs share a chunk
    assert (first.version, first.documents, first.chunks) == (1, 3, 4)
    assert (first.added, first.embedded, first.removed) == (4, 4, 0)

    (docs / "faq.txt").write_text(
        "Refunds take ten business days.\n\nSupport answers within one day.\n"
    )
    (docs / "serve.md").unlink()
    (docs / "new.md").write_text("# New\n\nA brand new page about tracing.\n")
    second = corpora.ingest("handbook", [docs], message="edit faq, drop serve, add new")
    assert second.version == 2
    assert second.embedded == 2  # the edited refunds paragraph and the new page; nothing else
    assert (second.added, second.removed, second.unchanged) == (2, 2, 2)

    nothing = corpora.ingest("handbook", [docs])
    assert nothing.version is None and nothing.embedded == 0
    assert [v.version for v in corpora.log("handbook")] == [2, 1]
    assert corpora.log("handbook")[1].message == "initial import"


def test_moved_text_keeps_its_vector(corpora, docs):
    (docs / "a.md").write_text("Alpha paragraph about versioned corpora.\n")
    corpora.ingest("moves", [docs])
    (docs / "a.md").write_text("\n\n\nAlpha paragraph about versioned corpora.\n")  # lines shift
    report = corpora.ingest("moves", [docs])
    assert report.version == 2 and report.embedded == 0  # re-written with its old vector
    assert (report.added, report.updated, report.unchanged) == (0, 1, 0)
    [row] = corpora.rows("moves", ("line_start",))
    assert row["line_start"] == 4


def test_duplicates_are_dropped_by_content(corpora, docs):
    write(docs, {"a.txt": "Same paragraph.", "b.txt": "Same paragraph.", "c.txt": "Unique one."})
    report = corpora.ingest("dups", [docs])
    assert (report.chunks, report.duplicates) == (2, 1)


def test_log_diff_checkout_tag_round_trip(corpora, docs):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs], message="v1")
    (docs / "faq.txt").write_text(
        "Refunds take ten business days.\n\nSupport answers within one day.\n"
    )
    (docs / "serve.md").unlink()
    (docs / "new.md").write_text("Brand new page.\n")
    corpora.ingest("kb", [docs], message="v2")

    diff = corpora.diff("kb", 1, 2)
    changes = {c.doc_id: c.change for c in diff.documents}
    assert changes == {"faq.txt": "changed", "serve.md": "removed", "new.md": "added"}
    assert (diff.chunks_added, diff.chunks_removed) == (2, 2)

    def refunds(ref: str) -> str:
        _, hits = corpora.search(ref, "How long do refunds take?", k=1)
        return hits[0].text

    assert "ten business days" in refunds("kb")
    assert "five business days" in refunds("kb@1")  # a pinned old version returns old content
    corpora.tag("kb", 1, "launch")
    assert corpora.tags("kb") == {"launch": 1}
    assert "five business days" in refunds("kb@launch")
    corpora.checkout("kb@1")
    assert corpora.resolve("kb").version == 1 and "five" in refunds("kb")
    corpora.checkout("kb@latest")
    assert corpora.resolve("kb").version == 2
    with pytest.raises(NotFoundError, match="no version 9"):
        corpora.resolve("kb@9")
    with pytest.raises(NotFoundError, match="no tag 'nope'"):
        corpora.resolve("kb@nope")
    with pytest.raises(DataError, match="tag '7'"):
        corpora.tag("kb", 1, "7")


def test_hybrid_finds_a_keyword_only_match_that_vector_search_misses(corpora, docs):
    pump = [
        "Pump error E1 means the inlet pressure is too low; check the supply valve.",
        "Pump error E2 means the motor overheated; let the pump cool for ten minutes.",
        "Pump error E3 means a blocked impeller; clear debris before restarting the pump.",
        "If the pump shows an unknown error code, restart it and read the manual on faults.",
        "Error codes on the pump display blink twice before the pump stops.",
    ]
    write(docs, {f"pump{i}.txt": text for i, text in enumerate(pump)})
    (docs / "menu.txt").write_text("The cafeteria menu lists ZQX-4417 as the Tuesday soup.")
    corpora.ingest("pumps", [docs])
    query = "what does ZQX-4417 mean for the pump"
    found = {
        mode: [h.doc_id for h in corpora.search("pumps", query, k=3, mode=mode)[1]]
        for mode in ("vector", "fts", "hybrid")
    }
    assert "menu.txt" not in found["vector"]
    assert found["fts"][0] == "menu.txt"
    assert "menu.txt" in found["hybrid"]


def test_filters_and_citations(corpora, docs):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    _, hits = corpora.search("kb", "pip install", k=5, where={"doc_id": "install.md"})
    assert hits and {h.doc_id for h in hits} == {"install.md"}
    assert hits[0].citation().startswith("install.md, lines ")
    assert hits[0].section in ("Install", "Upgrade")
    with pytest.raises(DataError, match="cannot filter on 'colour'"):
        corpora.search("kb", "x", where={"colour": "red"})
    with pytest.raises(DataError, match="query is empty"):
        corpora.search("kb", "  ")


def test_bad_names_and_missing_corpora(corpora, docs):
    write(docs, HANDBOOK)
    with pytest.raises(DataError, match="corpus name 'Bad Name'"):
        corpora.ingest("Bad Name", [docs])
    with pytest.raises(NotFoundError, match="no corpus named 'ghost'"):
        corpora.search("ghost", "x")


def test_export_import_round_trip_keeps_vectors(corpora, docs, tmp_path):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    exported = corpora.export("kb@1", tmp_path / "kb.parquet")
    imported = corpora.import_(exported, name="kb-copy")
    assert imported.chunks == 4 and imported.stats["embedded"] == 0
    assert "import of kb@1" in imported.message
    original = corpora.search("kb", "refunds", k=2)[1]
    copy = corpora.search("kb-copy", "refunds", k=2)[1]
    assert [h.chunk_id for h in original] == [h.chunk_id for h in copy]
    with pytest.raises(DataError, match="already exists"):
        corpora.import_(exported, name="kb")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(DataError, match="not an slmops corpus export"):
        corpora.import_(tmp_path / "junk.parquet")


def test_an_ingest_killed_midway_leaves_the_last_version_intact(workspace, docs):
    write(docs, HANDBOOK)
    Corpora(workspace).ingest("kb", [docs], message="good")
    (docs / "faq.txt").write_text("Refunds take ninety business days.\n")
    # Kill the ingest with SIGKILL after LanceDB has written the new rows but before the
    # version is committed: the worst moment.
    script = textwrap.dedent(f"""
        import os, signal
        from slmops.data.corpus import Corpora
        from slmops.store import Workspace
        Corpora._commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        Corpora(Workspace.open({str(workspace.home)!r})).ingest("kb", [{str(docs)!r}])
    """)
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert died.returncode == -signal.SIGKILL

    after = Corpora(workspace)
    assert [v.version for v in after.log("kb")] == [1]
    assert after.db.open_table("kb").version > after.log("kb")[0].lance_version  # it did write
    _, hits = after.search("kb", "How long do refunds take?", k=1)
    assert "five business days" in hits[0].text  # readers see only the committed version

    report = after.ingest("kb", [docs], message="retry")
    assert report.version == 2 and report.embedded == 1
    _, hits = after.search("kb", "How long do refunds take?", k=1)
    assert "ninety" in hits[0].text
    assert len(after.rows("kb")) == 4  # nothing from the dead ingest was left behind twice


def test_jsonl_metadata_is_stored_and_filterable(corpora, docs):
    (docs / "faq.jsonl").write_text(
        '{"id": "r1", "text": "Refunds take five business days.", "lang": "en", '
        '"team": "billing"}\n'
        '{"id": "r2", "text": "Les remboursements prennent cinq jours.", "lang": "fr"}\n'
        '{"id": "s1", "text": "Shipping is free over 50 euros.", "lang": "en"}\n'
    )
    corpora.ingest("faq", [docs])
    for mode in ("vector", "fts", "hybrid"):
        _, hits = corpora.search(
            "faq", "refunds remboursements", k=3, mode=mode, where={"metadata.lang": "fr"}
        )
        assert [h.doc_id for h in hits] == ["faq.jsonl#r2"], mode
    _, hits = corpora.search("faq", "refunds", k=1, where={"metadata.team": "billing"})
    assert hits[0].metadata == {"lang": "en", "team": "billing"}
    with pytest.raises(DataError, match="and metadata.KEY"):
        corpora.search("faq", "x", where={"lang": "fr"})
