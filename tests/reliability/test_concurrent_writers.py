"""Concurrent writers: several processes writing one workspace at the same moment.

Each race starts its writers in separate processes and releases them together at a barrier,
once their set-up is done. Every writer must either succeed, with a version of its own that
holds exactly its content (or, having written the same content as the latest version, that
version), or give way with a clear :class:`~slmops.errors.BusyError`: never a raw database
error, a lost update or a version holding another writer's content. Versions stay numbered
1, 2, 3, ... without gaps. Each race runs on SQLite, and on Postgres when
``SLMOPS_TEST_POSTGRES_URL`` is set (in a database of its own, created for the test).

Two ingests into one corpus race in tests/data/test_corpus.py (SQLite); here they race on
Postgres only. ``SLMOPS_RACE_ROUNDS=N`` runs N rounds of each race (default 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from slmops.errors import BusyError
from slmops.eval.datasets import Datasets, EvalCase, cases_from
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from slmops.store.schema import prompts
from slmops.train.datasets import TrainDatasets
from tests.reliability._harness import (
    RaceOutcome,
    fresh_postgres_database,
    make_workspace,
    postgres_url,
    race,
    race_rounds,
)

WRITERS = 4


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL of the race's workspace: None (SQLite in the folder), or a fresh
    Postgres database."""
    if request.param == "sqlite":
        yield None
        return
    if not postgres_url():
        pytest.skip("set SLMOPS_TEST_POSTGRES_URL to race on Postgres")
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def home(tmp_path: Path, backend: str | None) -> Path:
    return make_workspace(tmp_path / "race-ws", backend)


def settled(outcomes: list[RaceOutcome]) -> list[RaceOutcome]:
    """The outcomes, after checking each writer succeeded or gave way as busy."""
    for outcome in outcomes:
        assert outcome.ok or outcome.busy, f"a writer failed: {outcome.error}"
    return outcomes


def check_versions_race(
    outcomes: list[RaceOutcome],
    contents: list[Any],
    found: dict[int, Any],
    before: set[int],
) -> None:
    """Each version added by the race was created by exactly one writer, holds that
    writer's content, and numbers follow on without a gap; a writer told its content is
    already the latest version got a version holding its content."""
    created = sorted(o.result["version"] for o in outcomes if o.ok and o.result["created"])
    new = sorted(set(found) - before)
    assert created == new, f"versions created {created}, versions added {new}"
    assert new == list(range(max(before, default=0) + 1, max(before, default=0) + 1 + len(new)))
    for outcome, content in zip(outcomes, contents, strict=True):
        if outcome.ok:
            assert found[outcome.result["version"]] == content, outcome.result


# --- a fresh workspace -------------------------------------------------------------------


def test_processes_opening_a_new_workspace_at_once_all_migrate_it(home: Path) -> None:
    outcomes = settled(race([("open", {})] * WRITERS, home))
    with Workspace.open(home, migrate=False) as workspace:
        head = workspace.schema_revision()
    assert head and all(o.ok and o.result == head for o in outcomes), outcomes


# --- versions of one name added at once --------------------------------------------------


def _race_adds(
    home: Path,
    operation: str,
    params_of: Callable[[int, int], dict[str, Any]],
    content_of: Callable[[dict[str, Any]], Any],
    found_of: Callable[[Workspace], dict[int, Any]],
) -> None:
    """Rounds of WRITERS writers adding versions of one name: three with content of their
    own and one repeating the first's."""
    for round_ in range(race_rounds(2)):
        with Workspace.open(home) as workspace:
            before = set(found_of(workspace))
        writers = [params_of(round_, i) for i in range(WRITERS - 1)]
        writers.append(writers[0])
        outcomes = settled(race([(operation, p) for p in writers], home))
        with Workspace.open(home) as workspace:
            found = found_of(workspace)
        check_versions_race(outcomes, [content_of(p) for p in writers], found, before)


def test_prompt_adds_of_one_name_at_once(home: Path) -> None:
    def found(workspace: Workspace) -> dict[int, Any]:
        versions = PromptRegistry(workspace).log("race", missing_ok=True)
        for v in versions:  # each row's checksum is of its own text
            assert hashlib.sha256(f"\x00{v.template}".encode()).hexdigest() == v.sha256
        return {v.version: v.template for v in versions}

    _race_adds(
        home,
        "prompt_add",
        lambda r, i: {"name": "race", "template": f"Round {r}, writer {i}: {{{{ question }}}}"},
        lambda params: params["template"],
        found,
    )


def test_eval_dataset_adds_of_one_name_at_once(home: Path) -> None:
    def found(workspace: Workspace) -> dict[int, Any]:
        datasets = Datasets(workspace)
        return {
            v.version: sorted(c.input for c in datasets.cases(v.ref)[1])  # checksum-checked
            for v in datasets.log("race", missing_ok=True)
        }

    _race_adds(
        home,
        "dataset_add",
        lambda r, i: {
            "name": "race",
            "records": [{"input": f"Round {r}, writer {i}, case {n}?"} for n in range(i + 1)],
        },
        lambda params: sorted(r["input"] for r in params["records"]),
        found,
    )


def test_training_dataset_adds_of_one_name_at_once(home: Path) -> None:
    def found(workspace: Workspace) -> dict[int, Any]:
        train = TrainDatasets(workspace)
        if "race" not in train.names():
            return {}
        return {
            v.version: sorted(e.prompt or "" for e in train.examples(v.ref)[1])
            for v in train.log("race")
        }

    _race_adds(
        home,
        "train_add",
        lambda r, i: {
            "name": "race",
            "records": [
                {"prompt": f"Round {r}, writer {i}, example {n}", "completion": "An answer."}
                for n in range(i + 1)
            ],
        },
        lambda params: sorted(r["prompt"] for r in params["records"]),
        found,
    )


def test_prompt_tags_set_at_once_leave_one_tag(home: Path) -> None:
    with Workspace.open(home) as workspace:
        registry = PromptRegistry(workspace)
        for n in range(WRITERS):
            registry.add("tagged", f"Version {n}: {{{{ x }}}}")
    outcomes = settled(
        race([("prompt_tag", {"name": "tagged", "version": n + 1}) for n in range(WRITERS)], home)
    )
    with Workspace.open(home) as workspace:
        tags = PromptRegistry(workspace).tags("tagged")
    assert set(tags) == {"production"} and 1 <= tags["production"] <= WRITERS
    assert any(o.ok for o in outcomes)


def test_model_registrations_of_one_name_at_once(
    tmp_path: Path, mlflow_template: Path, tiny_gguf: Path
) -> None:
    """MLflow numbers the versions (its store retries a taken number): each registration
    gets a version of its own, holding a whole copy of the weights."""
    import shutil

    from slmops.registry.store import ModelRegistry

    home = make_workspace(tmp_path / "registry-ws")
    shutil.copy(mlflow_template, home / "mlflow.db")
    Workspace.open(home).close()
    outcomes = settled(race([("register", {"name": "tiny", "uri": f"gguf:{tiny_gguf}"})] * 3, home))
    with Workspace.open(home) as workspace:
        registry = ModelRegistry(workspace)
        versions = [registry.verified(v) for v in registry.versions("tiny")]
    assert sorted(o.result["version"] for o in outcomes) == [1, 2, 3]
    assert len({v.uri for v in versions}) == 3


# --- a version number taken between reading the latest and inserting (deterministic) -----


def test_an_add_whose_version_number_is_taken_meanwhile_numbers_after_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process commits version 1 while this add is between reading the latest
    version and inserting its own: it becomes version 2 (it was a raw IntegrityError)."""
    with Workspace.open(home) as workspace:
        datasets = Datasets(workspace)
        real_put = workspace.artifacts.put_bytes
        theirs = cases_from([{"input": "Their case?"}])

        def another_commits_first(key: str, data: bytes) -> str:
            monkeypatch.setattr(workspace.artifacts, "put_bytes", real_put)
            Datasets(workspace).add("qa", theirs, message="theirs")
            return real_put(key, data)

        monkeypatch.setattr(workspace.artifacts, "put_bytes", another_commits_first)
        mine, created = datasets.add("qa", [EvalCase(input="My case?")], message="mine")
        assert created and mine.version == 2
        assert [c.input for c in datasets.cases("qa@1")[1]] == ["Their case?"]
        assert [c.input for c in datasets.cases("qa@2")[1]] == ["My case?"]
        # the file this add wrote for version 1 was nobody's: it is gone
        folder = home / "artifacts" / "eval-datasets" / "qa"
        assert len(list(folder.glob("v*.jsonl"))) == 2


def test_an_add_of_the_content_just_committed_by_another_returns_that_version(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Workspace.open(home) as workspace:
        registry = PromptRegistry(workspace)
        real_latest = registry._latest

        def another_adds_the_same(name: str) -> Any:
            monkeypatch.setattr(registry, "_latest", real_latest)
            PromptRegistry(workspace).add("qa", "Answer {{ q }}", message="theirs")
            return None  # as read before theirs committed

        monkeypatch.setattr(registry, "_latest", another_adds_the_same)
        version, created = registry.add("qa", "Answer {{ q }}", message="mine")
        assert (version.version, version.message, created) == (1, "theirs", False)


def test_a_crowd_of_writers_ends_in_a_busy_error_not_a_database_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt loses its number to another writer: after its tries the add gives way
    with BusyError, having committed nothing."""
    with Workspace.open(home) as workspace:
        registry = PromptRegistry(workspace)
        real_latest = registry._latest

        def another_always_first(name: str) -> Any:
            latest = real_latest(name)
            number = (latest.version if latest else 0) + 1
            with workspace.engine.begin() as connection:
                connection.execute(
                    insert(prompts).values(
                        name=name,
                        version=number,
                        template=f"theirs {number}",
                        system=None,
                        message="theirs",
                        sha256=hashlib.sha256(f"\x00theirs {number}".encode()).hexdigest(),
                        variables=[],
                        created_at=0.0,
                    )
                )
            return latest

        monkeypatch.setattr(registry, "_latest", another_always_first)
        monkeypatch.setattr("slmops.store.versioning.time.sleep", lambda _s: None)
        with pytest.raises(BusyError, match="other processes kept adding versions"):
            registry.add("qa", "mine {{ q }}")
        assert all(v.message == "theirs" for v in registry.log("qa"))


def test_an_integrity_error_that_is_no_race_is_not_retried(home: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    from slmops.store.versioning import insert_version

    with Workspace.open(home) as workspace:
        raised = None
        try:  # no template: NOT NULL fails, and no other writer holds version 1
            insert_version(workspace.engine, prompts, {"name": "qa", "version": 1}, lambda: False)
        except IntegrityError as exc:
            raised = type(exc)  # not the exception: its traceback would hold the connection
    assert raised is IntegrityError


# --- corpora ----------------------------------------------------------------------------


def _folder(root: Path, side: str, pages: int = 3) -> Path:
    folder = root / f"folder-{side}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(pages):
        (folder / f"{side}{i}.md").write_text(
            f"# Page {i} of {side}\n\nPage {i} of folder {side} is about {side}{i} parcels.\n"
        )
    return folder


def test_two_ingests_into_one_corpus_on_postgres(
    home: Path, backend: str | None, tmp_path: Path
) -> None:
    if backend is None:
        pytest.skip("on SQLite: tests/data/test_corpus.py races two ingests")
    Workspace.open(home).close()  # migrated first: this races ingests, not migrations
    for round_ in range(race_rounds(2)):
        folders = {side: _folder(tmp_path / f"r{round_}", side) for side in ("a", "b")}
        outcomes = settled(
            race(
                [
                    ("ingest", {"corpus": "cc", "folder": str(f), "message": side})
                    for side, f in folders.items()
                ],
                home,
            )
        )
        from slmops.data.corpus import Corpora

        with Workspace.open(home) as workspace:
            corpora = Corpora(workspace)
            log = {v.version: v for v in corpora.log("cc")}
            for (side, folder), outcome in zip(folders.items(), outcomes, strict=True):
                if not outcome.ok:
                    continue
                version = outcome.result["version"]
                assert log[version].message == side
                held = {r["doc_id"] for r in corpora.rows(f"cc@{version}", ("doc_id",))}
                assert held == {p.name for p in folder.iterdir()}, (side, version)
        assert sorted(log) == list(range(1, len(log) + 1))


LOOKUP = """
[stack]
name = "lookup"
[corpora]
docs = "cc@latest"
[[steps]]
name = "pause"
kind = "function"
call = "lookup_steps:pause"
input = "input.text"
[[steps]]
name = "retrieve"
kind = "retrieve"
corpus = "docs"
mode = "fts"
k = 2
input = "pause"
"""
LOOKUP_CODE = """
import time
from pathlib import Path


def pause(text: str) -> str:
    # The first case lets the ingest start, then every case waits until it has committed:
    # each search runs with the corpus' next version there to be (wrongly) read.
    Path({started!r}).touch()
    deadline = time.monotonic() + 60
    while not Path({ingested!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return text
"""


def test_an_ingest_during_an_eval_run_changes_nothing_the_run_reads(
    home: Path, tmp_path: Path
) -> None:
    """An eval run searches the corpus version its stack was built on in every case, though
    an ingest commits the next version (holding exactly its own documents) mid-run."""
    from slmops.data.corpus import Corpora
    from slmops.eval.runner import list_runs, load_results
    from slmops.store.traces import get_trace
    from tests.reliability._harness import finish

    first = _folder(tmp_path, "first")
    finish("ingest", home, {"corpus": "cc", "folder": str(first)})
    stack = home / "stacks" / "lookup"
    stack.mkdir(parents=True)
    started, ingested = tmp_path / "run-started", tmp_path / "ingested"
    (stack / "slmops.toml").write_text(LOOKUP)
    (stack / "lookup_steps.py").write_text(
        LOOKUP_CODE.format(started=str(started), ingested=str(ingested))
    )
    with Workspace.open(home) as workspace:
        Datasets(workspace).add(
            "qs", [EvalCase(id=f"q{i}", input=f"first{i % 3} parcels") for i in range(6)]
        )
    second = _folder(tmp_path, "second", pages=4)
    ingest_params = {
        "corpus": "cc",
        "folder": str(second),
        "after_file": str(started),
        "done_file": str(ingested),
    }
    run, ingest = settled(
        race(
            [
                ("eval_cli", {"args": ["run", "lookup", "-d", "qs", "--metrics", "exact_match"]}),
                ("ingest", ingest_params),
            ],
            home,
        )
    )
    assert run.ok and run.result["exit_code"] == 0, run.result
    assert ingest.ok and ingest.result["version"] == 2
    with Workspace.open(home) as workspace:
        [record] = list_runs(workspace)
        assert record["status"] == "complete"
        assert record["versions"]["corpora"] == {"docs": "cc@1"}
        results = load_results(workspace, record["id"])
        assert len(results) == 6
        for row in results:
            _, spans = get_trace(workspace.engine, row["trace_id"])
            [retrieval] = [s for s in spans if s["kind"] == "retrieval"]
            assert retrieval["attributes"]["slmops.retrieval.version"] == 1
            assert row["result"]["retrieved_docs"]
            assert all(doc.startswith("first") for doc in row["result"]["retrieved_docs"])
        held = {r["doc_id"] for r in Corpora(workspace).rows("cc@2", ("doc_id",))}
        assert held == {p.name for p in second.iterdir()}


def test_two_resumes_of_one_eval_run_record_each_case_once(home: Path) -> None:
    """A run resumed twice at once (say, from two terminals) ends complete, each case's
    result recorded once: the second resume either joins (both read the run as stopped
    before either took it) or is refused because the first one's process runs it now."""
    from slmops.eval.runner import list_runs, load_results
    from tests.reliability._harness import finish
    from tests.reliability.test_crash_consistency import ECHO, ECHO_CODE, EVAL_CASES

    stack = home / "stacks" / "echo"
    stack.mkdir(parents=True)
    (stack / "slmops.toml").write_text(ECHO)
    (stack / "echo_steps.py").write_text(ECHO_CODE)
    with Workspace.open(home) as workspace:
        Datasets(workspace).add(
            "qs",
            [EvalCase(id=f"c{i}", input=f"case number {i}") for i in range(EVAL_CASES)],
        )
    started = finish("eval_start", home, {"stack": "echo", "dataset": "qs"})
    resume = {"args": ["run", "--resume", started["run_id"]]}
    outcomes = settled(race([("eval_cli", resume), ("eval_cli", resume)], home))
    assert all(o.result["exit_code"] == 0 for o in outcomes if o.ok), outcomes
    assert any(o.ok for o in outcomes), outcomes  # (a refused one gave way as busy)
    with Workspace.open(home) as workspace:
        [record] = list_runs(workspace)
        results = load_results(workspace, record["id"])
    assert record["status"] == "complete"
    assert sorted(r["case_id"] for r in results) == [f"c{i}" for i in range(EVAL_CASES)]
