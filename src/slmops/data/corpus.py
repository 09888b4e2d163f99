"""Versioned corpora on LanceDB.

A corpus is one LanceDB table in the workspace's artifact store plus rows in the metadata
database. Every ingest is a commit: it brings the table to the new content (deleting removed
chunks, adding new ones, rebuilding the full-text index) and then records a corpus version
pinning the LanceDB table version it reached. Readers only ever see committed versions, so an
ingest that dies midway leaves the last committed version intact; the next ingest first
restores the table to it.

Writers of one corpus take turns. An ingest (or import) holds the corpus' writer lock, a
file lock, from reading the latest version until its version row is committed: restoring the
table, writing it and numbering the version all assume nobody else writes the corpus
meanwhile. Two writers that do not share the lock file (two machines on one S3 store, each
with its own workspace folder) are caught instead: a writer whose LanceDB commit conflicts
with the other's, whose table version holds anything but what it wrote, or whose version
number was taken, commits nothing and fails with :class:`CorpusBusyError`. (LanceDB's
conflicts are told by their message; one it words otherwise still commits nothing, but
comes out as LanceDB's own error.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from slmops.data.chunking import Chunk, Chunker
from slmops.data.documents import Skipped, load_paths
from slmops.errors import BusyError, NotFoundError, SlmopsError, WorkspaceError
from slmops.models.base import Embedder
from slmops.models.loading import load_embedder
from slmops.store.names import name_problem, tag_problem
from slmops.store.refs import select_version, split_ref
from slmops.store.schema import corpora, corpus_versions
from slmops.store.workspace import Workspace

if TYPE_CHECKING:  # numpy: imported when a search needs it, not to list corpora
    from slmops.data.vector_index import ExactVectorIndex

SearchMode = Literal["vector", "fts", "hybrid"]
Progress = Callable[[str, int, int], None]  # (stage, done, total)
EmbedBatches = Callable[[list[list[str]]], Iterator[Any]]
"""Embeds batches of texts, yielding each batch's vectors in order: the embedder itself by
default; a pool of Ray actors spreads them over a cluster (slmops.pipelines.ray_executor)."""

# How long an ingest waits for another writer of the same corpus before giving up: long
# enough for a typical ingest to finish, short enough that a stuck one is noticed.
DEFAULT_WRITE_WAIT = 600.0

# How LanceDB (lance 13) reports a write that collided with another writer's: a commit
# conflict (RuntimeError), or the new corpus' table created meanwhile (ValueError).
_WRITE_CONFLICT = re.compile(
    r"commit conflict|incompatible transaction|^table .* already exists", re.IGNORECASE
)

FILTER_COLUMNS = ("doc_id", "source", "file_type", "section", "page_start", "line_start")
_COLUMNS = [
    "chunk_id",
    "text",
    "text_hash",
    "doc_id",
    "source",
    "file_type",
    "section",
    "ordinal",
    "tokens",
    "line_start",
    "line_end",
    "page_start",
    "page_end",
    "metadata",
]


class DataError(SlmopsError):
    """A corpus operation cannot be done as asked."""


class CorpusBusyError(DataError, BusyError):
    """Another process is writing the corpus: the wait for it ran out, or it wrote the
    corpus while this ingest did (then nothing of this ingest was committed)."""


class TooManyRemovalsError(DataError):
    """An ingest would remove most of the corpus' documents and was not told it may."""


@dataclass(frozen=True)
class CorpusVersion:
    corpus: str
    version: int
    lance_version: int
    message: str
    created_at: float
    documents: int
    chunks: int
    stats: dict[str, Any]


@dataclass
class IngestReport:
    corpus: str
    version: int | None  # None when nothing changed (no version is committed)
    documents: int = 0
    chunks: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0  # same chunk, new fields (its source path or location moved)
    unchanged: int = 0
    removed_documents: int = 0  # documents of the latest version the new one no longer has
    embedded: int = 0
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)


class Hit(BaseModel):
    chunk_id: str
    text: str
    score: float
    doc_id: str
    source: str
    location: str
    section: str
    file_type: str
    metadata: dict[str, Any] = {}

    def citation(self) -> str:
        where = f", {self.location}" if self.location else ""
        return f"{self.doc_id}{where}"


ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class DocumentChange:
    doc_id: str
    change: ChangeKind
    chunks_added: int
    chunks_removed: int


@dataclass
class CorpusDiff:
    corpus: str
    old: int
    new: int
    documents: list[DocumentChange]
    chunks_added: int
    chunks_removed: int


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``handbook``, ``handbook@7``, ``handbook@release-1``, ``handbook@latest``."""
    name, selector = split_ref(ref)
    if not name or selector == "":
        raise DataError(f"corpus reference {ref!r} is not NAME[@VERSION|@TAG|@latest]")
    return name, selector


def _location(row: dict[str, Any]) -> str:
    chunk = Chunk(
        doc_id="",
        source="",
        file_type="",
        text="",
        section="",
        ordinal=0,
        tokens=0,
        line_start=row.get("line_start"),
        line_end=row.get("line_end"),
        page_start=row.get("page_start"),
        page_end=row.get("page_end"),
    )
    return chunk.location


def _sql_literal(value: Any) -> str:
    # Only strings and finite numbers: a list or table (from a manifest's 'where') would be
    # quoted as its repr and match nothing, and repr(nan) or repr(inf) is no SQL literal.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"filter value {value!r} must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"filter value {value!r} must be a finite number")
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


def split_filter(where: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(columns, metadata)``: filters on the columns every chunk has, and on the fields of
    its document's metadata (written ``metadata.KEY``)."""
    columns: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in (where or {}).items():
        if key.startswith("metadata.") and len(key) > len("metadata."):
            metadata[key.removeprefix("metadata.")] = value
        elif key in FILTER_COLUMNS:
            _sql_literal(value)  # validates the value's type
            columns[key] = value
        else:
            raise DataError(
                f"cannot filter on {key!r}; filterable: {', '.join(FILTER_COLUMNS)} "
                "and metadata.KEY"
            )
    return columns, metadata


_DIGITS = re.compile(r"[0-9]+")


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``--where`` options (``COLUMN=VALUE``, ``metadata.KEY=VALUE``) as a checked filter; a
    value of ASCII digits is a number (``page_start=3``), anything else text."""
    filters: dict[str, Any] = {}
    for item in items:
        column, sep, raw = item.partition("=")
        if not sep:
            raise DataError(f"{item!r} is not COLUMN=VALUE")
        value: Any = raw.strip()
        # ASCII only: str.isdigit() is true for "²", which int() refuses.
        if _DIGITS.fullmatch(value):
            try:
                value = int(value)
            except ValueError:  # over Python's 4300-digit limit: no page is numbered so
                raise DataError(f"{item!r}: the number is too long") from None
        filters[column.strip()] = value
    split_filter(filters)  # names an unknown column or a bad value
    return filters


def filter_sql(where: dict[str, Any] | None) -> str | None:
    """A SQL filter for the column part of ``where`` (metadata keys are checked separately)."""
    columns, _ = split_filter(where)
    return " AND ".join(f"{c} = {_sql_literal(v)}" for c, v in columns.items()) or None


def check_ingest(name: str, paths: Sequence[str | Path]) -> list[Path]:
    """The paths of an ingest into corpus ``name``, checked before anything is loaded: a
    path that does not exist is a mistake (a typo), never an empty folder."""
    problem = name_problem("corpus", name)
    if problem:
        raise DataError(problem)
    roots = [Path(p) for p in paths]
    if not roots:
        raise DataError(f"no paths given to ingest into corpus {name!r}")
    missing = [str(root) for root in roots if not root.exists()]
    if len(missing) == 1:
        raise DataError(
            f"path {missing[0]} does not exist; nothing was ingested into corpus {name!r}"
        )
    if missing:
        raise DataError(
            f"paths {', '.join(missing)} do not exist; nothing was ingested into corpus {name!r}"
        )
    return roots


def metadata_matches(row: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if not wanted:
        return True
    metadata = json.loads(row.get("metadata") or "{}")
    return all(metadata.get(key) == value for key, value in wanted.items())


class Corpora:
    """The corpora of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._db: Any = None
        self._tables: dict[tuple[str, int], Any] = {}
        self._indexes: dict[tuple[str, int], ExactVectorIndex] = {}
        self.max_cached_versions = 4
        self._lock = threading.Lock()

    # --- storage -------------------------------------------------------------------------

    @property
    def db(self) -> Any:
        if self._db is None:
            # LanceDB's Rust core logs deprecation notices to stderr; users see our errors.
            os.environ.setdefault("LANCEDB_LOG", "error")
            import lancedb

            self._db = lancedb.connect(self.workspace.artifacts.uri("lancedb"))
        return self._db

    def _open_table(self, name: str) -> Any:
        """The corpus' writable LanceDB table, or None when it has none yet."""
        try:
            return self.db.open_table(name)
        except ValueError as exc:
            if "not found" in str(exc):
                return None
            raise

    def lock_path(self, name: str) -> Path:
        """The file behind corpus ``name``'s writer lock. Beside the LanceDB tables when the
        artifact store is a folder (a shared mount too: every workspace writing those tables
        then takes turns); an object store (S3) cannot hold a file lock, so then it is in the
        workspace folder and covers the processes that open this workspace."""
        uri = self.workspace.artifacts.uri(f"locks/corpus-{name}.lock")
        if "://" not in uri:
            return Path(uri)
        return self.workspace.home / "locks" / f"corpus-{name}.lock"

    @contextlib.contextmanager
    def writing(
        self, name: str, *, wait: float = DEFAULT_WRITE_WAIT, on_progress: Progress | None = None
    ) -> Iterator[None]:
        """Hold corpus ``name``'s writer lock, waiting up to ``wait`` seconds (``math.inf``:
        as long as it takes) for another writer (then :class:`CorpusBusyError`). It protects
        the whole read-latest, write the table, commit the version sequence: without it two
        ingests restore, overwrite and number versions over each other (a version holding
        another ingest's documents)."""
        from filelock import FileLock, Timeout

        if not wait >= 0:  # NaN too: it would wait forever
            raise DataError(f"the wait for another writer must be 0 or more seconds, not {wait}")
        path = self.lock_path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create the corpus lock folder {path.parent}: {exc}"
            ) from exc
        # Readable and writable by all: on a shared mount the next writer may be another user.
        lock = FileLock(str(path), mode=0o666)

        def acquire(timeout: float) -> bool:
            try:
                lock.acquire(timeout=timeout)
            except Timeout:  # an OSError too: first
                return False
            except OSError as exc:  # another user's lock file, a read-only folder
                raise WorkspaceError(
                    f"cannot take the writer lock of corpus {name!r} ({path}): {exc}"
                ) from exc
            return True

        progress = on_progress or (lambda stage, done, total: None)
        waited = not acquire(0)
        if waited:
            progress("waiting", 0, 1)  # says why nothing moves while another ingest runs
            if not acquire(wait):
                raise CorpusBusyError(
                    f"corpus {name!r} is being written by another process (waited {wait:g} s); "
                    "retry when it is done"
                )
        try:
            if waited:
                progress("waiting", 1, 1)
            yield
        finally:
            lock.release()

    def _table_at(self, name: str, lance_version: int) -> Any:
        """A read-only handle on the table as it was at ``lance_version`` (cached)."""
        key = (name, lance_version)
        with self._lock:
            if key not in self._tables:
                table = self.db.open_table(name)
                table.checkout(lance_version)
                self._tables[key] = table
            return self._tables[key]

    # --- catalogue -----------------------------------------------------------------------

    def names(self) -> list[str]:
        with self.workspace.engine.connect() as connection:
            return list(
                connection.execute(select(corpora.c.name).order_by(corpora.c.name)).scalars()
            )

    def info(self, name: str) -> dict[str, Any]:
        with self.workspace.engine.connect() as connection:
            row = connection.execute(select(corpora).where(corpora.c.name == name)).first()
        if row is None:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"no corpus named {name!r} (corpora: {known})")
        return dict(row._mapping)

    def log(self, name: str) -> list[CorpusVersion]:
        self.info(name)
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(corpus_versions)
                .where(corpus_versions.c.corpus == name)
                .order_by(corpus_versions.c.version.desc())
            ).all()
        return [CorpusVersion(**row._mapping) for row in rows]

    def tags(self, name: str) -> dict[str, int]:
        """Tag name -> corpus version."""
        table = self._open_table(name)
        if table is None:
            return {}
        by_lance = {v.lance_version: v.version for v in self.log(name)}
        tags = table.tags.list()
        return {tag: by_lance[t["version"]] for tag, t in tags.items() if t["version"] in by_lance}

    def resolve(self, ref: str) -> CorpusVersion:
        """The committed version a reference names (default: the checked-out one, else latest)."""
        name, selector = parse_ref(ref)
        info = self.info(name)
        versions = self.log(name)
        if not versions:
            raise NotFoundError(f"corpus {name!r} has no committed version yet")
        if selector is None:
            selector = str(info["checked_out"]) if info["checked_out"] else "latest"
        return select_version("corpus", name, versions, selector, lambda: self.tags(name))

    def tag(self, name: str, version: int, tag: str) -> None:
        problem = tag_problem(tag)
        if problem:
            raise DataError(problem)
        target = self.resolve(f"{name}@{version}")
        tags = self.db.open_table(name).tags
        if tag in tags.list():
            tags.update(tag, target.lance_version)
        else:
            tags.create(tag, target.lance_version)

    def checkout(self, ref: str) -> CorpusVersion:
        """Make retrieval use this version by default (``NAME@latest`` undoes it)."""
        name, selector = parse_ref(ref)
        target = self.resolve(ref)
        pinned = None if selector in (None, "latest") else target.version
        with self.workspace.engine.begin() as connection:
            connection.execute(
                update(corpora).where(corpora.c.name == name).values(checked_out=pinned)
            )
        return target

    # --- ingest --------------------------------------------------------------------------

    def _ensure_corpus(
        self,
        name: str,
        embedder_uri: str,
        embedder: Embedder,
        chunk_tokens: int,
        overlap_tokens: int,
    ) -> dict[str, Any]:
        problem = name_problem("corpus", name)
        if problem:
            raise DataError(problem)
        try:
            info = self.info(name)
        except NotFoundError:
            try:
                with self.workspace.engine.begin() as connection:
                    connection.execute(
                        insert(corpora).values(
                            name=name,
                            embedder=embedder_uri,
                            dimension=embedder.dimension,
                            chunk_tokens=chunk_tokens,
                            overlap_tokens=overlap_tokens,
                            created_at=time.time(),
                            checked_out=None,
                        )
                    )
            except IntegrityError:
                pass  # a writer outside our lock created it first: use it as it is
            info = self.info(name)
        if info["embedder"] != embedder_uri:
            raise DataError(
                f"corpus {name!r} is embedded with {info['embedder']}, not "
                f"{embedder_uri}; use another corpus name for another embedder"
            )
        return info

    def _head_table(self, name: str, committed: CorpusVersion | None) -> Any:
        """The writable table, brought back to the last committed version if an earlier
        ingest died after writing to it."""
        table = self._open_table(name)
        if table is None:
            return None
        if committed is None:  # a first ingest died before committing anything
            self.db.drop_table(name)
            return None
        if table.version != committed.lance_version:
            table.restore(committed.lance_version)
        return table

    def ingest(
        self,
        name: str,
        paths: Sequence[str | Path],
        *,
        message: str = "",
        embedder: str | None = None,
        chunk_tokens: int = 200,
        overlap_tokens: int = 32,
        batch_size: int = 64,
        add: bool = False,
        allow_removals: bool = False,
        wait: float = DEFAULT_WRITE_WAIT,
        on_progress: Progress | None = None,
        embed_batches: EmbedBatches | None = None,
    ) -> IngestReport:
        """Make the corpus hold exactly the documents under ``paths`` and commit a version;
        with ``add``, add or update those documents and keep every other document of the
        latest version.

        Only chunks whose text the corpus has never embedded are embedded; unchanged chunks
        keep their rows; chunks of removed or edited documents are dropped. Nothing is
        committed when a path does not exist, nor when the new version would lack more than
        half of the latest version's documents unless ``allow_removals`` (a mistyped or
        emptied folder must not silently empty a corpus). Ingests of one corpus take turns:
        this one waits up to ``wait`` seconds for another, then raises
        :class:`CorpusBusyError`."""
        roots = check_ingest(name, paths)
        progress = on_progress or (lambda stage, done, total: None)
        embedder_uri = embedder or self.workspace.settings.embedder
        model = load_embedder(embedder_uri)
        documents, skipped = load_paths(roots)  # reading files needs no lock: done first

        with self.writing(name, wait=wait, on_progress=progress):
            info = self._ensure_corpus(name, embedder_uri, model, chunk_tokens, overlap_tokens)
            chunker = Chunker(
                model.count_tokens,
                chunk_tokens=info["chunk_tokens"],
                overlap_tokens=info["overlap_tokens"],
            )
            versions = self.log(name)
            committed = versions[0] if versions else None
            table = self._head_table(name, committed)
            old = self._existing_rows(table)

            # With ``add`` the latest version's other documents stay as they are; their
            # texts count as seen, so the corpus still holds every text once.
            given = {document.doc_id for document in documents}
            kept = {
                cid: entry
                for cid, entry in old.items()
                if add and entry["row"]["doc_id"] not in given
            }
            kept_docs = {entry["row"]["doc_id"] for entry in kept.values()}
            report = IngestReport(
                corpus=name,
                version=None,
                documents=len(documents) + len(kept_docs),
                skipped=skipped,
            )
            chunks: list[Chunk] = []
            seen_text = {entry["text_hash"] for entry in kept.values()}
            for index, document in enumerate(documents, start=1):
                for chunk in chunker.chunk(document):
                    if chunk.text_hash in seen_text:
                        report.duplicates += 1
                        continue
                    seen_text.add(chunk.text_hash)
                    chunks.append(chunk)
                progress("chunking", index, len(documents))
            report.chunks = len(chunks) + len(kept)

            new_ids = {c.chunk_id for c in chunks} | kept.keys()
            keep = {
                c.chunk_id
                for c in chunks
                if c.chunk_id in old and old[c.chunk_id]["row"] == self._row_fields(c)
            }
            to_add = [c for c in chunks if c.chunk_id not in keep]
            to_remove = [cid for cid in old if cid not in keep and cid not in kept]
            report.unchanged = len(keep) + len(kept)
            report.added = len([c for c in to_add if c.chunk_id not in old])
            report.updated = len(to_add) - report.added
            report.removed = len([cid for cid in old if cid not in new_ids])
            self._check_removals(
                name, committed, old, {c.doc_id for c in chunks} | kept_docs, allow_removals, report
            )
            if not to_add and not to_remove and committed is not None:
                return report  # nothing changed: no new version

            embed = embed_batches or (lambda batches: (model.embed(b) for b in batches))
            vectors, report.embedded = self._vectors_for(to_add, old, embed, batch_size, progress)
            rows = [
                {
                    **self._row_fields(c),
                    "chunk_id": c.chunk_id,
                    "text_hash": c.text_hash,
                    "vector": vectors[c.text_hash],
                }
                for c in to_add
            ]
            progress("indexing", 0, 1)
            table = self._write(name, table, rows, to_remove, model.dimension)
            progress("indexing", 1, 1)
            expected = (old.keys() - set(to_remove)) | {c.chunk_id for c in to_add}
            self._check_written(name, table, expected)
            if add and not message:
                message = f"add or update {len(documents)} documents"
            report.version = self._commit(name, table, committed, message, report, report.documents)
        return report

    @staticmethod
    def _check_removals(
        name: str,
        committed: CorpusVersion | None,
        old: dict[str, dict[str, Any]],
        remaining: set[str],
        allow_removals: bool,
        report: IngestReport,
    ) -> None:
        """Refuse a version that lacks more than half of the latest version's documents
        (all of them included) unless removals were allowed: that is what a mistyped,
        emptied or wrongly mounted folder looks like."""
        before = {entry["row"]["doc_id"] for entry in old.values()}
        gone = sorted(before - remaining)
        report.removed_documents = len(gone)
        if not gone or allow_removals or len(gone) * 2 <= len(before) or committed is None:
            return
        examples = ", ".join(gone[:3]) + (", ..." if len(gone) > 3 else "")
        raise TooManyRemovalsError(
            f"this ingest would remove {len(gone)} of the {len(before)} documents of "
            f"{name}@{committed.version} ({examples}); nothing was committed. Pass "
            "--allow-removals (allow_removals=True) if that is intended, or --add (add=True) "
            "to add and update documents and keep the others"
        )

    @staticmethod
    def _check_written(name: str, table: Any, expected: set[str]) -> None:
        """The table version this ingest reached must hold exactly its chunks. It does
        unless a writer that does not share our lock wrote the table meanwhile (LanceDB
        then merges both writes into one version), and committing that would pin a
        version holding another ingest's documents."""
        written = table.search().select(["chunk_id"]).limit(None).to_arrow()
        if set(written.column("chunk_id").to_pylist()) != expected:
            raise CorpusBusyError(
                f"corpus {name!r} was written by another process during this ingest; "
                "nothing was committed: retry"
            )

    @staticmethod
    def _row_fields(chunk: Chunk) -> dict[str, Any]:
        return {
            "text": chunk.text,
            "doc_id": chunk.doc_id,
            "source": chunk.source,
            "file_type": chunk.file_type,
            "section": chunk.section,
            "ordinal": chunk.ordinal,
            "tokens": chunk.tokens,
            "line_start": chunk.line_start,
            "line_end": chunk.line_end,
            "page_start": chunk.page_start,
            "page_end": chunk.page_end,
            "metadata": json.dumps(dict(chunk.metadata), sort_keys=True, default=str),
        }

    @staticmethod
    def _existing_rows(table: Any) -> dict[str, dict[str, Any]]:
        if table is None:
            return {}
        data = table.to_arrow().to_pylist()
        return {
            row["chunk_id"]: {
                "text_hash": row["text_hash"],
                "vector": row["vector"],
                "row": {k: row[k] for k in _COLUMNS if k not in ("chunk_id", "text_hash")},
            }
            for row in data
        }

    @staticmethod
    def _vectors_for(
        chunks: list[Chunk],
        old: dict[str, dict[str, Any]],
        embed: EmbedBatches,
        batch_size: int,
        progress: Progress,
    ) -> tuple[dict[str, Any], int]:
        """A vector per text hash, reusing stored ones; and how many had to be embedded."""
        known = {entry["text_hash"]: entry["vector"] for entry in old.values()}
        vectors: dict[str, Any] = {}
        missing = [c for c in chunks if c.text_hash not in known]
        for chunk in chunks:
            if chunk.text_hash in known:
                vectors[chunk.text_hash] = known[chunk.text_hash]
        progress("embedding", 0, len(missing))
        batches = [
            missing[start : start + batch_size] for start in range(0, len(missing), batch_size)
        ]
        done = 0
        for batch, embedded in zip(
            batches, embed([[c.text for c in b] for b in batches]), strict=True
        ):
            for chunk, vector in zip(batch, embedded, strict=True):
                vectors[chunk.text_hash] = vector.tolist()
            done += len(batch)
            progress("embedding", done, len(missing))
        return vectors, len(missing)

    def _write(
        self,
        name: str,
        table: Any,
        rows: list[dict[str, Any]],
        to_remove: list[str],
        dimension: int,
    ) -> Any:
        import pyarrow as pa

        schema = pa.schema(
            [
                ("chunk_id", pa.string()),
                ("text", pa.string()),
                ("vector", pa.list_(pa.float32(), dimension)),
                ("text_hash", pa.string()),
                ("doc_id", pa.string()),
                ("source", pa.string()),
                ("file_type", pa.string()),
                ("section", pa.string()),
                ("ordinal", pa.int32()),
                ("tokens", pa.int32()),
                ("line_start", pa.int32()),
                ("line_end", pa.int32()),
                ("page_start", pa.int32()),
                ("page_end", pa.int32()),
                ("metadata", pa.string()),
            ]
        )
        from lancedb.index import FTS

        try:
            if table is None:
                table = self.db.create_table(name, schema=schema)
            for start in range(0, len(to_remove), 500):
                ids = ", ".join(_sql_literal(cid) for cid in to_remove[start : start + 500])
                table.delete(f"chunk_id IN ({ids})")
            if rows:
                table.add(pa.Table.from_pylist(rows, schema=schema))
            if table.count_rows() > 0:
                table.create_index("text", config=FTS(), replace=True)
        except (RuntimeError, ValueError) as exc:
            if not _WRITE_CONFLICT.search(str(exc)):
                raise
            # Only a writer outside our lock writes the table meanwhile.
            raise CorpusBusyError(
                f"corpus {name!r} was written by another process during this ingest; "
                "nothing was committed: retry"
            ) from exc
        return table

    def _commit(
        self,
        name: str,
        table: Any,
        committed: CorpusVersion | None,
        message: str,
        report: IngestReport,
        documents: int,
    ) -> int:
        version = (committed.version if committed else 0) + 1
        stats = {
            "added": report.added,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "embedded": report.embedded,
            "duplicates": report.duplicates,
            "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        }
        try:
            with self.workspace.engine.begin() as connection:
                connection.execute(
                    insert(corpus_versions).values(
                        corpus=name,
                        version=version,
                        lance_version=table.version,
                        message=message or f"ingest {documents} documents",
                        created_at=time.time(),
                        documents=documents,
                        chunks=report.chunks,
                        stats=stats,
                    )
                )
                connection.execute(
                    update(corpora).where(corpora.c.name == name).values(checked_out=None)
                )
        except IntegrityError:
            # Only a writer outside our lock can have taken this number; its version stands.
            raise CorpusBusyError(
                f"corpus {name!r} got version {version} from another process during this "
                "ingest; nothing was committed: retry"
            ) from None
        return version

    # --- reading -------------------------------------------------------------------------

    def rows(
        self, ref: str, columns: Sequence[str] = ("chunk_id", "doc_id", "text")
    ) -> list[dict[str, Any]]:
        version = self.resolve(ref)
        table = self._table_at(version.corpus, version.lance_version)
        return table.to_arrow().select(list(columns)).to_pylist()

    def diff(self, name: str, old: int, new: int) -> CorpusDiff:
        before = self.rows(f"{name}@{old}", ("chunk_id", "doc_id"))
        after = self.rows(f"{name}@{new}", ("chunk_id", "doc_id"))

        def by_doc(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
            grouped: dict[str, set[str]] = {}
            for row in rows:
                grouped.setdefault(row["doc_id"], set()).add(row["chunk_id"])
            return grouped

        old_docs, new_docs = by_doc(before), by_doc(after)
        changes = []
        for doc_id in sorted(old_docs.keys() | new_docs.keys()):
            was, now = old_docs.get(doc_id, set()), new_docs.get(doc_id, set())
            if was == now:
                continue
            kind: ChangeKind = "added" if not was else "removed" if not now else "changed"
            changes.append(DocumentChange(doc_id, kind, len(now - was), len(was - now)))
        old_ids = {r["chunk_id"] for r in before}
        new_ids = {r["chunk_id"] for r in after}
        return CorpusDiff(name, old, new, changes, len(new_ids - old_ids), len(old_ids - new_ids))

    def search(
        self,
        ref: str,
        query: str,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        where: dict[str, Any] | None = None,
    ) -> tuple[CorpusVersion, list[Hit]]:
        """The ``k`` best chunks for ``query`` in the referenced version."""
        if not query.strip():
            raise DataError("the search query is empty")
        if k < 1:
            raise DataError("k must be at least 1")
        version = self.resolve(ref)
        sql = filter_sql(where)  # validates the filter columns for every mode
        _, wanted_metadata = split_filter(where)
        if mode not in ("vector", "fts", "hybrid"):
            raise DataError(f"search mode must be vector, fts or hybrid, not {mode!r}")
        pool = k if mode != "hybrid" else max(k * 4, 20)  # hybrid fuses deeper lists
        vector_hits: list[tuple[dict[str, Any], float]] = []
        text_hits: list[tuple[dict[str, Any], float]] = []
        if mode in ("vector", "hybrid"):
            embedder = load_embedder(self.info(version.corpus)["embedder"])
            query_vector = embedder.embed([query])[0]
            vector_hits = self.vector_index(version).search(query_vector, pool, where)
        if mode in ("fts", "hybrid"):
            table = self._table_at(version.corpus, version.lance_version)
            builder = table.search(query, query_type="fts")
            if sql:
                builder = builder.where(sql, prefilter=True)
            columns = [c for c in _COLUMNS if c != "text_hash"] + ["_score"]
            # Metadata is JSON text to LanceDB, so those filters apply to a deeper pool here.
            depth = pool if not wanted_metadata else max(pool * 10, 200)
            text_hits = [
                (row, float(row["_score"]))
                for row in builder.limit(depth).select(columns).to_list()
                if metadata_matches(row, wanted_metadata)
            ][:pool]
        if mode == "hybrid":
            from slmops.data.vector_index import reciprocal_rank_fusion

            rows = {row["chunk_id"]: row for row, _ in [*vector_hits, *text_hits]}
            fused = reciprocal_rank_fusion(
                [[r["chunk_id"] for r, _ in vector_hits], [r["chunk_id"] for r, _ in text_hits]]
            )
            ranked = [(rows[chunk_id], score) for chunk_id, score in fused[:k]]
        else:
            ranked = (vector_hits or text_hits)[:k]
        return version, [self._hit(row, score) for row, score in ranked]

    @staticmethod
    def _hit(row: dict[str, Any], score: float) -> Hit:
        return Hit(
            chunk_id=row["chunk_id"],
            text=row["text"],
            score=score,
            doc_id=row["doc_id"],
            source=row["source"],
            location=_location(row),
            section=row["section"],
            file_type=row["file_type"],
            metadata=json.loads(row["metadata"] or "{}"),
        )

    def vector_index(self, version: CorpusVersion) -> ExactVectorIndex:
        """The in-memory exact index of one committed version (built once, then shared)."""
        key = (version.corpus, version.lance_version)
        with self._lock:
            index = self._indexes.get(key)
        if index is None:
            from slmops.data.vector_index import ExactVectorIndex

            table = self._table_at(version.corpus, version.lance_version)
            index = ExactVectorIndex.from_arrow(table.to_arrow().drop_columns(["text_hash"]))
            with self._lock:
                self._indexes[key] = index
                while len(self._indexes) > self.max_cached_versions:
                    self._indexes.pop(next(iter(self._indexes)))
        return index

    # --- exchange ------------------------------------------------------------------------

    def export(self, ref: str, path: str | Path) -> Path:
        """Write one version (vectors included) as a single Parquet file."""
        import pyarrow.parquet as pq

        version = self.resolve(ref)
        info = self.info(version.corpus)
        table = self._table_at(version.corpus, version.lance_version).to_arrow()
        meta = {
            "slmops.corpus": json.dumps(
                {
                    "name": version.corpus,
                    "version": version.version,
                    "message": version.message,
                    "embedder": info["embedder"],
                    "chunk_tokens": info["chunk_tokens"],
                    "overlap_tokens": info["overlap_tokens"],
                }
            )
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        target = Path(path)
        pq.write_table(table, target)
        return target

    def import_(self, path: str | Path, *, name: str | None = None) -> CorpusVersion:
        """Create a corpus from an exported file; its vectors are used as they are."""
        import pyarrow.parquet as pq

        source = Path(path)
        try:
            table = pq.read_table(source)
            meta = json.loads((table.schema.metadata or {})[b"slmops.corpus"])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{source} is not an slmops corpus export: {exc}") from None
        corpus = name or meta["name"]
        problem = name_problem("corpus", corpus)
        if problem:
            raise DataError(problem)
        if corpus in self.names():  # before loading the embedder; checked again under the lock
            raise DataError(f"corpus {corpus!r} already exists; import under another --name")
        model = load_embedder(meta["embedder"])
        rows = table.replace_schema_metadata(None).to_pylist()
        with self.writing(corpus):  # an ingest of the same name must not start meanwhile
            if corpus in self.names():
                raise DataError(f"corpus {corpus!r} already exists; import under another --name")
            self._ensure_corpus(
                corpus, meta["embedder"], model, meta["chunk_tokens"], meta["overlap_tokens"]
            )
            written = self._write(corpus, None, rows, [], model.dimension)
            report = IngestReport(corpus=corpus, version=None, chunks=len(rows), added=len(rows))
            documents = len({r["doc_id"] for r in rows})
            self._commit(
                corpus,
                written,
                None,
                f"import of {meta['name']}@{meta['version']} from {source.name}",
                report,
                documents,
            )
        return self.resolve(f"{corpus}@latest")


def corpora_for(workspace: Workspace) -> Corpora:
    """The :class:`Corpora` of an open workspace, shared (it caches table handles and
    indexes) and kept on the workspace itself, so both go away together."""
    corpora = getattr(workspace, "_slmops_corpora", None)
    if corpora is None:
        corpora = Corpora(workspace)
        workspace._slmops_corpora = corpora  # type: ignore[attr-defined]
    return corpora
