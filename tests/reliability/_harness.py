"""Machinery of the reliability tests: writers run in child processes that are killed with
SIGKILL at a chosen line of slmops code (or after a chosen delay), or released together at
a barrier to write one workspace at once.

Children are forked from a fork server that imported slmops (LanceDB and MLflow too) once,
so a trial starts in milliseconds instead of re-importing for seconds; they embed with
:class:`HashEmbedder` instead of loading the real embedder: what is tested is how writes
survive a crash or a race, not what the vectors mean.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import slmops
import slmops.cli.evaluate
import slmops.data.corpus
import slmops.eval.runner
import slmops.prompts.registry
import slmops.registry.promotion
import slmops.registry.registration
import slmops.train.datasets
from slmops.errors import SlmopsError
from slmops.store import Workspace

# Imported here, so the fork server holds them and no child spends seconds importing them.
# LanceDB resets its background runtime in a forked child (it warns that this is new).
warnings.filterwarnings("ignore", message="lancedb fork support")
_PRELOADED = [
    importlib.import_module(name)
    for name in (
        "lancedb",
        "lancedb.index",
        "mlflow",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "rouge_score.rouge_scorer",  # the rouge_l metric: nltk and scipy, seconds to import
    )
]

HASH_EMBEDDER = "test:hash32"
"""The embedder URI the corpora of these tests record; :func:`install_hash_embedder` makes
it loadable (by seeding the loader's cache)."""

_SLMOPS_SOURCE = str(Path(slmops.__file__).parent)


# --- settings ----------------------------------------------------------------------------


def crash_trials(default: int) -> int:
    """Kill trials per operation: ``$SLMOPS_CRASH_TRIALS`` (the long mode) or ``default``."""
    return int(os.environ.get("SLMOPS_CRASH_TRIALS") or default)


def race_rounds(default: int) -> int:
    """Rounds of each concurrent-writers race: ``$SLMOPS_RACE_ROUNDS`` or ``default``."""
    return int(os.environ.get("SLMOPS_RACE_ROUNDS") or default)


def seed() -> int:
    """The seed of every random choice (kill points, delays): ``$SLMOPS_CRASH_SEED`` or 17.
    Failure messages print it, so a failing trial can be replayed."""
    return int(os.environ.get("SLMOPS_CRASH_SEED") or 17)


def postgres_url() -> str | None:
    return os.environ.get("SLMOPS_TEST_POSTGRES_URL") or None


# --- a fast embedder ---------------------------------------------------------------------


class HashEmbedder:
    """Words hashed into 32 buckets, L2-normalised: deterministic and instant."""

    uri = HASH_EMBEDDER
    dimension = 32
    max_tokens = 256

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                bucket = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16) % self.dimension
                vectors[row, bucket] += 1.0
            norm = float(np.linalg.norm(vectors[row]))
            if norm:
                vectors[row] /= norm
        return vectors

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def install_hash_embedder() -> None:
    """Make :data:`HASH_EMBEDDER` loadable in this process."""
    from slmops.models import loading

    with loading._loading_lock:
        loading._loaded[f"embed|{HASH_EMBEDDER}"] = HashEmbedder()


# --- workspaces --------------------------------------------------------------------------


def make_workspace(home: Path, database_url: str | None = None) -> Path:
    """A workspace folder embedding with :class:`HashEmbedder` (ingests and metrics); its
    config.toml names ``database_url`` too when given, so every process that opens the
    folder (the children too) uses that database."""
    home.mkdir(parents=True, exist_ok=True)
    config = f'embedder = "{HASH_EMBEDDER}"\n'
    if database_url:
        config += f'database_url = "{database_url}"\n'
    (home / "config.toml").write_text(config)
    return home


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the Postgres test server, dropped afterwards: the
    test sees a first migration and shares no table with any other test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    url = postgres_url()
    assert url, "set SLMOPS_TEST_POSTGRES_URL"
    base = make_url(url)
    name = f"slmops_rel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            # Not WITH (FORCE): that needs the right to end other sessions. A connection a
            # test still holds (in a traceback, say) is closed once collected.
            for attempt in range(10):
                gc.collect()
                try:
                    with admin.connect() as connection:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                    break
                except OperationalError:
                    if attempt == 9:
                        raise
                    time.sleep(0.5)
    finally:
        admin.dispose()


# --- operations (run in the children) ----------------------------------------------------

Ready = Callable[[], None]
Operation = Callable[[Path, dict[str, Any], Ready], Any]


def op_open(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    ready()
    with Workspace.open(home) as workspace:
        return workspace.schema_revision()


def op_ingest(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.models.loading import load_embedder

    embedder = params.get("embedder", HASH_EMBEDDER)
    load_embedder(embedder)  # loading the real one takes seconds: set-up, not the write
    with Workspace.open(home) as workspace:
        corpora = slmops.data.corpus.Corpora(workspace)
        ready()
        if "after_file" in params:  # start once another process says so
            deadline = time.monotonic() + 60
            while not Path(params["after_file"]).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        report = corpora.ingest(
            params["corpus"],
            [params["folder"]],
            embedder=embedder,
            message=params.get("message", ""),
            allow_removals=True,
            wait=params.get("wait", 60.0),
        )
    if "done_file" in params:
        Path(params["done_file"]).touch()
    return {"version": report.version}


def op_dataset_add(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.eval.datasets import Datasets, cases_from

    with Workspace.open(home) as workspace:
        cases = cases_from(params["records"])
        ready()
        version, created = Datasets(workspace).add(
            params["name"], cases, message=params.get("message", "")
        )
        return {"version": version.version, "created": created, "sha256": version.sha256}


def op_train_add(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.train.datasets import TrainDatasets, TrainExample

    with Workspace.open(home) as workspace:
        examples = [TrainExample.model_validate(r) for r in params["records"]]
        ready()
        version, created = TrainDatasets(workspace).add(
            params["name"], examples, message=params.get("message", "")
        )
        return {"version": version.version, "created": created, "sha256": version.sha256}


def op_prompt_add(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.prompts.registry import PromptRegistry

    with Workspace.open(home) as workspace:
        ready()
        version, created = PromptRegistry(workspace).add(
            params["name"],
            params["template"],
            system=params.get("system"),
            message=params.get("message", ""),
        )
        return {"version": version.version, "created": created, "sha256": version.sha256}


def op_prompt_tag(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.prompts.registry import PromptRegistry

    with Workspace.open(home) as workspace:
        ready()
        PromptRegistry(workspace).tag(params["name"], params["version"], "production")


def op_eval_start(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    """A recorded eval run with no case run yet (what a run killed at once leaves)."""
    from slmops.apps.build import build_stack
    from slmops.eval.metrics import ExactMatch
    from slmops.eval.runner import EvalRun

    ready()
    with Workspace.open(home) as workspace:
        stack = build_stack(params["stack"], workspace)
        run_id = EvalRun(workspace, stack, [ExactMatch()]).start(params["dataset"], 1)
        return {"run_id": run_id}


def op_eval_cli(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    """``slmops eval ARGS --workspace HOME`` in this process; its exit code and output."""
    from typer.testing import CliRunner

    ready()
    result = CliRunner().invoke(
        slmops.cli.evaluate.app, [*params["args"], "--workspace", str(home)], catch_exceptions=False
    )
    return {"exit_code": result.exit_code, "output": result.output}


def _registry(workspace: Workspace) -> Any:
    from slmops.registry.store import ModelRegistry

    return ModelRegistry(workspace)


def op_register(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    from slmops.registry.registration import register_uri

    with Workspace.open(home) as workspace:
        registry = _registry(workspace)
        ready()
        version = register_uri(registry, name=params["name"], uri=params["uri"])
        return {"version": version.version}


CHATTY = """
[stack]
name = "chatty"
[models]
chat = "registry:tiny@champion"
[[steps]]
name = "reply"
kind = "function"
call = "chatty_steps:reply"
input = "input.text"
"""


def op_registry_setup(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    """Two versions of ``tiny``, a stack naming ``registry:tiny@champion`` (its one step a
    function: promotion is under test, not generation), a dataset, and a complete eval run
    of each version (so the promotions reuse them)."""
    from slmops.eval.datasets import Datasets, EvalCase
    from slmops.registry.promotion import evaluation
    from slmops.registry.registration import register_uri

    ready()
    folder = home / "stacks" / "chatty"
    folder.mkdir(parents=True)
    (folder / "slmops.toml").write_text(CHATTY)
    (folder / "chatty_steps.py").write_text("def reply(text: str) -> str:\n    return 'hello'\n")
    with Workspace.open(home) as workspace:
        registry = _registry(workspace)
        versions = [
            register_uri(registry, name="tiny", uri=f"gguf:{path}") for path in params["weights"]
        ]
        Datasets(workspace).add(
            "greetings",
            [
                EvalCase(id="a", input="Say hello.", reference="hello"),
                EvalCase(id="b", input="Name a colour.", reference="red"),
            ],
        )
        for version in versions:
            evaluation(
                workspace, stack="chatty", dataset="greetings", model_alias="chat", version=version
            )
        return {"versions": [v.version for v in versions]}


def op_promote(home: Path, params: dict[str, Any], ready: Ready) -> Any:
    """``promote`` or ``rollback`` of tiny@champion (as ``params["action"]`` says)."""
    from slmops.registry.promotion import PromotionError, promote, rollback

    with Workspace.open(home) as workspace:
        registry = _registry(workspace)
        if params.get("die") in ("before_alias", "after_alias"):
            # SIGKILL as the alias is moved: just before, or just after (a regression test)
            real_set_alias = registry.set_alias

            def set_alias_and_die(**kwargs: Any) -> None:
                if params["die"] == "after_alias":
                    real_set_alias(**kwargs)
                os.kill(os.getpid(), signal.SIGKILL)

            registry.set_alias = set_alias_and_die
        ready()
        try:
            if params["action"] == "rollback":
                was, now = rollback(workspace, registry, name="tiny", alias="champion")
                return {"moved": [was, now]}
            result = promote(
                workspace,
                registry,
                ref=f"tiny@{params['target']}",
                alias="champion",
                stack="chatty",
                dataset="greetings",
                gates=["error_rate<=1"],
                reason=params.get("reason", ""),
            )
            return {"promoted": result.promoted}
        except PromotionError as exc:
            return {"refused": str(exc)}


OPERATIONS: dict[str, Operation] = {
    "open": op_open,
    "ingest": op_ingest,
    "dataset_add": op_dataset_add,
    "train_add": op_train_add,
    "prompt_add": op_prompt_add,
    "prompt_tag": op_prompt_tag,
    "eval_start": op_eval_start,
    "eval_cli": op_eval_cli,
    "register": op_register,
    "registry_setup": op_registry_setup,
    "promote": op_promote,
}


# --- killing a child at a line of slmops code --------------------------------------------


class _KillPoints:
    """Counts the lines of slmops code this process runs (in every thread), and the
    *boundaries*: the places (file and line) in slmops code reached first just after a call
    into library code (SQLAlchemy, LanceDB, MLflow, fsspec) returned, i.e. where a write has
    landed and the next has not. Boundaries are counted once per place, so a loop over rows
    does not crowd out the rest. Kills the process with SIGKILL at line ``line`` or on first
    reaching boundary ``boundary``."""

    def __init__(self, line: int | None, boundary: int | None) -> None:
        self.kill_line = line
        self.kill_boundary = boundary
        self.lines = 0
        self.places: set[tuple[str, int]] = set()
        self._outside = False

    @property
    def boundaries(self) -> int:
        return len(self.places)

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.lines += 1
            if self._outside:
                self._outside = False
                place = (frame.f_code.co_filename, frame.f_lineno)
                if place not in self.places:
                    self.places.add(place)
                    if len(self.places) == self.kill_boundary:
                        os.kill(os.getpid(), signal.SIGKILL)
            if self.lines == self.kill_line:
                os.kill(os.getpid(), signal.SIGKILL)
        return self._local

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(_SLMOPS_SOURCE):
            return self._local
        self._outside = True
        return None

    def install(self) -> None:
        threading.settrace(self._global)
        sys.settrace(self._global)

    def remove(self) -> None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]


def _child(
    operation: str,
    home: str,
    params: dict[str, Any],
    kill_at: tuple[int | None, int | None],
    pipe: Connection,
) -> None:
    install_hash_embedder()
    points = _KillPoints(*kill_at)

    def ready() -> None:
        # The timer of a delayed kill starts here, and the counts: what comes before
        # (opening the workspace, loading inputs) is set-up, not the write under test.
        pipe.send(("ready",))
        points.install()

    try:
        result = OPERATIONS[operation](Path(home), params, ready)
    except BaseException as exc:
        points.remove()
        pipe.send(("error", _describe(exc)))
    else:
        points.remove()
        pipe.send(("done", (points.lines, points.boundaries), result))
    pipe.close()


def _describe(exc: BaseException) -> str:
    kind = "slmops" if isinstance(exc, SlmopsError) else "raw"
    return f"{kind} {type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def fork_context() -> Any:
    """The fork-server context, its server preloading this module (and so slmops)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


@dataclass
class Outcome:
    killed: bool
    lines: int  # slmops lines the operation ran (0 unless it finished)
    boundaries: int  # of which, first lines after a library call returned
    result: Any
    error: str | None  # "slmops Type: message" or "raw Type: message" and the traceback
    seconds: float  # from ready() to the end


def run_child(
    operation: str,
    home: Path,
    params: dict[str, Any],
    *,
    kill_at_line: int | None = None,
    kill_at_boundary: int | None = None,
    kill_after: float | None = None,
    timeout: float = 180.0,
) -> Outcome:
    """Run ``operation`` in a child: to its end, or until it reaches slmops line
    ``kill_at_line`` or boundary ``kill_at_boundary`` (it kills itself there), or until
    ``kill_after`` seconds after it is ready (the parent kills it)."""
    context = fork_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(operation, str(home), params, (kill_at_line, kill_at_boundary), sender),
        daemon=True,
    )
    process.start()
    sender.close()
    messages: list[Any] = []
    started = time.monotonic()
    try:
        with contextlib.suppress(EOFError):
            if receiver.poll(timeout):
                messages.append(receiver.recv())
        started = time.monotonic()
        if kill_after is not None and not receiver.poll(kill_after):
            process.kill()
        deadline = time.monotonic() + timeout
        while process.is_alive() or receiver.poll():
            try:
                if receiver.poll(max(0.0, min(1.0, deadline - time.monotonic()))):
                    messages.append(receiver.recv())
            except EOFError:
                break
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{operation} did not end within {timeout} s")
        process.join(timeout)
    finally:
        if process.is_alive():
            process.kill()
            process.join(10)
        receiver.close()
    seconds = time.monotonic() - started
    killed = process.exitcode == -signal.SIGKILL
    done = [m for m in messages if m[0] == "done"]
    errors = [m for m in messages if m[0] == "error"]
    if not killed and process.exitcode != 0:
        raise AssertionError(f"{operation} exited with {process.exitcode}: {messages}")
    lines, boundaries = done[0][1] if done else (0, 0)
    return Outcome(
        killed=killed,
        lines=lines,
        boundaries=boundaries,
        result=done[0][2] if done else None,
        error=errors[0][1] if errors else None,
        seconds=seconds,
    )


def finish(operation: str, home: Path, params: dict[str, Any]) -> Any:
    """Run ``operation`` to its end in a child; its result (an error fails the test)."""
    outcome = run_child(operation, home, params)
    assert outcome.error is None, f"{operation} failed: {outcome.error}"
    return outcome.result


# --- writers released together -----------------------------------------------------------


def _racer(
    operation: str,
    home: str,
    params: dict[str, Any],
    index: int,
    barrier: Any,
    results: Any,
) -> None:
    install_hash_embedder()
    try:
        result = OPERATIONS[operation](Path(home), params, lambda: barrier.wait(timeout=120))
    except BaseException as exc:
        results.put((index, "error", _describe(exc)))
    else:
        results.put((index, "ok", result))


@dataclass
class RaceOutcome:
    ok: bool
    result: Any
    error: str | None

    @property
    def busy(self) -> bool:
        """Refused as busy with a clear slmops error (the allowed way to lose a race)."""
        return bool(self.error and self.error.startswith("slmops") and "Busy" in self.error)


def race(
    writers: Sequence[tuple[str, dict[str, Any]]], home: Path, *, timeout: float = 180.0
) -> list[RaceOutcome]:
    """Run each ``(operation, params)`` in its own process, all released at one barrier
    after their set-up; their outcomes, in order."""
    context = fork_context()
    barrier, results = context.Barrier(len(writers)), context.Queue()
    processes = [
        context.Process(
            target=_racer, args=(op, str(home), params, index, barrier, results), daemon=True
        )
        for index, (op, params) in enumerate(writers)
    ]
    outcomes: dict[int, RaceOutcome] = {}
    try:
        for process in processes:
            process.start()
        for _ in processes:
            try:
                index, status, payload = results.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"a writer did not finish within {timeout} s") from None
            ok = status == "ok"
            outcomes[index] = RaceOutcome(ok, payload if ok else None, None if ok else payload)
        for process in processes:
            process.join(30)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(10)
    return [outcomes[i] for i in range(len(writers))]
