"""The CLI starts without loading what a command does not use (timings: bench/bench_cli.py).

Help, ``trace list``, ``data list`` and ``model list`` run in fresh processes, which then
report the modules they loaded; opening a workspace already at the newest schema asks nothing
of Alembic, and a newer shipped migration is applied all the same. ``model list`` reads the
workspace's MLflow file without MLflow (tests/registry/test_listing.py: the same rows). The
values that building the help copies from the library (slmops/cli/choices.py, the training
options' help) are checked against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from slmops.cli import choices
from slmops.store import workspace as workspace_module
from slmops.store.workspace import Workspace

HEAVY = (
    "torch",
    "fastapi",
    "lancedb",
    "transformers",
    "sentence_transformers",
    "llama_cpp",
    "xllamacpp",
    "uvicorn",
    "pandas",
    "pyarrow",
)
GROUPS = (
    "stack",
    "trace",
    "data",
    "prompt",
    "eval",
    "train",
    "model",
    "feedback",
    "monitor",
    "pipeline",
)
COMMANDS = ("quickstart", "graph", "init", "run", "batch", "chat", "serve", "review", "ui")

# Runs each argument list through the CLI app in one fresh process; prints what it loaded.
PROBE = """
import json, sys
from typer.testing import CliRunner
from slmops.cli.main import app
runner = CliRunner()
for args in json.loads(sys.argv[1]):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*commands: list[str], home: Path) -> set[str]:
    """The top-level packages loaded by running ``commands`` in one fresh process."""
    return {name.split(".")[0] for name in modules_loaded_by(*commands, home=home)}


def modules_loaded_by(*commands: list[str], home: Path) -> set[str]:
    """The modules loaded by running ``commands`` in one fresh process."""
    env = {**os.environ, "SLMOPS_HOME": str(home), "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(commands))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_help_of_every_command_loads_no_heavy_library(tmp_path):
    helps = [["--help"], *([name, "--help"] for name in (*GROUPS, *COMMANDS))]
    loaded = loaded_by(*helps, home=tmp_path / "help-home")
    # numpy, SQLAlchemy, Alembic and MLflow are not needed to print help either.
    assert loaded & {*HEAVY, "numpy", "sqlalchemy", "alembic", "mlflow"} == set()
    assert not (tmp_path / "help-home").exists()  # help opens no workspace


@pytest.mark.parametrize("group", ["trace", "data", "model"])
def test_listing_loads_only_the_database_layer(tmp_path, group):
    home = tmp_path / "fresh"
    first = loaded_by([group, "list"], home=home)  # creates the workspace: migrates it
    assert first & {*HEAVY, "numpy", "mlflow"} == set()
    again = loaded_by([group, "list"], home=home)
    assert again & {*HEAVY, "numpy", "mlflow"} == set()
    assert "alembic" not in again  # the schema is at head: Alembic is not even imported
    # ... and the default SQLite file is read with the standard library (cli/common.py:
    # read_database): neither SQLAlchemy nor the artifact store's fsspec
    assert again & {"sqlalchemy", "fsspec"} == set()


def test_listings_load_no_library_code_they_do_not_show(tmp_path, mlflow_template):
    """``data list`` reads the corpus catalogue, not through slmops.data (chunkers, document
    loaders, the model modules); ``model list`` reads a registry with versions and aliases
    from the MLflow file, importing neither MLflow nor slmops.models."""
    from slmops.registry.store import URI_TAG, ModelRegistry

    home = tmp_path / "listed"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    with Workspace.open(home) as ws:
        registry = ModelRegistry(ws)
        registry._ensure_model("handbook")
        for number in (1, 2):
            registry.client.create_model_version(
                "handbook", f"file:///m/{number}", tags={URI_TAG: f"gguf:/m/{number}.gguf"}
            )
        registry.set_alias(name="handbook", alias="champion", version=1)
    modules = modules_loaded_by(["data", "list"], ["model", "list"], home=home)
    tops = {name.split(".")[0] for name in modules}
    assert tops & {*HEAVY, "numpy", "mlflow", "alembic", "sqlalchemy"} == set()
    assert not any(name.startswith(("slmops.data", "slmops.models")) for name in modules)


def test_shipped_head_is_alembics_head():
    from alembic.script import ScriptDirectory

    alembic_head = ScriptDirectory.from_config(
        workspace_module._alembic_config(None)
    ).get_current_head()
    assert workspace_module._shipped_head() == alembic_head


EXTRA_MIGRATION = '''"""A migration the test adds after the workspace was made."""

import sqlalchemy as sa
from alembic import op

{revision_lines}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("{table}")
'''


@pytest.fixture
def migrations_copy(tmp_path, monkeypatch):
    """A copy of the shipped migrations that the workspace module uses instead of them."""
    copy = tmp_path / "migrations"
    shutil.copytree(
        workspace_module._MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(workspace_module, "_MIGRATIONS", copy)
    workspace_module._shipped_head.cache_clear()
    yield copy
    workspace_module._shipped_head.cache_clear()


def add_migration(folder: Path, name: str, revision_lines: str, table: str) -> None:
    text = EXTRA_MIGRATION.format(revision_lines=revision_lines, table=table)
    (folder / "versions" / name).write_text(text)
    workspace_module._shipped_head.cache_clear()


def test_a_newer_migration_is_applied_to_a_workspace_at_the_old_head(tmp_path, migrations_copy):
    home = tmp_path / "ws"
    with Workspace.open(home) as ws:
        old_head = ws.schema_revision()
    # Written as migrations are: the quick reading of the files sees the new head.
    add_migration(
        migrations_copy,
        "9001_probe.py",
        f'revision = "9001"\ndown_revision = "{old_head}"',
        "startup_probe",
    )
    assert workspace_module._shipped_head() == "9001"
    with Workspace.open(home) as ws:
        assert ws.schema_revision() == "9001"
        assert "startup_probe" in inspect(ws.engine).get_table_names()
    # Written so that the quick reading cannot tell: Alembic is asked, and it migrates.
    add_migration(
        migrations_copy,
        "9002_probe.py",
        'REVISION = "9002"\nrevision = REVISION\ndown_revision = "9001"',
        "startup_probe_2",
    )
    assert workspace_module._shipped_head() is None
    with Workspace.open(home) as ws:
        assert ws.schema_revision() == "9002"
        assert "startup_probe_2" in inspect(ws.engine).get_table_names()
    with Workspace.open(home) as ws:  # and again: nothing left to do
        assert ws.schema_revision() == "9002"


@pytest.mark.parametrize(
    "revision_lines",
    [
        'revision = "9001"\ndown_revision = ("0008", "0009")',  # a merge
        'revision = "9001"\ndown_revision = "0008"',  # a branch: two heads
        'revision = "9001"\nrevision = "9003"\ndown_revision = "0009"',  # said twice
        'down_revision = "0009"',  # no revision
    ],
)
def test_migrations_the_quick_reading_cannot_tell_are_left_to_alembic(
    migrations_copy, revision_lines
):
    add_migration(migrations_copy, "9001_odd.py", revision_lines, "odd")
    assert workspace_module._shipped_head() is None


def test_help_values_equal_the_librarys():
    from slmops.apps import templates
    from slmops.data.corpus import DEFAULT_WRITE_WAIT
    from slmops.monitor.feedback import KINDS
    from slmops.pipelines.templates import PIPELINE_TEMPLATES
    from slmops.train.export import FORMATS

    assert choices.TEMPLATES == templates.TEMPLATES
    assert choices.DEFAULT_MODEL == templates.DEFAULT_MODEL
    assert choices.DEFAULT_ANSWER_MODE == templates.DEFAULT_ANSWER_MODE
    assert choices.DEFAULT_WRITE_WAIT == DEFAULT_WRITE_WAIT
    assert choices.FEEDBACK_KINDS == KINDS
    assert choices.FORMATS == FORMATS
    assert choices.PIPELINE_TEMPLATES == PIPELINE_TEMPLATES


def test_training_options_help_is_the_fields_descriptions():
    from slmops.cli.train import _HELP
    from slmops.train.args import LoraArgs, TrainArgs

    fields = {**TrainArgs.model_fields, **LoraArgs.model_fields}
    descriptions = {name: field.description or "" for name, field in fields.items()}
    assert descriptions == _HELP
