from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from slmops.data.corpus import Corpora, CorpusBusyError, DataError, TooManyRemovalsError
from slmops.errors import NotFoundError, WorkspaceError

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


def test_export_import_round_trip_keeps_vectors(corpora, docs, tmp_path, monkeypatch):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    exported = corpora.export("kb@1", tmp_path / "kb.parquet")
    imported = corpora.import_(exported, name="kb-copy")
    assert imported.chunks == 4 and imported.stats["embedded"] == 0
    assert "import of kb@1" in imported.message
    original = corpora.search("kb", "refunds", k=2)[1]
    copy = corpora.search("kb-copy", "refunds", k=2)[1]
    assert [h.chunk_id for h in original] == [h.chunk_id for h in copy]
    with monkeypatch.context() as patch:  # refused before the embedder is loaded
        patch.setattr("slmops.data.corpus.load_embedder", pytest.fail)
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


# --- guards against losing documents ------------------------------------------------------


def test_a_path_that_does_not_exist_commits_nothing(corpora, docs, tmp_path):
    with pytest.raises(DataError, match=r"path .*typo does not exist; nothing was ingested"):
        corpora.ingest("kb", [tmp_path / "typo"])
    assert "kb" not in corpora.names()  # not even an empty corpus
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    with pytest.raises(DataError, match=r"paths .*typo, .*other do not exist"):
        corpora.ingest("kb", [docs, tmp_path / "typo", tmp_path / "other"], allow_removals=True)
    assert [v.version for v in corpora.log("kb")] == [1]


def test_removing_most_documents_needs_allow_removals(corpora, docs, tmp_path):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    (docs / "serve.md").unlink()
    (docs / "faq.txt").unlink()
    with pytest.raises(TooManyRemovalsError, match=r"remove 2 of the 3 documents of kb@1") as err:
        corpora.ingest("kb", [docs])
    assert "--allow-removals" in str(err.value) and "faq.txt, serve.md" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TooManyRemovalsError, match="remove 3 of the 3 documents"):
        corpora.ingest("kb", [empty])
    assert [v.version for v in corpora.log("kb")] == [1]
    assert len(corpora.rows("kb")) == 4  # the table is as version 1 left it

    # wait=1: a writer lock left held by the refused ingests fails fast
    report = corpora.ingest("kb", [docs], allow_removals=True, message="only install", wait=1)
    assert (report.version, report.removed_documents, report.documents) == (2, 2, 1)
    assert {r["doc_id"] for r in corpora.rows("kb@2", ("doc_id",))} == {"install.md"}


def test_add_keeps_the_other_documents(corpora, docs, tmp_path):
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    more = tmp_path / "more"
    more.mkdir()
    write(more, {"new.md": "A brand new page about tracing.\n"})
    (more / "faq.txt").write_text("Refunds take ten business days.\n\nSupport answers in a day.\n")
    report = corpora.ingest("kb", [more], add=True)
    assert report.version == 2 and report.removed_documents == 0
    assert (report.documents, report.added, report.removed, report.unchanged) == (4, 2, 1, 3)
    held = {r["doc_id"] for r in corpora.rows("kb@2", ("doc_id",))}
    assert held == {"install.md", "serve.md", "faq.txt", "new.md"}
    version = corpora.resolve("kb@2")
    assert (version.documents, version.chunks) == (4, 5)
    assert version.message == "add or update 2 documents"
    assert "ten business days" in corpora.search("kb", "How long do refunds take?", k=1)[1][0].text
    assert corpora.ingest("kb", [more], add=True).version is None  # nothing changed

    # a text the corpus already holds (in a document not given) is not stored twice
    write(more, {"copy.md": "A brand new page about tracing.\n"})
    assert corpora.ingest("kb", [more / "copy.md"], add=True).duplicates == 1


# --- concurrent writers -------------------------------------------------------------------


def test_an_ingest_waits_a_bounded_time_for_another_writer(corpora, docs):
    from filelock import FileLock

    write(docs, HANDBOOK)
    stages = []
    held = FileLock(str(corpora.lock_path("kb")))  # another process is writing kb
    with held, pytest.raises(CorpusBusyError, match="'kb' is being written by another process"):
        corpora.ingest("kb", [docs], wait=0.2, on_progress=lambda s, d, t: stages.append(s))
    assert stages == ["waiting"]  # it said why it stood still
    assert corpora.ingest("kb", [docs]).version == 1  # the lock is free again


def test_the_writer_lock_is_released_when_the_progress_callback_raises(corpora):
    from filelock import FileLock

    def broken_display(stage, done, total):
        if done == 1:
            raise RuntimeError("the display broke")

    held = FileLock(str(corpora.lock_path("kb")), thread_local=False)
    held.acquire()
    timer = threading.Timer(0.3, held.release)  # the other writer finishes
    timer.start()
    try:
        with (
            pytest.raises(RuntimeError, match="display broke"),
            corpora.writing("kb", wait=30, on_progress=broken_display),
        ):
            pass
    finally:
        timer.join()
    with corpora.writing("kb", wait=0):  # not left held
        pass


def test_a_writer_lock_that_cannot_be_taken_is_a_clear_error(corpora):
    path = corpora.lock_path("kb")
    path.mkdir(parents=True)  # stands for another user's lock file, a read-only folder
    taken = r"cannot take the writer lock of corpus 'kb' \(.*corpus-kb\.lock\)"
    with pytest.raises(WorkspaceError, match=taken), corpora.writing("kb"):
        pass
    with (
        pytest.raises(DataError, match="0 or more seconds, not nan"),
        corpora.writing("kb", wait=float("nan")),
    ):
        pass


def test_a_lancedb_commit_conflict_is_a_busy_corpus(corpora, docs, monkeypatch):
    """A writer outside the lock that LanceDB itself catches (here: a restore of the table
    while this ingest deletes chunks) commits nothing either."""
    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    (docs / "faq.txt").write_text("Refunds take ten business days.\n")
    real_write = Corpora._write

    def another_writer_first(self, name, table, rows, to_remove, dimension):
        other = self.db.open_table(name)
        other.restore(other.version - 1)
        return real_write(self, name, table, rows, to_remove, dimension)

    monkeypatch.setattr(Corpora, "_write", another_writer_first)
    with pytest.raises(CorpusBusyError, match="written by another process"):
        corpora.ingest("kb", [docs])
    assert [v.version for v in corpora.log("kb")] == [1]


def test_a_writer_outside_the_lock_makes_the_other_commit_nothing(corpora, docs, monkeypatch):
    """Two machines on one S3 store do not share a lock file; the checks before the commit
    still keep each version to what its own ingest wrote."""
    import contextlib

    from sqlalchemy import insert

    from slmops.store.schema import corpus_versions

    write(docs, HANDBOOK)
    corpora.ingest("kb", [docs])
    (docs / "new.md").write_text("A brand new page.\n")
    monkeypatch.setattr(Corpora, "writing", lambda *a, **k: contextlib.nullcontext())
    real_write = Corpora._write

    def another_writer_first(self, name, table, rows, to_remove, dimension):
        foreign = self.db.open_table(name).to_arrow().slice(0, 1).to_pylist()[0]
        self.db.open_table(name).add([{**foreign, "chunk_id": "foreign"}])
        return real_write(self, name, table, rows, to_remove, dimension)

    monkeypatch.setattr(Corpora, "_write", another_writer_first)
    with pytest.raises(CorpusBusyError, match="written by another process during this ingest"):
        corpora.ingest("kb", [docs])
    assert [v.version for v in corpora.log("kb")] == [1]

    def another_commit_first(self, name, table, rows, to_remove, dimension):
        with self.workspace.engine.begin() as connection:
            connection.execute(
                insert(corpus_versions).values(
                    corpus=name,
                    version=2,
                    lance_version=1,
                    message="theirs",
                    created_at=0.0,
                    documents=0,
                    chunks=0,
                    stats={},
                )
            )
        return real_write(self, name, table, rows, to_remove, dimension)

    monkeypatch.setattr(Corpora, "_write", another_commit_first)
    with pytest.raises(CorpusBusyError, match="got version 2 from another process"):
        corpora.ingest("kb", [docs])
    assert corpora.log("kb")[0].message == "theirs"  # theirs stands


def _ingest_at_the_barrier(home: str, folder: str, message: str, barrier, results) -> None:
    """One of two processes ingesting into one corpus at the same moment (a spawn target)."""
    from slmops.errors import SlmopsError
    from slmops.models.loading import load_embedder
    from slmops.store import Workspace

    with Workspace.open(home) as workspace:
        load_embedder(workspace.settings.embedder)  # both load first, so both ingest at once
        barrier.wait(timeout=120)
        try:
            report = Corpora(workspace).ingest(
                "cc", [folder], message=message, allow_removals=True, wait=60
            )
            results.put((message, report.version, ""))
        except SlmopsError as exc:
            results.put((message, None, f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a raw error is the bug this test is for: report it
            results.put((message, None, f"RAW {type(exc).__name__}: {exc}"))


def test_two_processes_ingesting_one_new_corpus_each_commit_their_own_version(workspace, tmp_path):
    import multiprocessing

    folders = {}
    for side in ("A", "B"):
        folder = tmp_path / f"folder-{side}"
        folder.mkdir()
        write(
            folder,
            {f"{side}{i}.md": f"Page {i} of folder {side} about {side}{i}.\n" for i in range(3)},
        )
        folders[f"from {side}"] = folder
    context = multiprocessing.get_context("spawn")  # no forked copy of the test's torch state
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(
            target=_ingest_at_the_barrier,
            args=(str(workspace.home), str(folder), message, barrier, results),
            daemon=True,
        )
        for message, folder in folders.items()
    ]
    try:
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=240) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
    assert all(p.exitcode == 0 for p in processes)
    assert all(not error for _, _, error in outcomes), outcomes
    assert sorted(version for _, version, _ in outcomes) == [1, 2]

    after = Corpora(workspace)
    log = after.log("cc")
    assert [v.version for v in log] == [2, 1]
    for message, version, _ in outcomes:
        [committed] = [v for v in log if v.version == version]
        assert committed.message == message
        own = {p.name for p in folders[message].iterdir()}
        held = {row["doc_id"] for row in after.rows(f"cc@{version}", ("doc_id",))}
        assert held == own, (message, version)
        assert committed.documents == len(own)
