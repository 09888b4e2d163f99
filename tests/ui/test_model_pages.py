"""The Models pages through the ASGI app: registered models, a model's versions and the audit
log of its aliases, a version's card (Markdown, escaped) and lineage, and training runs with
their loss curve. Nothing trains here: the training run is written to the MLflow store the
way a run records itself (``Tracker`` calls, and a ``run.json`` in its folder)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slmops.registry import promotion
from slmops.registry.registration import register_uri
from slmops.registry.store import ModelRegistry
from slmops.store import Workspace
from slmops.train.runs import RUN_FILE, run_dir
from slmops.train.tracking import KIND_TAG, Tracker, TrackingError
from slmops.ui import create_console
from slmops.ui import models as model_pages

CARD_SCRIPT = "<script>alert('card')</script>"


@dataclass
class Registered:
    run_id: str
    eval_run: str


def write_training_run(tracker: Tracker, workspace: Workspace) -> str:
    """A finished run as ``Training`` records one: params, per-step and per-epoch losses,
    figures, tags, an artifact, a checkpoint folder and its run.json."""
    run_id = tracker.start_run("sums", "sums-tiny", tags={KIND_TAG: "train"})
    tracker.log_params(
        run_id,
        {"base": "gguf:/models/tiny.gguf", "base_digest": "sha256:" + "ab" * 32, "data": "sums@1"},
    )
    tracker.log_params(
        run_id, {"method": "lora", "lora.r": 8, "epochs": 2, "data_sha256": "cd" * 32}
    )
    for step in range(1, 9):
        tracker.log_metrics(run_id, {"train_loss": 3.0 - step * 0.25}, step)
    tracker.log_metrics(run_id, {"heldout_loss": 2.4}, 4)
    tracker.log_metrics(run_id, {"heldout_loss": 1.9}, 8)
    tracker.log_metrics(
        run_id,
        {"final_train_loss": 1.0, "best_heldout_loss": 1.9, "train_tokens_per_s": 812.0},
        8,
    )
    folder = run_dir(workspace, run_id)
    (folder / "checkpoints" / "step-4").mkdir(parents=True)
    (folder / "checkpoints" / "step-8").mkdir(parents=True)
    spec = {
        "run_id": run_id,
        "experiment": "sums",
        "base": {"uri": "gguf:/models/tiny.gguf", "digest": "sha256:" + "ab" * 32},
        "dataset": {"ref": "sums@1", "lineage": {"prompt": "answer@2", "corpora": {"docs": 1}}},
        "args": {},
        "code": {"slmops": "0.test"},
    }
    (folder / RUN_FILE).write_text(json.dumps(spec), encoding="utf-8")
    tracker.log_artifact(run_id, folder / RUN_FILE)
    tracker.set_tags(run_id, {"slmops.state": "finished", "slmops.eval.last": "qa@1 f1=0.5"})
    tracker.set_status(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def registered_workspace(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path, tiny_gguf: Path
) -> Iterator[tuple[Workspace, Registered]]:
    """One workspace for the module (registering takes seconds): tiny@1 (a card with markup
    in it, promoted to champion with evidence) and tiny@2 (from a training run)."""
    with Workspace.open(tmp_path_factory.mktemp("models") / "ws") as workspace:
        shutil.copy(mlflow_template, workspace.home / "mlflow.db")
        yield workspace, register_models(workspace, tiny_gguf)


def register_models(workspace: Workspace, tiny_gguf: Path) -> Registered:
    registry = ModelRegistry(workspace)
    first = register_uri(registry, name="tiny", uri=f"gguf:{tiny_gguf}", intended_use="tests")
    registry.set_card(first, first.card + f"\n## Notes\n\n{CARD_SCRIPT} and *emphasis*\n")
    run_id = write_training_run(registry.tracker, workspace)
    registry.register(
        name="tiny",
        uri=f"gguf:{tiny_gguf}",
        run_id=run_id,
        tags={
            "slmops.train_run": run_id,
            "slmops.dataset": "sums@1",
            "slmops.corpora": {"docs": 1},
        },
    )
    eval_run = "e" * 32
    registry.tag(first, {f"slmops.eval.{eval_run[:12]}": "qa@1"})
    promotion._move(
        workspace,
        registry,
        name="tiny",
        alias="champion",
        expected=None,
        target=1,
        action="promote",
        reason="first <b>release</b>",
        evidence={
            "stack": "chatty",
            "dataset": "qa@1",
            "candidate_run": eval_run,
            "holder_runs": {},
            "gates": [{"gate": "error_rate<=0", "passed": True, "detail": "0 <= 0"}],
        },
    )
    return Registered(run_id=run_id, eval_run=eval_run)


@pytest.fixture(scope="module")
def models_client(registered_workspace: tuple[Workspace, Registered]) -> Iterator[TestClient]:
    with TestClient(
        create_console(registered_workspace[0]), base_url="http://127.0.0.1"
    ) as test_client:
        yield test_client


@pytest.fixture
def registered(registered_workspace: tuple[Workspace, Registered]) -> Registered:
    return registered_workspace[1]


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    """A console on the test's own (empty) workspace."""
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_the_model_list_shows_versions_aliases_and_latest(
    models_client: TestClient, registered: Registered
):
    page = models_client.get("/models")
    assert page.status_code == 200
    text = page.text
    assert 'href="/models/tiny"' in text
    row = re.search(r'<a href="/models/tiny">tiny</a></td>\s*<td class="num">(\d+)</td>', text)
    assert row is not None and row.group(1) == "2"
    assert 'href="/models/tiny/2">2</a>' in text  # the latest
    assert "champion → 1" in text
    assert 'href="/models" class="here"' in text


def test_a_model_page_has_versions_and_the_audit_log(
    models_client: TestClient, registered: Registered
):
    page = models_client.get("/models/tiny")
    assert page.status_code == 200
    text = page.text
    assert 'href="/models/tiny/1">tiny@1</a>' in text and 'href="/models/tiny/2">tiny@2</a>' in text
    assert f'href="/train/{registered.run_id}"' in text  # version 2's source run
    assert "gguf" in text and re.search(r"[0-9a-f]{12}</td>", text)  # format, sha256
    audit = text[text.index('id="audit"') :]
    assert "- → 1" in audit and "promote" in audit
    assert "first &lt;b&gt;release&lt;/b&gt;" in audit  # the reason is text
    assert f'href="/eval/runs/{registered.eval_run}"' in audit
    assert "passed: error_rate&lt;=0" in audit
    assert "set outside slmops" not in text


def test_an_alias_set_outside_slmops_is_flagged(
    models_client: TestClient, registered_workspace: tuple[Workspace, Registered]
):
    registry = ModelRegistry(registered_workspace[0])
    registry.set_alias(name="tiny", alias="canary", version=2)
    try:
        assert "canary → 2 was set outside slmops" in models_client.get("/models/tiny").text
    finally:
        registry.set_alias(name="tiny", alias="canary", version=None)


def test_a_version_page_renders_its_card_safely_with_lineage(
    models_client: TestClient, registered: Registered
):
    page = models_client.get("/models/tiny/1")
    assert page.status_code == 200
    text = page.text
    card = text[text.index('class="model-card"') :]
    assert "<h1>tiny version 1</h1>" in card and "<h2>Intended use</h2>" in card
    assert "<em>emphasis</em>" in card
    assert "&lt;script&gt;alert('card')&lt;/script&gt;" in card  # shown as text
    assert CARD_SCRIPT not in text
    assert f'href="/eval/runs/{registered.eval_run[:12]}"' in text  # evaluated by
    assert "champion" in text
    second = models_client.get("/models/tiny/2").text
    assert f'href="/train/{registered.run_id}"' in second
    assert "docs = 1" in second and "sums@1" in second
    assert models_client.get("/models/tiny/champion").text.count("tiny@1") >= 1  # by alias


def test_unknown_models_versions_and_runs_are_404(
    models_client: TestClient, registered: Registered
):
    for url, message in [
        ("/models/nope", "no registered model &#39;nope&#39;"),
        ("/models/tiny/9", "model &#39;tiny&#39; has no version 9"),
        ("/models/tiny/staging", "has no alias &#39;staging&#39;"),
        ("/models/nope/1", "no registered model &#39;nope&#39;"),
        ("/train/0123456789ab", "no train run with id"),
    ]:
        page = models_client.get(url)
        assert page.status_code == 404, url
        assert message in page.text, (url, page.text)


def test_training_runs_list_and_a_run_with_its_loss_curve(
    models_client: TestClient, registered: Registered
):
    runs = models_client.get("/train")
    assert runs.status_code == 200
    short = registered.run_id[:12]
    assert f'href="/train/{registered.run_id}">{short}</a>' in runs.text
    for shown in ("sums@1", "finished", ">8<", "1.0000", "1.9000", "812", "qa@1 f1=0.5"):
        assert shown in runs.text, shown
    page = models_client.get(f"/train/{registered.run_id[:8]}")  # a prefix is enough
    assert page.status_code == 200
    text = page.text
    assert f"Loss of run {short}" in text
    # training loss as a line of 8 points, held-out loss as a dot at each epoch's end
    assert text.count("<circle ") == 10 and "training loss" in text and "held-out loss" in text
    assert "held-out loss after epoch 2 (step 8): 1.9000" in text
    for shown in ("step-4", "step-8", "run.json", "answer@2", "docs = 1", "lora.r", "0.test"):
        assert shown in text, shown
    assert 'href="/models/tiny/2">tiny@2</a>' in text  # registered as


def test_without_a_tracking_store_the_pages_are_empty_and_create_nothing(
    client: TestClient, workspace: Workspace
):
    assert "No registered models yet" in client.get("/models").text
    assert "No training runs yet" in client.get("/train").text
    assert client.get("/models/tiny").status_code == 404
    assert not (workspace.home / "mlflow.db").exists()


def test_without_mlflow_the_pages_say_what_to_install(
    client: TestClient, workspace: Workspace, monkeypatch: pytest.MonkeyPatch, mlflow_template
):
    shutil.copy(mlflow_template, workspace.home / "mlflow.db")

    def no_mlflow(_workspace: Workspace) -> Tracker:
        raise TrackingError("experiment tracking needs the 'train' extra: pip install x")

    monkeypatch.setattr(model_pages, "Tracker", no_mlflow)
    for url in ("/models", "/train"):
        page = client.get(url)
        assert page.status_code == 200
        assert "needs the &#39;train&#39; extra" in page.text
    detail = client.get("/models/tiny")
    assert detail.status_code == 503 and "pip install x" in detail.text
