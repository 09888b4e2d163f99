"""``slmops model list`` reads the workspace's MLflow file itself (slmops/registry/listing.py):
the same models, versions and aliases as MLflow's client, and MLflow's client whenever that
reading is not certain."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from slmops.registry import listing
from slmops.registry.listing import LocalRegistry, list_models, local_registry
from slmops.registry.store import SHA_TAG, URI_TAG, ModelRegistry, RegistryError
from slmops.store.workspace import Workspace
from slmops.train.tracking import tracking_uri


@pytest.fixture
def ws(tmp_path, mlflow_template):
    home = tmp_path / "listing-ws"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    with Workspace.open(home) as workspace:
        yield workspace


def _version(registry: ModelRegistry, name: str, number: int, **tags: str) -> None:
    """A version made with MLflow's client directly (no weights copied: only rows)."""
    registry._ensure_model(name)
    registry.client.create_model_version(
        name,
        f"file:///models/{name}/{number}",
        tags={URI_TAG: f"gguf:/models/{name}-{number}.gguf", SHA_TAG: f"sha256:{number}", **tags},
        description=f"card of {name} {number}",
    )


def _through_mlflow(ws: Workspace) -> list[tuple[str, list, dict]]:
    return listing._listed(ModelRegistry(ws))


def _local(ws: Workspace) -> list[tuple[str, list, dict]]:
    local = local_registry(ws.home, ws.settings)
    assert local is not None
    try:
        return listing._listed(local)
    finally:
        local.close()


def test_models_versions_and_aliases_read_as_mlflow_reads_them(ws, tmp_path):
    registry = ModelRegistry(ws)
    for number in (1, 2, 3):
        _version(registry, "handbook", number, **{"slmops.format": "gguf"})
    _version(registry, "alpha", 1)
    _version(registry, "zeta", 1)
    registry.client.create_registered_model("empty")  # a model with no version yet
    registry.set_alias(name="handbook", alias="champion", version=2)
    registry.set_alias(name="handbook", alias="canary", version=3)
    registry.set_alias(name="alpha", alias="champion", version=1)
    registry.client.delete_model_version("zeta", "1")  # MLflow keeps the row, marked deleted
    _version(registry, "zeta", 2)
    # A version registered outside slmops: its loadable URI is found beside its source.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.gguf").write_bytes(b"GGUF")
    registry._ensure_model("outside")
    registry.client.create_model_version("outside", outside.as_uri())
    # A prompt is a registered model to MLflow, hidden from its model searches.
    registry.client.register_prompt("a-prompt", "Answer {{question}}")

    db = sqlite3.connect(ws.home / "mlflow.db")
    assert ("a-prompt",) in db.execute("SELECT name FROM registered_models").fetchall()
    assert db.execute(
        "SELECT current_stage FROM model_versions WHERE name = 'zeta' AND version = 1"
    ).fetchone() == ("Deleted_Internal",)
    db.close()

    expected = _through_mlflow(ws)
    assert [name for name, _, _ in expected] == ["alpha", "empty", "handbook", "outside", "zeta"]
    assert _local(ws) == expected
    assert list_models(ws) == expected
    handbook = dict((name, (versions, aliases)) for name, versions, aliases in expected)
    versions, aliases = handbook["handbook"]
    assert [v.version for v in versions] == [3, 2, 1]
    assert aliases == {"champion": 2, "canary": 3}
    assert versions[1].aliases == ("champion",)
    assert versions[0].card == "card of handbook 3" and versions[0].created_at > 0
    assert [v.version for v in handbook["zeta"][0]] == [2]
    assert handbook["outside"][0][0].uri == f"gguf:{outside / 'weights.gguf'}"


def test_an_empty_or_missing_store_lists_nothing(ws):
    assert _local(ws) == [] == _through_mlflow(ws)
    (ws.home / "mlflow.db").unlink()
    assert list_models(ws) == []
    assert not (ws.home / "mlflow.db").exists()  # a listing makes no store


def test_an_unloadable_outside_version_fails_the_listing_as_before(ws, tmp_path):
    registry = ModelRegistry(ws)
    registry._ensure_model("odd")
    registry.client.create_model_version("odd", (tmp_path / "nothing-here").as_uri())
    with pytest.raises(RegistryError, match="finds no single GGUF") as through_mlflow:
        _through_mlflow(ws)
    with pytest.raises(RegistryError, match="finds no single GGUF") as local:
        _local(ws)
    assert str(local.value) == str(through_mlflow.value)


def test_an_unknown_schema_revision_is_left_to_mlflow(ws, monkeypatch):
    registry = ModelRegistry(ws)
    _version(registry, "handbook", 1)
    expected = _through_mlflow(ws)
    monkeypatch.setattr(listing, "KNOWN_REVISIONS", frozenset({"not-this-one"}))
    local = local_registry(ws.home, ws.settings)
    assert local is not None
    with pytest.raises(listing._UnsureError):
        local.names()
    local.close()
    assert list_models(ws) == expected  # through MLflow's client


def test_a_quoted_name_is_left_to_mlflow(ws):
    registry = ModelRegistry(ws)
    registry.client.create_registered_model("it's")
    with pytest.raises(listing._UnsureError):
        LocalRegistry(ws.home / "mlflow.db").names()


def test_a_tracking_server_or_mlflow_workspaces_are_left_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with Workspace.open(tmp_path / "listing-ws") as ws:
        assert local_registry(ws.home, ws.settings) is not None
        monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
        assert local_registry(ws.home, ws.settings) is None
        monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
        for uri in ("http://tracking.example:5000", f"sqlite:///{tmp_path / 'other.db'}"):
            monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
            assert tracking_uri(ws) == uri
            assert local_registry(ws.home, ws.settings) is None
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ws.home / 'mlflow.db'}")
        assert local_registry(ws.home, ws.settings) is not None  # the default, said again
        settings = ws.settings.model_copy(update={"tracking_uri": "http://elsewhere:5000"})
        assert local_registry(ws.home, settings) is None


def test_the_installed_mlflow_schema_is_one_the_listing_was_checked_against():
    """When MLflow's migrations move on, compare listing.py's queries with the new
    ``mlflow.store.model_registry.sqlalchemy_store`` before adding its head: until then the
    listing goes through MLflow's client (right, and slow)."""
    import mlflow
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option(
        "script_location", str(Path(mlflow.__file__).parent / "store" / "db_migrations")
    )
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head in listing.KNOWN_REVISIONS


def test_the_file_is_opened_read_only(ws):
    registry = ModelRegistry(ws)
    _version(registry, "handbook", 1)
    local = LocalRegistry(ws.home / "mlflow.db")
    try:
        local.names()
        with pytest.raises(listing._UnsureError, match="readonly"):
            local._rows("DELETE FROM registered_models")
    finally:
        local.close()
    assert sqlite3.connect(ws.home / "mlflow.db").execute(
        "SELECT count(*) FROM registered_models"
    ).fetchone() == (1,)


def test_model_list_prints_the_same_as_through_mlflow(ws, monkeypatch):
    from typer.testing import CliRunner

    from slmops.cli.main import app

    registry = ModelRegistry(ws)
    for number in (1, 2):
        _version(registry, "handbook", number)
    _version(registry, "alpha", 1)
    registry.set_alias(name="handbook", alias="champion", version=1)
    registry.set_alias(name="handbook", alias="canary", version=2)
    command = ["model", "list", "-w", str(ws.home)]
    runner = CliRunner()
    quick = runner.invoke(app, command, env={"COLUMNS": "120"})
    monkeypatch.setattr(listing, "local_registry", lambda home, settings: None)
    through_mlflow = runner.invoke(app, command, env={"COLUMNS": "120"})
    assert quick.exit_code == through_mlflow.exit_code == 0, quick.output
    assert quick.output == through_mlflow.output
    assert "canary -> 2, champion -> 1" in quick.output
