"""Names and paths users and clients give never reach outside the workspace.

Every name that becomes part of a file path (corpora, datasets, training datasets, prompts,
tags, stacks, registered models, aliases, experiments, artifact keys) is checked by one
rule (``slmops.store.names``); each hostile spelling below is refused with a
:class:`~slmops.errors.SlmopsError` naming the problem, and afterwards nothing named
``escaped`` exists anywhere around the test's folders, inside the workspace or out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from slmops.apps.build import build_stack
from slmops.apps.manifest import ManifestError
from slmops.apps.templates import ensure_workspace_stack, init_stack
from slmops.cli.main import app as cli
from slmops.data.corpus import DataError, corpora_for
from slmops.errors import SlmopsError, WorkspaceError
from slmops.eval.datasets import DatasetError, Datasets, EvalCase
from slmops.eval.generated import synthesize
from slmops.prompts.registry import PromptError, PromptRegistry
from slmops.registry.promotion import PromotionError, promote
from slmops.registry.store import ModelRegistry, RegistryError
from slmops.store import Workspace
from slmops.store.names import name_problem
from slmops.train.args import TrainArgs
from slmops.train.datasets import TrainDataError, TrainDatasets, TrainExample
from slmops.train.runs import Training
from tests.apps.conftest import write_manifest

MARK = "escaped"


def hostile(root: Path) -> list[str]:
    """Names that try to leave the folder they are joined to, or to smuggle a separator."""
    return [
        *(("../" * depth) + MARK for depth in range(1, 7)),
        f"a/../../{MARK}",
        f"./{MARK}",
        f"x/{MARK}",
        str(root / "outside" / MARK),  # absolute
        f"/{MARK}",
        "..",
        ".",
        f"..\\..\\{MARK}",  # backslashes: separators on Windows
        f"{MARK}\\x",
        f"C:\\{MARK}",
        f"{MARK}\x00.txt",  # NUL: truncates a C path
        "\x00",
        f"{MARK}\n",  # a final newline slipped through '$' before the fix
        f"{MARK}\r",
        f"\uff0e\uff0e/{MARK}",  # fullwidth full stops
        f"\u2025/{MARK}",  # two dot leader
        f"\u2024\u2024/{MARK}",  # one dot leader twice
        f"..\u2215{MARK}",  # division slash
        f"..\uff0f{MARK}",  # fullwidth solidus
        f"%2e%2e%2f{MARK}",  # URL-encoded
        f"~/{MARK}",
        f" {MARK}",
        "",
        MARK.upper(),
        "e" * 65,
    ]


def escaped_paths(root: Path) -> set[Path]:
    """Paths named like a refused name: anywhere below ``root`` (the test's folder, which
    holds the workspace), or right inside one of the folders above it."""
    found = {p for p in root.rglob("*") if MARK in p.name.lower() or "eeeeeeeee" in p.name}
    for parent in [*list(root.parents)[:4], Path("/")]:
        found |= {p for p in parent.iterdir() if p.name.lower().startswith(MARK)}
    return found


@pytest.fixture
def bad_names(tmp_path: Path) -> Iterator[list[str]]:
    before = escaped_paths(tmp_path)
    yield hostile(tmp_path)
    written = escaped_paths(tmp_path) - before
    assert not written, f"written for a refused name: {sorted(written)}"


def refuses(
    call: Callable[[str], Any],
    names: list[str],
    error: type[SlmopsError],
    mentions: str = "name",
) -> None:
    """``call(name)`` raises ``error`` for each name, with a message a user can act on."""
    for name in names:
        with pytest.raises(error) as raised:
            call(name)
        assert mentions in str(raised.value), (name, str(raised.value))


def test_the_naming_rule_refuses_every_hostile_name(bad_names: list[str]) -> None:
    for name in bad_names:
        assert name_problem("corpus", name), repr(name)
    assert name_problem("corpus", "docs_v2-en") is None


def test_corpus_names(workspace: Workspace, tmp_path: Path, bad_names: list[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    corpora = corpora_for(workspace)
    refuses(lambda name: corpora.ingest(name, [docs]), bad_names, DataError)
    refuses(lambda name: corpora.tag("docs", 1, name), bad_names, DataError, "tag")


def corpus_export(path: Path, name: str) -> Path:
    """An export file as ``slmops data export`` writes it, naming corpus ``name``."""
    meta = {
        "name": name,
        "version": 1,
        "message": "m",
        "embedder": "local:all-minilm-l6-v2",
        "chunk_tokens": 200,
        "overlap_tokens": 32,
    }
    table = pa.table({"doc_id": ["d"], "text": ["t"]})
    pq.write_table(table.replace_schema_metadata({"slmops.corpus": json.dumps(meta)}), path)
    return path


def test_corpus_imports_check_both_the_given_and_the_exported_name(
    workspace: Workspace, tmp_path: Path, bad_names: list[str]
) -> None:
    corpora = corpora_for(workspace)
    exported = corpus_export(tmp_path / "ok.parquet", "docs")
    given = [name for name in bad_names if name]  # no --name: the exported name, below
    refuses(lambda name: corpora.import_(exported, name=name), given, DataError)
    # the file itself is untrusted: a corpus name it carries is checked like a typed one
    for number, name in enumerate(bad_names):
        hostile_file = corpus_export(tmp_path / f"file-{number}.parquet", name)
        with pytest.raises(DataError, match="name"):
            corpora.import_(hostile_file)


def test_dataset_and_training_dataset_names(workspace: Workspace, bad_names: list[str]) -> None:
    case = EvalCase(id="a", input="q", reference="r")
    refuses(lambda name: Datasets(workspace).add(name, [case]), bad_names, DatasetError)
    example = TrainExample(prompt="2+2=", completion="4")
    refuses(lambda name: TrainDatasets(workspace).add(name, [example]), bad_names, TrainDataError)


def test_prompt_names_and_tags(workspace: Workspace, bad_names: list[str]) -> None:
    registry = PromptRegistry(workspace)
    refuses(lambda name: registry.add(name, "Hello {{ x }}"), bad_names, PromptError)
    registry.add("qa", "Hello {{ x }}")
    refuses(lambda name: registry.tag("qa", 1, name), bad_names, PromptError, "tag")


def test_stack_names(
    workspace: Workspace, stacks_dir: Path, tmp_path: Path, bad_names: list[str]
) -> None:
    refuses(
        lambda name: init_stack(name, "rag", workspace, directory=stacks_dir),
        bad_names,
        ManifestError,
    )
    refuses(
        lambda name: init_stack("fine", "rag", workspace, directory=stacks_dir, corpus=name),
        bad_names,
        ManifestError,
    )
    refuses(lambda name: ensure_workspace_stack(name, "rag", workspace), bad_names, ManifestError)
    # a stack made from a corpus name (the synth stack) checks the name it makes
    refuses(lambda name: synthesize(workspace, name, n=1), bad_names, ManifestError)
    for number, name in enumerate(bad_names):  # a manifest that names itself badly
        write_manifest(
            stacks_dir,
            f"stack{number}",
            f'[stack]\nname = {json.dumps(name)}\n[[steps]]\nname = "s"\nkind = "function"\n'
            'call = "json:dumps"\n',
        )
        with pytest.raises(ManifestError, match="name"):
            build_stack(f"stack{number}", workspace)


@pytest.fixture
def registry(workspace: Workspace, mlflow_template: Path) -> ModelRegistry:
    shutil.copy(mlflow_template, workspace.home / "mlflow.db")
    return ModelRegistry(workspace)


def test_registry_model_names_aliases_and_experiments(
    workspace: Workspace, registry: ModelRegistry, tmp_path: Path, bad_names: list[str]
) -> None:
    uri = f"gguf:{tmp_path / 'model.gguf'}"  # the name is checked before the file is read
    refuses(lambda name: registry.register(name=name, uri=uri), bad_names, RegistryError)
    refuses(
        lambda alias: promote(
            workspace,
            registry,
            ref="tiny@1",
            alias=alias,
            stack="s",
            dataset="d",
            gates=["exact_match>=0"],
        ),
        bad_names,
        PromotionError,
    )
    training = Training(workspace, registry.tracker)
    refuses(
        lambda name: training.start(base=uri, data="sums@1", args=TrainArgs(), name=name),
        bad_names,
        SlmopsError,
    )
    assert not (workspace.home / "models" / "registry").exists() or not any(
        (workspace.home / "models" / "registry").iterdir()
    )


def test_artifact_keys(workspace: Workspace) -> None:
    store = workspace.artifacts
    for key in [
        "../x",
        "/etc/x",
        "a/../../x",
        "..",
        "a\x00b",  # was: ValueError from the filesystem, after writing a stray temp file
        "a\\..\\..\\x",  # was: a file literally named so on POSIX, a traversal on Windows
        "",
    ]:
        with pytest.raises(WorkspaceError, match="artifact key"):
            store.put_bytes(key, b"x")
    assert not any(p.name.endswith(".tmp") for p in Path(store.path("x")).parent.rglob("*"))


def test_squad_import_checks_names_before_writing(tmp_path: Path, bad_names: list[str]) -> None:
    """``slmops eval import-squad --corpus ../../x`` wrote the paragraphs file outside the
    workspace before the name was checked."""
    squad = tmp_path / "squad.json"
    squad.write_text(
        json.dumps(
            {
                "version": "v2.0",
                "data": [
                    {
                        "title": "T",
                        "paragraphs": [
                            {
                                "context": "Paris is the capital of France.",
                                "qas": [
                                    {
                                        "id": "q1",
                                        "question": "What is the capital of France?",
                                        "answers": [{"text": "Paris"}],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    home = str(tmp_path / "ws")
    runner = CliRunner()
    for name in bad_names:
        for option, other in (("--corpus", "--dataset"), ("--dataset", "--corpus")):
            args = ["eval", "import-squad", str(squad), option, name, other, "fine"]
            result = runner.invoke(cli, [*args, "--workspace", home])
            assert isinstance(result.exception, SlmopsError), (name, result.output)
            assert "name" in str(result.exception)


def test_prompt_export_writes_only_where_it_is_told(workspace: Workspace, tmp_path: Path) -> None:
    PromptRegistry(workspace).add("qa", "Hello {{ x }}", system="Be brief.")
    runner = CliRunner()
    home = str(workspace.home)
    target = tmp_path / "out"
    result = runner.invoke(cli, ["prompt", "export", "qa", str(target), "--workspace", home])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == ["qa.j2", "qa.system.j2"]
    for ref in (f"../../{MARK}", f"/{MARK}", f"{MARK}\x00"):
        result = runner.invoke(cli, ["prompt", "export", ref, str(target), "--workspace", home])
        assert isinstance(result.exception, SlmopsError), result.output
    assert sorted(p.name for p in target.iterdir()) == ["qa.j2", "qa.system.j2"]


def test_served_model_names_are_looked_up_never_opened(workspace: Workspace, runtime) -> None:
    from fastapi.testclient import TestClient

    from slmops.serve.app import Catalog, ServeConfig, create_app
    from tests.fakes import ScriptedChatModel

    catalog = Catalog(chat_models={"fake": ScriptedChatModel(["hi"], uri="local:fake")})
    app = create_app(catalog, runtime, ServeConfig(monitor=None))
    with TestClient(app) as client:
        for model in (
            "../../etc/passwd",
            "/etc/passwd",
            "gguf:/etc/passwd",
            "registry:../x",
            "stack:../../x",
            "fake\x00",
        ):
            response = client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 404, (model, response.text)
            assert response.json()["error"]["code"] == "model_not_found"
