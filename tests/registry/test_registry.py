"""The model registry on the tiny model: versions with checked weights, registry: URIs,
MLflow's own client seen, locks, gated promotion with an audit log, rollback, races."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from slmops.apps.build import build_stack
from slmops.apps.lock import write_lock
from slmops.apps.manifest import ManifestError, load_manifest
from slmops.apps.templates import init_stack
from slmops.errors import NotFoundError
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.gates import GateError
from slmops.eval.runner import list_runs
from slmops.models.loading import load_chat_model
from slmops.registry import promotion
from slmops.registry.promotion import PromotionError, alias_events, promote, rollback
from slmops.registry.registration import register_uri
from slmops.registry.store import ModelRegistry, RegistryError
from slmops.store import Workspace
from slmops.train.tracking import tracking_uri
from tests.train.tiny_model import write_tiny_gguf


@pytest.fixture
def registry(workspace: Workspace, mlflow_template: Path) -> ModelRegistry:
    shutil.copy(mlflow_template, workspace.home / "mlflow.db")
    return ModelRegistry(workspace)


@pytest.fixture(scope="session")
def other_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-other") / "other.gguf", seed=1)


def test_a_version_keeps_a_checked_copy_of_its_weights(registry, tiny_gguf, tmp_path):
    source = tmp_path / "mine.gguf"
    shutil.copy(tiny_gguf, source)
    version = register_uri(registry, name="tiny", uri=f"gguf:{source}", intended_use="tests")
    assert version.ref == "tiny@1" and version.sha256 and version.sha256.startswith("sha256:")
    assert version.uri.startswith("gguf:") and str(source) not in version.uri  # a copy
    assert "## Intended use\n\ntests" in version.card
    source.unlink()  # the registered copy does not depend on the source
    model = load_chat_model("registry:tiny@1")
    assert model.uri == "registry:tiny@1"  # answers name the version
    assert model.count_tokens("hello") == 1
    stored = Path(version.uri.removeprefix("gguf:"))
    with stored.open("r+b") as handle:
        handle.seek(-16, 2)
        handle.write(b"\x01" * 16)
    with pytest.raises(RegistryError, match="tiny@1 changed since it was registered"):
        registry.verified(registry.resolve("tiny@1"))
    stored.unlink()
    with pytest.raises(RegistryError, match="the weights of tiny@1 are gone"):
        registry.verified(registry.resolve("tiny@1"))


def test_unknown_names_versions_and_aliases_are_clear_errors(registry, tiny_gguf):
    register_uri(registry, name="tiny", uri=f"gguf:{tiny_gguf}")
    with pytest.raises(NotFoundError, match="no registered model 'nope'"):
        registry.resolve("nope@1")
    with pytest.raises(NotFoundError, match="has no version 7"):
        registry.resolve("tiny@7")
    with pytest.raises(NotFoundError, match="has no alias 'champion'"):
        registry.resolve("tiny@champion")
    with pytest.raises(RegistryError, match="model name 'Bad Name'"):
        registry.register(name="Bad Name", uri=f"gguf:{tiny_gguf}")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register(name="tiny", uri="gguf:/nowhere/x.gguf")
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(name="tiny", uri="registry:tiny@1")
    assert [v.version for v in registry.versions("tiny")] == [1]


def test_versions_and_aliases_set_with_mlflows_own_client_are_seen(
    registry, workspace, tiny_gguf, tmp_path
):
    from mlflow import MlflowClient

    folder = tmp_path / "outside"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "weights.gguf")
    client = MlflowClient(
        tracking_uri=tracking_uri(workspace), registry_uri=tracking_uri(workspace)
    )
    client.create_registered_model("outside")
    client.create_model_version("outside", folder.as_uri())
    client.set_registered_model_alias("outside", "prod", "1")
    version = registry.resolve("outside@prod")
    assert version.uri == f"gguf:{folder / 'weights.gguf'}" and version.aliases == ("prod",)
    assert "outside" in registry.names()


CASES = [
    EvalCase(id="a", input="Say hello.", reference="hello"),
    EvalCase(id="b", input="Name a colour.", reference="red"),
    EvalCase(id="c", input="Count to three.", reference="one two three"),
]


@pytest.fixture
def chat_stack(registry, workspace, stacks_dir, tiny_gguf, other_tiny) -> str:
    register_uri(registry, name="tiny", uri=f"gguf:{tiny_gguf}")
    register_uri(registry, name="tiny", uri=f"gguf:{other_tiny}")
    init_stack("chatty", "chat", workspace, directory=stacks_dir, model="registry:tiny@champion")
    Datasets(workspace).add("greetings", CASES)
    return "chatty"


def test_promotion_moves_an_alias_only_through_its_gates(registry, workspace, chat_stack):
    first = promote(
        workspace,
        registry,
        ref="tiny@1",
        alias="champion",
        stack=chat_stack,
        dataset="greetings",
        gates=["error_rate<=0", "token_f1>=+0.5 vs champion"],
        reason="first",
    )
    assert first.promoted and first.holder is None  # nothing to beat yet
    assert registry.aliases("tiny") == {"champion": 1}
    refused = promote(
        workspace,
        registry,
        ref="tiny@2",
        alias="champion",
        stack=chat_stack,
        dataset="greetings",
        gates=["token_f1>=+0.5 vs champion"],
    )
    assert not refused.promoted and registry.aliases("tiny") == {"champion": 1}
    assert "is 0.5" in refused.failed[0].detail or "below +0.5" in refused.failed[0].detail
    card = registry.get(name="tiny", version=2).card
    assert "Not promoted." in card and "FAILED: token_f1>=+0.5 vs champion" in card
    runs_before = len(list_runs(workspace, 100))
    accepted = promote(
        workspace,
        registry,
        ref="tiny@2",
        alias="champion",
        stack=chat_stack,
        dataset="greetings",
        gates=["token_f1>=-1 vs champion at 95%", "p95_latency_ms<=60000"],
        reason="no worse",
    )
    assert accepted.promoted and registry.aliases("tiny") == {"champion": 2}
    assert len(list_runs(workspace, 100)) == runs_before  # both eval runs were reused
    events = alias_events(workspace, "tiny")
    assert [(e["from_version"], e["to_version"], e["action"]) for e in events] == [
        (None, 1, "promote"),
        (1, 2, "promote"),
    ]
    assert events[1]["reason"] == "no worse" and events[1]["evidence"]["candidate_run"]
    assert rollback(workspace, registry, name="tiny", alias="champion") == (2, 1)
    assert registry.aliases("tiny") == {"champion": 1}
    assert rollback(workspace, registry, name="tiny", alias="champion") == (1, None)
    assert registry.aliases("tiny") == {}
    with pytest.raises(PromotionError, match="no promotion of tiny@champion left"):
        rollback(workspace, registry, name="tiny", alias="champion")


def test_bad_promotions_change_nothing(registry, workspace, chat_stack):
    common = {"ref": "tiny@1", "alias": "champion", "stack": chat_stack, "dataset": "greetings"}
    with pytest.raises(GateError, match="no figure 'bleu'"):
        promote(workspace, registry, **common, gates=["bleu>=0.3"])
    with pytest.raises(PromotionError, match="no metric 'bleu'"):
        promote(workspace, registry, **common, gates=["bleu>=+0.1 vs champion"])
    with pytest.raises(PromotionError, match="at least one --gate"):
        promote(workspace, registry, **common, gates=[])
    with pytest.raises(PromotionError, match="looks like a version"):
        promote(workspace, registry, **{**common, "alias": "v2"}, gates=["error_rate<=0"])
    assert registry.aliases("tiny") == {} and alias_events(workspace, "tiny") == []
    assert list_runs(workspace) == []  # refused before anything was evaluated


def test_racing_alias_moves_one_wins_and_the_log_stays_true(registry, workspace, chat_stack):
    outcomes: list[str] = []

    def move(target: int) -> None:
        try:
            promotion._move(
                workspace,
                registry,
                name="tiny",
                alias="champion",
                expected=None,
                target=target,
                action="promote",
                reason=f"race {target}",
                evidence={},
            )
            outcomes.append(f"won {target}")
        except PromotionError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=move, args=(t,)) for t in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and any("moved while this ran" in o for o in outcomes)
    events = alias_events(workspace, "tiny")
    assert len(events) == 1
    assert registry.aliases("tiny") == {"champion": events[0]["to_version"]}


def test_a_locked_stack_refuses_an_alias_that_moved(registry, workspace, chat_stack, stacks_dir):
    promotion._move(
        workspace, registry, name="tiny", alias="champion", expected=None, target=1,
        action="promote", reason="", evidence={},
    )  # fmt: skip
    lock = write_lock(load_manifest(stacks_dir / chat_stack / "slmops.toml"), workspace)
    assert lock.model_versions == {"chat": "registry:tiny@1"}
    locked = build_stack(chat_stack, workspace)  # locked on version 1: runs exactly it
    assert locked.resolved.models == {"chat": "registry:tiny@1"}
    promotion._move(
        workspace, registry, name="tiny", alias="champion", expected=1, target=2,
        action="promote", reason="", evidence={},
    )  # fmt: skip
    with pytest.raises(ManifestError, match="now resolves to registry:tiny@2, the lock pinned"):
        build_stack(chat_stack, workspace)
    assert build_stack(chat_stack, workspace, use_lock=False).resolved.models == {
        "chat": "registry:tiny@champion"
    }
