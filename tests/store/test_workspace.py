from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import inspect

import slmops.store
from slmops.errors import ConfigError, NotFoundError, WorkspaceError
from slmops.store import Workspace, resolve_home
from slmops.store.artifacts import ArtifactStore


def test_home_resolution_prefers_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path / "from-env"))
    assert resolve_home(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert resolve_home() == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("SLMOPS_HOME")
    monkeypatch.chdir(tmp_path)
    assert resolve_home() == (tmp_path / ".slmops").resolve()


MIGRATIONS = Path(slmops.store.__file__).parent / "migrations" / "versions"
HEAD = max(path.name.split("_")[0] for path in MIGRATIONS.glob("[0-9]*.py"))


def test_open_creates_schema_and_is_idempotent(tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        tables = set(inspect(ws.engine).get_table_names())
        assert {
            "traces",
            "spans",
            "cache_entries",
            "artifacts",
            "corpora",
            "corpus_versions",
            "prompts",
            "prompt_tags",
            "eval_datasets",
            "eval_runs",
            "eval_results",
        } <= tables
        assert ws.schema_revision() == HEAD
    with Workspace.open(tmp_path / "ws") as again:  # reopening migrates nothing and loses nothing
        assert again.schema_revision() == HEAD
    assert (tmp_path / "ws" / "slmops.db").is_file()


def test_config_file_is_read_and_env_overrides_it(tmp_path, monkeypatch):
    home = tmp_path / "configured"
    home.mkdir()
    (home / "config.toml").write_text('chat_model = "gguf:/models/a.gguf"\n')
    monkeypatch.setenv("SLMOPS_EMBEDDER", "st:/models/e5")
    with Workspace.open(home) as ws:
        assert ws.settings.chat_model == "gguf:/models/a.gguf"
        assert ws.settings.embedder == "st:/models/e5"


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ("chat_model = \n", ConfigError, r"config\.toml: not valid TOML"),
        ('chat_modle = "local:smollm2-135m"\n', ConfigError, "chat_modle: Extra inputs are not"),
        ('cache_url = "memcached://x"\n', ConfigError, "cache_url: Value error, must be unset"),
        ('database_url = "nosuchdb://x"\n', WorkspaceError, "database URL 'nosuchdb://x'"),
    ],
)
def test_bad_config_is_refused_with_a_message_naming_the_problem(tmp_path, config, error, message):
    home = tmp_path / "configured"
    home.mkdir()
    (home / "config.toml").write_text(config)
    with pytest.raises(error, match=message):
        Workspace.open(home)


def test_artifacts_round_trip_and_reject_escaping_keys(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    uri = store.put_bytes("corpora/handbook/v1.bin", b"\x00data")
    assert Path(uri).read_bytes() == b"\x00data"
    assert store.get_bytes("corpora/handbook/v1.bin") == b"\x00data"
    assert store.exists("corpora/handbook/v1.bin")
    # no temporary files are left beside the artifact
    folder = tmp_path / "artifacts" / "corpora" / "handbook"
    assert [p.name for p in folder.iterdir()] == ["v1.bin"]
    with pytest.raises(WorkspaceError, match="relative path"):
        store.put_bytes("../outside", b"x")
    with pytest.raises(NotFoundError, match="missing"):
        store.get_bytes("missing")
    store.delete("corpora/handbook/v1.bin")
    assert not store.exists("corpora/handbook/v1.bin")


def test_artifact_delete_gives_way_to_a_concurrent_delete(tmp_path):
    """Two writers that lost the same version race both delete the same checksum-named
    file: the second finds it gone between its check and its removal (CI saw this)."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    store.put_bytes("eval-datasets/race/v1-abc.jsonl", b"x")
    target = tmp_path / "artifacts" / "eval-datasets" / "race" / "v1-abc.jsonl"
    real_exists = store._fs.exists

    def exists_then_vanish(path: str) -> bool:
        found = bool(real_exists(path))
        if found:
            target.unlink()  # the other writer removes it right after our check
        return found

    store._fs.exists = exists_then_vanish  # type: ignore[method-assign]
    store.delete("eval-datasets/race/v1-abc.jsonl")
    store._fs.exists = real_exists  # type: ignore[method-assign]
    assert not store.exists("eval-datasets/race/v1-abc.jsonl")


def test_artifacts_work_on_other_fsspec_filesystems():
    store = ArtifactStore("memory://slmops-test")
    assert store.uri("a/b") == "memory:///slmops-test/a/b"
    store.put_bytes("a/b", b"x")
    assert store.get_bytes("a/b") == b"x"


POSTGRES_URL = os.environ.get("SLMOPS_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES_URL, reason="set SLMOPS_TEST_POSTGRES_URL to test Postgres")
def test_postgres_workspace_migrates_stores_traces_and_caches(tmp_path, monkeypatch):
    from slmops.core import Function, Runtime, use_runtime
    from slmops.store.traces import get_trace

    monkeypatch.setenv("SLMOPS_DATABASE_URL", POSTGRES_URL)
    with Workspace.open(tmp_path / "pg") as ws:
        assert ws.engine.dialect.name == "postgresql"
        assert ws.schema_revision() == HEAD
        calls = []

        def double(x: int) -> int:
            calls.append(x)
            return 2 * x

        step = Function(double, cache=True, version=str(tmp_path))  # unique per test run
        with use_runtime(Runtime.from_workspace(ws)):
            first = step.invoke(21)
            second = step.invoke(21)
        assert (first.output, second.output, calls) == (42, 42, [21])
        _, spans = get_trace(ws.engine, second.trace_id)
        assert spans[0]["attributes"]["slmops.cache.hit"] is True
