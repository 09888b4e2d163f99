"""A workspace: one folder holding settings, the metadata database and the artifact store."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmops.errors import BusyError, WorkspaceError
from slmops.store.settings import Settings, load_settings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import Engine

    from slmops.store.artifacts import ArtifactStore, Swept

# SQLAlchemy, and the artifact store (fsspec) with the debris sweep, are imported when a
# workspace is opened, not with this module: importing slmops.store (for its settings, say)
# then costs neither, and the listings that read the database with the standard library
# (slmops/cli/common.py: read_database) load neither.

DEFAULT_HOME = Path(".slmops")
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_WAIT = 300.0  # seconds a process waits for another's migration
_MIGRATION_LOCK_KEY = 0x736C6D6F7073  # "slmops": the Postgres advisory lock of migrations


def resolve_home(home: str | Path | None = None) -> Path:
    """The workspace folder: the argument, else ``$SLMOPS_HOME``, else ``./.slmops``."""
    chosen = home or os.environ.get("SLMOPS_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    """The pragmas of every SQLite connection. WAL lets readers (the CLI, a server) work
    while a run writes. ``synchronous`` (the ``sqlite_synchronous`` setting): FULL fsyncs
    the log at each commit, durable across power cuts; NORMAL only across crashes of the
    application (see :attr:`Settings.sqlite_synchronous` for the cost)."""
    pragma = {"full": "FULL", "normal": "NORMAL"}[synchronous]

    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={pragma}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    return apply


def _create_engine(url: str, synchronous: str = "normal") -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise WorkspaceError(f"database URL {url!r} cannot be used: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(synchronous))
    return engine


def _alembic_config(connection: Any) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Alembic reads every ``*.py`` of versions/ but __init__.py and editor lock files (.#name).
_MIGRATION_FILE = re.compile(r"(?!\.#|__init__).*\.py$")
_REVISION = re.compile(r"^revision\s*(?::[^=\n]*)?=\s*[\"']([^\"'\n]+)[\"']\s*$", re.M)
_DOWN_REVISION = re.compile(
    r"^down_revision\s*(?::[^=\n]*)?=\s*(?:None|[\"']([^\"'\n]+)[\"'])\s*$", re.M
)


@functools.cache
def _shipped_head() -> str | None:
    """The head revision of the shipped migrations, read from the text of their files.

    Importing Alembic (and Mako, Pygments through it) costs a few hundred milliseconds, which
    every command paid to learn that nothing needs migrating. This answers the same question
    from a plain reading of ``revision = "..."`` and ``down_revision = "..."`` in each file, and
    answers None whenever that reading is not certain (a file without exactly one of each, a
    merge, a branch, a compiled-only file): :meth:`Workspace.migrate` then asks Alembic."""
    try:
        entries = list((_MIGRATIONS / "versions").iterdir())
    except OSError:
        return None
    revisions: set[str] = set()
    parents: set[str] = set()
    for entry in entries:
        if entry.suffix in (".pyc", ".pyo") and entry.is_file():
            return None  # a sourceless migration: only Alembic can read it
        if not _MIGRATION_FILE.match(entry.name) or not entry.is_file():
            continue
        try:
            source = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1 or revision[0] in revisions:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    if len(heads) != 1 or not parents <= revisions:
        return None
    return heads.pop()


class Workspace:
    """Opened with :meth:`open`; holds the database engine and artifact store for a folder."""

    def __init__(self, home: Path, settings: Settings, engine: Engine, artifacts: ArtifactStore):
        self.home = home
        self.settings = settings
        self.engine = engine
        self.artifacts = artifacts

    @classmethod
    def open(cls, home: str | Path | None = None, *, migrate: bool = True) -> Workspace:
        """Open (creating if needed) the workspace at ``home`` and bring its schema up to date."""
        from slmops.store.artifacts import ArtifactStore

        path = resolve_home(home)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"workspace folder {path} cannot be created: {exc}") from exc
        settings = load_settings(path)
        engine = _create_engine(
            settings.database_url or f"sqlite:///{path / 'slmops.db'}",
            settings.sqlite_synchronous,
        )
        artifacts = ArtifactStore(settings.artifacts_url or str(path / "artifacts"))
        workspace = cls(path, settings, engine, artifacts)
        if migrate:
            workspace.migrate()
        workspace.sweep_debris()
        return workspace

    def scratch_dir(self) -> Path:
        """Where to make scratch folders, named with :func:`debris.scratch_prefix`
        (``tempfile.TemporaryDirectory(dir=ws.scratch_dir(), prefix=scratch_prefix())``):
        what a killed process leaves there is swept by the next one to open the workspace."""
        from slmops.store import debris

        return debris.scratch_dir(self.home)

    def sweep_debris(self, *, deep: bool = False, max_age_s: float | None = None) -> Swept:
        """Remove what killed writers left (scratch folders, temporary artifacts): at once
        when their process is gone from this machine, after ``max_age_s`` when it cannot be
        checked from here. Every open does the cheap part (two folder listings); ``deep``
        walks the workspace and the artifact store for older kinds of leftovers too
        (``max_age_s`` default: :data:`debris.MAX_AGE_S`). Never fails the caller: what
        cannot be removed is kept (and listed as kept)."""
        from slmops.store import debris
        from slmops.store.artifacts import Swept

        if max_age_s is None:
            max_age_s = debris.MAX_AGE_S
        try:
            return debris.sweep(self.home, self.artifacts, deep=deep, max_age_s=max_age_s)
        except OSError:
            return Swept()

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _at_shipped_head(self) -> bool:
        """Whether the database is certainly at the head of the shipped migrations, told
        without Alembic: one row in ``alembic_version`` equal to :func:`_shipped_head`. Any
        doubt (no table yet, no row, several heads, an unreadable file) answers False."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        head = _shipped_head()
        if head is None:
            return False
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:
            return False  # a new database (no alembic_version table): migrate it
        return len(rows) == 1 and rows[0][0] == head

    def migrate(self) -> None:
        """Upgrade the metadata database to the newest schema (a no-op when already there).

        Processes that open a new workspace at the same moment (two ingests started side by
        side) take turns: each upgrades only if the schema is still behind once it has its
        turn. Without that the second one failed creating tables the first had just made.

        The usual case, a database already at the newest schema, is told without importing
        Alembic (see :func:`_shipped_head`); anything else goes through Alembic as before."""
        if self._at_shipped_head():
            return
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
        try:
            if self.schema_revision() == head:
                return
            with self._migration_turn(), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Processes on other machines sharing the database hold no file lock of
                    # ours: an advisory lock, held until this transaction ends, covers them.
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                if MigrationContext.configure(connection).get_current_revision() == head:
                    return  # another process upgraded it while this one waited
                command.upgrade(_alembic_config(connection), "head")
        except SQLAlchemyError as exc:
            url = self.engine.url.render_as_string(hide_password=True)
            raise WorkspaceError(f"database {url} cannot be migrated: {exc}") from exc

    @contextlib.contextmanager
    def _migration_turn(self) -> Iterator[None]:
        """Hold the workspace's migration lock (a file beside its database)."""
        from filelock import FileLock, Timeout

        path = self.home / "locks" / "migrate.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path), timeout=_MIGRATION_WAIT):
                yield
        except Timeout:
            raise BusyError(
                f"another process has been migrating the workspace {self.home} for "
                f"{_MIGRATION_WAIT:g} s; run it again when it is done"
            ) from None
        except OSError as exc:
            raise WorkspaceError(f"cannot take the migration lock {path}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
