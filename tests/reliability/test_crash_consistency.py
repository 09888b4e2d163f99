"""Crash consistency: every write path killed with SIGKILL at seeded random points.

Each operation (corpus ingest, eval dataset add, training dataset add, prompt add, eval run,
model registration, promotion and rollback) runs in a child process that dies at a random
line of slmops code, at a random *boundary* (the first slmops line after a call into
SQLAlchemy, LanceDB, MLflow or fsspec returned: between one write and the next), or after a
random delay (which can land inside LanceDB, SQLite or MLflow). After each kill the workspace
must open; every committed version must read back whole, matching its checksum and unchanged
since it was committed; the killed writer may have committed at most its own content; and
running the operation again (``eval run --resume`` for a run) must finish the job.

A handful of trials per operation run by default; ``SLMOPS_CRASH_TRIALS=N`` runs N per
operation (the long mode), ``SLMOPS_CRASH_SEED`` replays another seed. Failures name the
operation, the trial, the seed and the kill point; ``pytest -s`` prints each operation's tally.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.reliability._harness import (
    Outcome,
    crash_trials,
    finish,
    make_workspace,
    run_child,
    seed,
)
from tests.train.tiny_model import write_tiny_gguf

# --- the driver --------------------------------------------------------------------------


class Scenario(Protocol):
    operation: str

    def setup(self, home: Path) -> None: ...

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        """The inputs of this trial's write (each trial writes something new)."""
        ...

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        """The invariants after a (possibly killed) write of ``params``."""
        ...

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        """Run the write again (or resume it) and check the job is done."""
        ...


@dataclass
class Tally:
    operation: str
    trials: int = 0
    killed: int = 0

    def __str__(self) -> str:
        return f"{self.operation}: {self.trials} trials, {self.killed} killed, 0 failures"


def drive(scenario: Scenario, home: Path, trials: int) -> Tally:
    """Trial 0 runs uncut, measuring the write (its slmops lines, boundaries and seconds;
    a scenario with several kinds of write, ``kind(params)``, measures each the first time
    it comes). The others are killed in turn at a random line, at a random boundary (just
    after a library call returned: where a write has landed and the next has not), or a
    random delay into the write (which can land inside LanceDB, SQLite or MLflow)."""
    rng = random.Random(f"{seed()}:{scenario.operation}")
    kind = getattr(scenario, "kind", lambda params: "")
    tally = Tally(scenario.operation)
    sizes: dict[str, Outcome] = {}
    scenario.setup(home)
    for trial in range(trials + 1):
        params = scenario.params(home, trial)
        size = sizes.get(kind(params))
        if size is None:
            where = "(uncut, measuring)"
            outcome = run_child(scenario.operation, home, params)
            assert outcome.error is None and outcome.lines, outcome.error
            sizes[kind(params)] = outcome
        elif trial % 3 == 0:
            delay = rng.uniform(0.0, size.seconds)
            where = f"{delay:.3f} s after it started (of {size.seconds:.3f} s)"
            outcome = run_child(scenario.operation, home, params, kill_after=delay)
        elif trial % 3 == 1:
            line = rng.randint(1, size.lines)
            where = f"at slmops line {line} of {size.lines}"
            outcome = run_child(scenario.operation, home, params, kill_at_line=line)
        else:
            boundary = rng.randint(1, size.boundaries)
            where = f"at boundary {boundary} of {size.boundaries}"
            outcome = run_child(scenario.operation, home, params, kill_at_boundary=boundary)
        context = (
            f"{scenario.operation} {kind(params)} trial {trial} "
            f"(SLMOPS_CRASH_SEED={seed()}), {'killed' if outcome.killed else 'not killed'} {where}"
        )
        assert outcome.error is None, f"{context}: the write failed: {outcome.error}"
        scenario.check(home, params, context)
        scenario.finish(home, params, context)
        tally.trials += 1
        tally.killed += outcome.killed
    print(tally)
    return tally


def check_versions(
    found: dict[int, Any], known: dict[int, Any], intended: Any, context: str
) -> int | None:
    """Every version committed before is there, unchanged; at most one new version, the
    next number, holding exactly the killed write's content. Returns the new version."""
    for version, content in known.items():
        assert version in found, f"{context}: committed version {version} is gone"
        assert found[version] == content, f"{context}: committed version {version} changed"
    new = sorted(found.keys() - known.keys())
    assert len(new) <= 1, f"{context}: several new versions {new}"
    if not new:
        return None
    assert new[0] == max(known, default=0) + 1, f"{context}: new version {new[0]} skips"
    assert found[new[0]] == intended, f"{context}: version {new[0]} holds other content"
    return new[0]


def digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()


def whole_files(folder: Path, context: str) -> int:
    """Every versioned file under ``folder`` holds what its name's checksum says (files are
    written under a temporary name and moved); returns how many temporary files a killed
    write left (never read: no version names them)."""
    if not folder.exists():
        return 0
    for path in folder.glob("v*.jsonl"):
        name_sha = path.stem.partition("-")[2]
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(name_sha), (
            f"{context}: {path.name} is not whole"
        )
    return len(list(folder.glob(".*.tmp")))


# --- versioned JSONL: eval datasets and training datasets -------------------------------


class JsonlScenario:
    """``eval dataset add`` or ``train data add`` of a new version of one dataset."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.known: dict[int, Any] = {}

    def setup(self, home: Path) -> None:
        pass

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        if self.operation == "dataset_add":
            records = [
                {"id": f"t{trial}-{i}", "input": f"Question {i} of trial {trial}?"}
                for i in range(2 + trial % 3)
            ]
        else:
            records = [
                {"prompt": f"Prompt {i} of trial {trial}", "completion": f"Answer {trial}.{i}"}
                for i in range(2 + trial % 3)
            ]
        return {"name": "crash", "records": records, "message": f"trial {trial}"}

    def _content(self, records: list[dict[str, Any]]) -> Any:
        keys = ("id", "input") if self.operation == "dataset_add" else ("prompt", "completion")
        return sorted(tuple(r[k] for k in keys) for r in records)

    def _found(self, home: Path) -> dict[int, Any]:
        """Each version's records, read back through the checksum check."""
        from slmops.eval.datasets import Datasets
        from slmops.store import Workspace
        from slmops.train.datasets import TrainDatasets

        found: dict[int, Any] = {}
        with Workspace.open(home) as workspace:
            if self.operation == "dataset_add":
                datasets = Datasets(workspace)
                for version in datasets.log("crash", missing_ok=True):
                    _, cases = datasets.cases(version.ref)
                    found[version.version] = self._content([c.model_dump() for c in cases])
                    assert version.cases == len(cases)
            else:
                train = TrainDatasets(workspace)
                for name in train.names():
                    for version in train.log(name):
                        _, examples = train.examples(version.ref)
                        found[version.version] = self._content([e.model_dump() for e in examples])
                        assert version.examples == len(examples)
        return found

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        self.new = check_versions(
            self._found(home), self.known, self._content(params["records"]), context
        )
        prefix = "eval-datasets" if self.operation == "dataset_add" else "train-datasets"
        whole_files(home / "artifacts" / prefix / "crash", context)

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        result = finish(self.operation, home, params)
        expected = self.new or max(self.known, default=0) + 1
        assert result["version"] == expected, f"{context}: rerun gave {result}"
        assert result["created"] == (self.new is None), f"{context}: rerun gave {result}"
        self.known = self._found(home)
        assert self.known[expected] == self._content(params["records"]), context
        # The killed writer's temporary (if any) was swept by the next process to open the
        # workspace: its owner, named in it, is gone.
        artifacts = home / "artifacts"
        leftovers = [*artifacts.glob(".writes/*"), *artifacts.rglob(".*.tmp")]
        assert leftovers == [], f"{context}: leftovers of the killed write: {leftovers}"


# --- prompts -----------------------------------------------------------------------------


class PromptScenario:
    operation = "prompt_add"

    def __init__(self) -> None:
        self.known: dict[int, Any] = {}

    def setup(self, home: Path) -> None:
        pass

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        return {
            "name": "crash",
            "template": f"Trial {trial}: answer {{{{ question }}}} from {{{{ context }}}}.",
            "system": f"You are assistant number {trial}." if trial % 2 else None,
        }

    def _found(self, home: Path) -> dict[int, Any]:
        from slmops.prompts.registry import PromptRegistry
        from slmops.store import Workspace

        found: dict[int, Any] = {}
        with Workspace.open(home) as workspace:
            for version in PromptRegistry(workspace).log("crash", missing_ok=True):
                text = f"{version.system or ''}\x00{version.template}"
                assert hashlib.sha256(text.encode()).hexdigest() == version.sha256, version.ref
                found[version.version] = (version.system, version.template)
        return found

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        intended = (params["system"], params["template"])
        self.new = check_versions(self._found(home), self.known, intended, context)

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        result = finish(self.operation, home, params)
        expected = self.new or max(self.known, default=0) + 1
        assert (result["version"], result["created"]) == (expected, self.new is None), context
        self.known = self._found(home)


# --- corpora -----------------------------------------------------------------------------


class IngestScenario:
    """``slmops data ingest`` of a folder that changes each trial (a document added, one
    edited, one removed)."""

    operation = "ingest"

    def __init__(self, folder: Path, embedder: str | None = None) -> None:
        self.folder = folder
        self.embedder = embedder
        self.known: dict[int, Any] = {}

    def setup(self, home: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (self.folder / f"base{i}.md").write_text(
                f"# Base {i}\n\nBase page {i} explains refunds, shipping and returns.\n\n"
                f"## Details {i}\n\nEvery order ships within {i + 2} business days.\n"
            )

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        (self.folder / f"t{trial}.md").write_text(
            f"# Trial {trial}\n\nNote {trial}: the warehouse counted {trial * 7} parcels.\n\n"
            + "".join(f"Paragraph {p} of note {trial} lists item {p * trial}.\n\n" for p in (1, 2))
        )
        if trial % 2:
            (self.folder / "base0.md").write_text(f"# Base 0\n\nEdited in trial {trial}.\n")
        if trial % 3 == 2:  # drop the oldest trial page
            oldest = min(self.folder.glob("t*.md"), key=lambda p: int(p.stem[1:]))
            oldest.unlink()
        params = {"corpus": "kb", "folder": str(self.folder), "message": f"trial {trial}"}
        if self.embedder:
            params["embedder"] = self.embedder
        return params

    def _found(self, home: Path) -> dict[int, Any]:
        """Each version's documents and a digest of its chunks, read at its pinned LanceDB
        version; the full-text index of the latest answers."""
        from slmops.data.corpus import Corpora
        from slmops.errors import NotFoundError
        from slmops.store import Workspace

        found: dict[int, Any] = {}
        with Workspace.open(home) as workspace:
            corpora = Corpora(workspace)
            try:
                versions = corpora.log("kb")
            except NotFoundError:
                return found
            for version in versions:
                rows = corpora.rows(f"kb@{version.version}", ("chunk_id", "doc_id", "text"))
                assert len(rows) == version.chunks, f"kb@{version.version}: chunk count"
                docs = frozenset(row["doc_id"] for row in rows)
                assert len(docs) == version.documents, f"kb@{version.version}: documents"
                chunks = digest(sorted((row["chunk_id"], row["text"]) for row in rows))
                found[version.version] = (docs, chunks)
            if versions:
                corpora.search("kb", "parcels", k=2, mode="fts")
        return found

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        found = self._found(home)
        docs = frozenset(p.name for p in self.folder.iterdir())
        # The chunk digest of a new version is checked by the rerun: it finds nothing to
        # change only if that version holds exactly the folder's chunks.
        intended = {v: (docs, found[v][1]) for v in found.keys() - self.known.keys()}
        self.new = check_versions(found, self.known, next(iter(intended.values()), None), context)

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        result = finish(self.operation, home, params)
        if self.new is not None:
            assert result["version"] is None, f"{context}: kb@{self.new} is not the folder"
        else:
            assert result["version"] == max(self.known, default=0) + 1, f"{context}: {result}"
        self.known = self._found(home)
        latest = max(self.known)
        assert self.known[latest][0] == frozenset(p.name for p in self.folder.iterdir())


# --- eval runs ---------------------------------------------------------------------------

ECHO = """
[stack]
name = "echo"
[[steps]]
name = "upper"
kind = "function"
call = "echo_steps:upper"
input = "input.text"
"""
ECHO_CODE = """
import asyncio


async def upper(text: str) -> str:
    await asyncio.sleep(0.01)  # like a model call, a case takes a moment
    return text.upper()
"""
EVAL_CASES = 8


class EvalRunScenario:
    """``slmops eval run``, killed; then ``slmops eval run --resume RUN`` (or, if it died
    before recording the run, the same command again)."""

    operation = "eval_cli"

    def __init__(self) -> None:
        self.known: dict[str, int] = {}  # run id -> results (complete runs)

    def setup(self, home: Path) -> None:
        from slmops.eval.datasets import Datasets, EvalCase
        from slmops.store import Workspace

        folder = home / "stacks" / "echo"
        folder.mkdir(parents=True)
        (folder / "slmops.toml").write_text(ECHO)
        (folder / "echo_steps.py").write_text(ECHO_CODE)
        cases = [
            EvalCase(id=f"c{i}", input=f"case number {i}", reference=f"CASE NUMBER {i}")
            for i in range(EVAL_CASES)
        ]
        with Workspace.open(home) as workspace:
            Datasets(workspace).add("qs", cases)

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        return {
            "args": ["run", "echo", "-d", "qs", "--metrics", "exact_match", "--concurrency", "2"]
        }

    def _runs(self, home: Path, context: str) -> dict[str, dict[str, Any]]:
        """Every run, each result checked: its own case's answer, recorded once."""
        from slmops.eval.runner import list_runs, load_results
        from slmops.store import Workspace

        runs = {}
        with Workspace.open(home) as workspace:
            for run in list_runs(workspace, limit=1000):
                results = load_results(workspace, run["id"])
                for row in results:
                    number = row["case_id"].removeprefix("c")
                    assert row["status"] == "ok", f"{context}: {row}"
                    assert row["result"]["answer"] == f"CASE NUMBER {number}", context
                    assert row["scores"] == {"exact_match": 1.0}, context
                if run["status"] == "complete":
                    assert len(results) == EVAL_CASES, f"{context}: complete with {results}"
                    assert run["summary"]["cases"] == EVAL_CASES, context
                runs[run["id"]] = {**run, "results": len(results)}
        return runs

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        runs = self._runs(home, context)
        for run_id, results in self.known.items():
            assert runs[run_id]["status"] == "complete", context
            assert runs[run_id]["results"] == results, context
        self.new = [run_id for run_id in runs if run_id not in self.known]
        assert len(self.new) <= 1, f"{context}: several new runs"
        from slmops.eval.runner import run_state

        for run_id in self.new:  # killed before its end: its process is gone
            if runs[run_id]["status"] != "complete":
                assert run_state(runs[run_id]) == "crashed", f"{context}: {runs[run_id]}"

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        for run_id in self.new:
            result = finish(self.operation, home, {"args": ["run", "--resume", run_id[:12]]})
            assert result["exit_code"] == 0, f"{context}: resume failed: {result['output']}"
        if not self.new:  # it died before recording the run: run the command again
            result = finish(self.operation, home, params)
            assert result["exit_code"] == 0, f"{context}: rerun failed: {result['output']}"
        runs = self._runs(home, context)
        assert all(run["status"] == "complete" for run in runs.values()), context
        self.known = {run_id: run["results"] for run_id, run in runs.items()}


# --- the model registry ------------------------------------------------------------------


def _registry_state(home: Path) -> tuple[Any, list[dict[str, Any]], list[Any]]:
    """(champion's version, the alias' audit log, every version checked against its
    weights' SHA-256)."""
    from slmops.errors import NotFoundError
    from slmops.registry.promotion import alias_events
    from slmops.registry.store import ModelRegistry
    from slmops.store import Workspace

    with Workspace.open(home) as workspace:
        registry = ModelRegistry(workspace)
        try:
            versions = [registry.verified(v) for v in registry.versions("tiny")]
            current = registry.aliases("tiny").get("champion")
        except NotFoundError:
            return None, [], []
        events = [e for e in alias_events(workspace, "tiny") if e["alias"] == "champion"]
    return current, events, versions


class RegisterScenario:
    """``slmops model register``: the weights copied in, then the MLflow version."""

    operation = "register"

    def __init__(self, weights: Path) -> None:
        self.weights = weights
        self.count = 0

    def setup(self, home: Path) -> None:
        pass

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        return {"name": "tiny", "uri": f"gguf:{self.weights}"}

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        _, _, versions = _registry_state(home)  # each version's weights are whole
        assert len(versions) in (self.count, self.count + 1), context
        self.new = len(versions) > self.count
        stored = {Path(v.uri.removeprefix("gguf:")).parent.name for v in versions}
        folder = home / "models" / "registry" / "tiny"
        for copy in folder.iterdir() if folder.exists() else []:
            if copy.name.endswith(".partial"):
                assert copy.name.strip(".").removesuffix(".partial") not in stored, context

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        if not self.new:
            finish(self.operation, home, params)
        _, _, versions = _registry_state(home)
        assert len(versions) == self.count + 1, context
        self.count = len(versions)


class PromotionScenario:
    """``slmops model promote`` of the other version to ``champion``, or ``rollback``."""

    operation = "promote"

    @staticmethod
    def kind(params: dict[str, Any]) -> str:
        return str(params["action"])

    def __init__(self, weights: list[Path]) -> None:
        self.weights = weights
        self.events = 0

    def setup(self, home: Path) -> None:
        finish("registry_setup", home, {"weights": [str(w) for w in self.weights]})

    def params(self, home: Path, trial: int) -> dict[str, Any]:
        current, events, _ = _registry_state(home)
        self.events = len(events)
        standing = [e for e in events if e["action"] == "promote"]
        if current is not None and trial % 3 == 1 and len(standing) > 1:
            return {"action": "rollback"}
        return {"action": "promote", "target": 2 if current == 1 else 1, "reason": f"t{trial}"}

    def check(self, home: Path, params: dict[str, Any], context: str) -> None:
        current, events, _ = _registry_state(home)
        assert len(events) in (self.events, self.events + 1), context
        self.logged = len(events) > self.events
        logged_to = events[-1]["to_version"] if events else None
        # The alias is where its log says, or (the write died between the two) one logged
        # move behind, which the next promotion or rollback finishes first.
        pending = self.logged and current == events[-1]["from_version"] != logged_to
        assert current == logged_to or pending, (
            f"{context}: champion is {current} but its log says {logged_to}: {events[-1:]}"
        )
        self.pending = pending

    def finish(self, home: Path, params: dict[str, Any], context: str) -> None:
        if not self.logged or self.pending or params["action"] == "promote":
            result = finish(self.operation, home, params)
            if params["action"] == "promote" and self.logged and not self.pending:
                assert "already points at" in result.get("refused", ""), f"{context}: {result}"
            else:
                assert "refused" not in result, f"{context}: {result}"
        current, events, _ = _registry_state(home)
        assert len(events) == self.events + 1, f"{context}: {len(events)} events"
        assert events[-1]["action"] == params["action"], context
        assert current == events[-1]["to_version"], f"{context}: champion {current}"
        if params["action"] == "promote":
            assert current == params["target"], context


# --- the tests ---------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "crash-ws")


@pytest.mark.parametrize("operation", ["dataset_add", "train_add"])
def test_versioned_datasets_survive_sigkill(home: Path, operation: str) -> None:
    drive(JsonlScenario(operation), home, crash_trials(4))


def test_prompt_versions_survive_sigkill(home: Path) -> None:
    drive(PromptScenario(), home, crash_trials(4))


def test_corpus_ingest_survives_sigkill(home: Path, tmp_path: Path) -> None:
    drive(IngestScenario(tmp_path / "docs"), home, crash_trials(4))


def test_eval_run_killed_resumes_to_a_complete_run(home: Path) -> None:
    drive(EvalRunScenario(), home, crash_trials(3))


@pytest.fixture(scope="module")
def second_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-two") / "two.gguf", seed=1)


@pytest.fixture
def registry_home(home: Path, mlflow_template: Path) -> Path:
    shutil.copy(mlflow_template, home / "mlflow.db")
    return home


def test_model_registration_survives_sigkill(registry_home: Path, tiny_gguf: Path) -> None:
    drive(RegisterScenario(tiny_gguf), registry_home, crash_trials(3))


def test_promotion_and_rollback_keep_alias_and_log_together(
    registry_home: Path, tiny_gguf: Path, second_tiny: Path
) -> None:
    drive(PromotionScenario([tiny_gguf, second_tiny]), registry_home, crash_trials(4))


def test_a_move_killed_between_its_log_and_its_alias_is_finished_by_the_next(
    registry_home: Path, tiny_gguf: Path, second_tiny: Path
) -> None:
    """Promotion used to move the alias (in MLflow) and then commit its log row: killed
    between the two, the alias had moved with no log row, and rollback refused to run."""
    home = registry_home
    finish("registry_setup", home, {"weights": [str(tiny_gguf), str(second_tiny)]})
    promote_1 = {"action": "promote", "target": 1}
    promote_2 = {"action": "promote", "target": 2}

    def state() -> tuple[Any, list[tuple[Any, Any, str]]]:
        current, events, _ = _registry_state(home)
        return current, [(e["from_version"], e["to_version"], e["action"]) for e in events]

    # killed just after moving the alias: the move is in the log
    assert run_child("promote", home, {**promote_1, "die": "after_alias"}).killed
    assert state() == (1, [(None, 1, "promote")])
    # killed just before: logged, not made; promoting the same version again finishes it
    assert run_child("promote", home, {**promote_2, "die": "before_alias"}).killed
    assert state() == (1, [(None, 1, "promote"), (1, 2, "promote")])
    assert finish("promote", home, promote_2) == {"promoted": True}
    assert state() == (2, [(None, 1, "promote"), (1, 2, "promote")])
    from slmops.registry.store import ModelRegistry
    from slmops.store import Workspace

    with Workspace.open(home) as workspace:  # its card got the promotion's evaluation
        card = ModelRegistry(workspace).get(name="tiny", version=2).card
    assert "tiny@champion" in card
    # a rollback killed before moving the alias: running it again finishes that rollback
    assert run_child("promote", home, {"action": "rollback", "die": "before_alias"}).killed
    assert finish("promote", home, {"action": "rollback"}) == {"moved": [2, 1]}
    assert state() == (1, [(None, 1, "promote"), (1, 2, "promote"), (2, 1, "rollback")])
    # a promotion left half-done is finished before another move of the alias is made
    assert run_child("promote", home, {**promote_2, "die": "before_alias"}).killed
    assert finish("promote", home, {"action": "rollback"}) == {"moved": [2, 1]}
    assert state()[0] == 1 and state()[1][-2:] == [(1, 2, "promote"), (2, 1, "rollback")]


@pytest.mark.model
def test_an_ingest_with_the_real_embedder_killed_while_embedding(
    home: Path, tmp_path: Path
) -> None:
    """One trial on the shipped embedder: killed a random moment into its ingest (after
    the model loaded), then ingested again."""
    from slmops.apps.quickstart import bundled_docs

    docs = tmp_path / "docs"
    shutil.copytree(bundled_docs(), docs)
    scenario = IngestScenario(docs, embedder="local:all-minilm-l6-v2")
    params = {"corpus": "kb", "folder": str(docs), "embedder": scenario.embedder}
    delay = random.Random(seed()).uniform(0.0, 1.5)
    outcome: Outcome = run_child("ingest", home, params, kill_after=delay)
    context = f"real embedder, killed {delay:.3f} s into the ingest (killed={outcome.killed})"
    assert outcome.error is None, outcome.error
    scenario.check(home, params, context)
    scenario.finish(home, params, context)
