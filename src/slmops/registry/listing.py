"""``slmops model list`` without importing MLflow (about 2.5 s of a 3 s command).

Versions and aliases live in MLflow's Model Registry only (:mod:`slmops.registry.store`).
When the workspace uses its default tracking store, the SQLite file ``WORKSPACE/mlflow.db``,
its registry tables (``registered_models``, ``model_versions``, ``model_version_tags``,
``registered_model_tags``, ``registered_model_aliases``) are read here directly, read-only
(the standard library's ``sqlite3``), with the filters MLflow's ``SqlAlchemyStore``
applies: MLflow's ``default`` workspace only, prompts (a ``mlflow.prompt.is_prompt = true``
tag) and deleted versions left out, the first 100 models by name, the first 10,000 versions
in MLflow's default order.

Only at a schema revision this reading was checked against (:data:`KNOWN_REVISIONS`, the
head of MLflow's migrations). Any other revision (an older file that MLflow would migrate,
a newer MLflow), a configured tracking server, MLflow's multi-workspace settings, a model
name that MLflow's filter syntax would need quoted, or an error reading the file, and the
listing asks MLflow's client as before. tests/registry/test_listing.py checks that both
give the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slmops.errors import NotFoundError
from slmops.registry.store import ModelVersion, version_from

if TYPE_CHECKING:
    import sqlite3

    from slmops.store.settings import Settings
    from slmops.store.workspace import Workspace

KNOWN_REVISIONS = frozenset({"dc11669786a5"})
"""Heads of MLflow's schema migrations whose registry tables this module reads (MLflow
3.17). tests/registry/test_listing.py fails when the installed MLflow's head is not one of
them: check the queries below against its ``SqlAlchemyStore`` before adding it."""

_WORKSPACE = "default"  # MLflow's DEFAULT_WORKSPACE_NAME: all a single-tenant store holds
_PROMPT_TAG = "mlflow.prompt.is_prompt"
_DELETED = "Deleted_Internal"  # MLflow's STAGE_DELETED_INTERNAL
_MAX_MODELS = 100  # SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT
_MAX_VERSIONS = 10_000  # SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT

Listed = tuple[str, list[ModelVersion], dict[str, int]]


class _Reader(Protocol):
    def names(self) -> list[str]: ...
    def versions(self, name: str) -> list[ModelVersion]: ...
    def aliases(self, name: str) -> dict[str, int]: ...


class _UnsureError(Exception):
    """The file is not one this module can read as MLflow would: ask MLflow."""


def list_models(workspace: Workspace) -> list[Listed]:
    """(name, versions newest first, aliases) of every registered model, by name."""
    found = list_local_models(workspace.home, workspace.settings)
    if found is not None:
        return found
    from slmops.registry.store import ModelRegistry

    return _listed(ModelRegistry(workspace))


def list_local_models(home: Path, settings: Settings) -> list[Listed] | None:
    """What :func:`list_models` answers, read from the workspace's default tracking store
    without MLflow; None when only MLflow's client can tell (see the module's docstring)."""
    local = local_registry(home, settings)
    if local is None:
        return None
    try:
        return _listed(local)
    except _UnsureError:
        return None
    finally:
        local.close()


def _listed(reader: _Reader) -> list[Listed]:
    rows = []
    for name in reader.names():
        versions = reader.versions(name)
        aliases = reader.aliases(name)
        rows.append((name, versions, aliases))
    return rows


def local_registry(home: Path, settings: Settings) -> LocalRegistry | None:
    """The reader of the workspace's default SQLite tracking store, or None when MLflow's
    client must answer (see the module's docstring)."""
    path = home / "mlflow.db"
    # slmops.train.tracking.tracking_uri, from the settings alone (no workspace is opened).
    configured = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if (configured or f"sqlite:///{path}") != f"sqlite:///{path}":
        return None
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() not in ("", "false", "0"):
        return None
    if os.environ.get("MLFLOW_WORKSPACE"):
        return None
    return LocalRegistry(path)


@dataclass(frozen=True)
class _Found:
    """The fields of an MLflow ``ModelVersion`` that :func:`version_from` reads."""

    name: str
    version: int
    source: str | None
    run_id: str | None
    description: str | None
    creation_timestamp: int | None
    tags: dict[str, str | None] = field(default_factory=dict)


class LocalRegistry:
    """MLflow's registry tables in a local SQLite file, read-only, with the answers of
    :class:`~slmops.registry.store.ModelRegistry`'s ``names``, ``aliases`` and ``versions``.
    Raises :class:`_UnsureError` when the file is not at a :data:`KNOWN_REVISIONS` schema
    or cannot be read. Close it when done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _rows(self, query: str, **params: object) -> list[Any]:
        import sqlite3

        try:
            if self._db is None:
                if not self.path.is_file():
                    return []  # no store yet (MLflow would make an empty one): nothing in it
                db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=10.0)
                db.row_factory = sqlite3.Row
                found = db.execute("SELECT version_num FROM alembic_version").fetchall()
                revisions = {row[0] for row in found}
                if len(revisions) != 1 or not revisions <= KNOWN_REVISIONS:
                    db.close()
                    raise _UnsureError(f"MLflow schema revision {sorted(revisions)}")
                self._db = db
            return self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:  # no such table or column, a locked or damaged file
            raise _UnsureError(str(exc)) from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def names(self) -> list[str]:
        rows = self._rows(
            f"""SELECT m.name FROM registered_models m
            WHERE m.workspace = :workspace AND NOT EXISTS (
                SELECT 1 FROM registered_model_tags t WHERE t.workspace = m.workspace
                AND t.name = m.name AND t.key = :prompt AND t.value = 'true')
            ORDER BY m.name ASC LIMIT {_MAX_MODELS}""",
            workspace=_WORKSPACE,
            prompt=_PROMPT_TAG,
        )
        names = [row["name"] for row in rows]
        if any(set(name) & {"'", '"', "\\", "`"} for name in names):
            # The client selects versions with the filter "name = '...'": let it parse that.
            raise _UnsureError("a model name with quotes")
        return sorted(names)

    def aliases(self, name: str) -> dict[str, int]:
        exists = self._rows(
            "SELECT 1 FROM registered_models WHERE workspace = :workspace AND name = :name",
            workspace=_WORKSPACE,
            name=name,
        )
        if not exists:
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"no registered model {name!r} (models: {known})")
        rows = self._rows(
            "SELECT alias, version FROM registered_model_aliases "
            "WHERE workspace = :workspace AND name = :name",
            workspace=_WORKSPACE,
            name=name,
        )
        return {row["alias"]: int(row["version"]) for row in rows}

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first (as :meth:`ModelRegistry.versions`)."""
        aliases = self.aliases(name)
        rows = self._rows(
            f"""SELECT v.name, v.version, v.source, v.run_id, v.description, v.creation_time
            FROM model_versions v
            WHERE v.name = :name AND v.workspace = :workspace AND NOT EXISTS (
                SELECT 1 FROM model_version_tags t WHERE t.workspace = v.workspace
                AND t.name = v.name AND t.key = :prompt AND t.value = 'true')
            AND v.current_stage != :deleted
            ORDER BY v.last_updated_time DESC, v.name ASC, v.version DESC
            LIMIT {_MAX_VERSIONS}""",
            name=name,
            workspace=_WORKSPACE,
            prompt=_PROMPT_TAG,
            deleted=_DELETED,
        )
        tags: dict[int, dict[str, str | None]] = {}
        for version, key, value in self._rows(
            "SELECT version, key, value FROM model_version_tags "
            "WHERE workspace = :workspace AND name = :name",
            workspace=_WORKSPACE,
            name=name,
        ):
            tags.setdefault(int(version), {})[key] = value
        found = [
            _Found(
                name=row["name"],
                version=int(row["version"]),
                source=row["source"],
                run_id=row["run_id"],
                description=row["description"],
                creation_timestamp=row["creation_time"],
                tags=tags.get(int(row["version"]), {}),
            )
            for row in rows
        ]
        return _newest_first(found, aliases)


def _newest_first(found: list[_Found], aliases: Mapping[str, int]) -> list[ModelVersion]:
    return sorted((version_from(v, aliases) for v in found), key=lambda v: v.version, reverse=True)
