"""The Ray executor: the heavy work of a job spread over a Ray cluster, its results written
through the workspace store.

- **Embedding** (``data ingest --executor ray``): batches of chunk texts go to a pool of
  actors, each loading the embedder once; the driver keeps the ingest's own logic (what to
  embed, the writer lock, the commit), so a corpus version is committed only when every
  vector is back, exactly as a local ingest would.
- **Eval** (``eval run --executor ray``): cases go to actors that each build the stack and
  metrics once and record each case's result in the workspace as it finishes. Recording is
  idempotent (a case already recorded keeps its first record), so a task retried after its
  worker died, or a rerun after the driver died (``--resume``), neither loses nor duplicates
  a case.
- **Pipelines** (``pipeline run --executor ray``): each step runs as a Ray task; the driver
  keeps the run's record.

Workers open the workspace by its folder: every node must see that folder (one machine, a
shared file system), and for a cluster of machines the workspace's settings should name a
shared database and artifact store (Postgres and S3, see Workspace and settings). Actors are
restarted and their calls retried when a worker process or node dies.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slmops.errors import SlmopsError

DEFAULT_ADDRESS_ENV = "SLMOPS_RAY_ADDRESS"
CONNECT_TRIES = 3  # connection attempts (a loaded head sometimes fails to start a client)
RETRIES = 3  # restarts of an actor, and retries of its calls, after a worker dies


class RayExecutorError(SlmopsError):
    """Ray is not installed, the cluster cannot be reached, or a job failed on it."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayExecutorError(
            "the Ray executor needs Ray: pip install 'slmops[ray]' (or use --executor local)"
        ) from None
    return ray


def connect(address: str | None = None) -> Any:
    """Connect to the cluster at ``address`` (``ray://host:10001``, ``host:6379``, or
    ``$SLMOPS_RAY_ADDRESS``; ``local`` starts a private single-machine Ray) once per process;
    returns the ray module."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    target = address or os.environ.get(DEFAULT_ADDRESS_ENV)
    if not target:
        raise RayExecutorError(
            "no Ray cluster given: pass --address ray://HOST:10001 (or set "
            f"${DEFAULT_ADDRESS_ENV}); 'local' starts a private Ray on this machine"
        )
    for attempt in range(CONNECT_TRIES):
        try:
            ray.init(
                address=None if target == "local" else target,
                logging_level="ERROR",
                log_to_driver=False,
                include_dashboard=False if target == "local" else None,
            )
            return ray
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, grpc errors...
            # a busy head can fail to start a client's server process once: try again
            if attempt + 1 == CONNECT_TRIES:
                raise RayExecutorError(f"cannot reach the Ray cluster at {target}: {exc}") from None
            if ray.is_initialized():
                ray.shutdown()
            time.sleep(2.0 * (attempt + 1))
    return ray


def start_actors(ray: Any, actor_class: type, count: int, *args: Any) -> list[Any]:
    """``count`` actors of ``actor_class`` (one CPU each), restarted and their calls retried
    when their worker dies."""
    remote = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(actor_class)
    return [remote.remote(*args) for _ in range(count)]


def workers(ray: Any) -> int:
    """How many CPUs the cluster has: one actor per CPU."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# --- embedding ----------------------------------------------------------------------------


class _Embedder:
    """An actor holding one loaded embedder."""

    def __init__(self, uri: str) -> None:
        from slmops.models.loading import load_embedder

        self.model = load_embedder(uri)

    def embed(self, texts: list[str]) -> Any:
        return self.model.embed(texts)

    def pid(self) -> int:
        return os.getpid()


class RayEmbedding:
    """Embeds batches of texts on a pool of Ray actors (one per CPU, or ``actors``), yielding
    each batch's vectors in order: what ``Corpora.ingest`` takes as ``embed_batches``. Close
    it (or use it in a ``with``) to free the actors' CPUs."""

    def __init__(self, uri: str, *, address: str | None = None, actors: int | None = None):
        self.ray = connect(address)
        from ray.util import ActorPool

        self.actors = start_actors(self.ray, _Embedder, actors or workers(self.ray), uri)
        self.pool = ActorPool(self.actors)

    def __call__(self, batches: list[list[str]]) -> Iterator[Any]:
        try:
            yield from self.pool.map(lambda actor, batch: actor.embed.remote(batch), batches)
        except Exception as exc:  # a batch failed after its retries
            raise RayExecutorError(f"embedding on Ray failed: {exc}") from exc

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def __enter__(self) -> RayEmbedding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --- eval ---------------------------------------------------------------------------------


class _CaseRunner:
    """An actor that builds a stack and its metrics once, then runs and records cases."""

    def __init__(
        self, home: str, stack: str, models: dict[str, str], metrics: list[str] | None
    ) -> None:
        from slmops.apps.build import build_stack
        from slmops.core.runtime import Runtime
        from slmops.eval.runner import EvalRun, build_metrics
        from slmops.store.workspace import Workspace

        self.workspace = Workspace.open(home)
        built = build_stack(stack, self.workspace, models=models or None)
        chosen = build_metrics(metrics, self.workspace.settings.embedder)
        self.runner = EvalRun(self.workspace, built, chosen)
        self.runtime = Runtime.from_workspace(self.workspace)

    def run(self, run_id: str, case: dict[str, Any]) -> str:
        from slmops.core.runtime import use_runtime
        from slmops.eval.datasets import EvalCase

        parsed = EvalCase.model_validate(case)
        if parsed.id in self.runner.done_case_ids(run_id):
            return parsed.id  # finished by an earlier try of this call
        with use_runtime(self.runtime):
            asyncio.run(self.runner.run_one(run_id, parsed))
        return parsed.id

    def pid(self) -> int:
        return os.getpid()


def run_eval_cases(
    *,
    home: str,
    stack: str,
    models: dict[str, str],
    metrics: list[str] | None,
    run_id: str,
    cases: Sequence[Any],
    address: str | None = None,
    actors: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_actors: Callable[[list[Any]], None] | None = None,
) -> None:
    """Run an eval run's cases on a pool of actors; each records its cases as it goes."""
    ray = connect(address)
    from ray.util import ActorPool

    count = min(actors or workers(ray), max(1, len(cases)))
    created = start_actors(ray, _CaseRunner, count, home, stack, models, metrics)
    if on_actors is not None:
        on_actors(created)
    pool = ActorPool(created)
    done = 0
    try:
        for _ in pool.map_unordered(
            lambda actor, case: actor.run.remote(run_id, case.model_dump()), list(cases)
        ):
            done += 1
            if on_progress is not None:
                on_progress(done, len(cases))
    except Exception as exc:
        raise RayExecutorError(
            f"eval run {run_id[:12]} failed on Ray after {done} of {len(cases)} cases "
            f"(they are kept; resume it): {exc}"
        ) from exc
    finally:
        for actor in created:
            ray.kill(actor)


# --- batch inference ----------------------------------------------------------------------


class _BatchRunner:
    """An actor that builds a stack once and answers batch records."""

    def __init__(self, home: str, stack: str) -> None:
        from slmops.apps.build import build_stack
        from slmops.core.runtime import Runtime
        from slmops.store.workspace import Workspace

        self.workspace = Workspace.open(home)
        self.stack = build_stack(stack, self.workspace)
        self.runtime = Runtime.from_workspace(self.workspace)

    def run(self, record_id: str, value: Any) -> dict[str, Any]:
        from slmops.apps.batch import BatchRecord, run_record
        from slmops.core.runtime import use_runtime

        with use_runtime(self.runtime):
            return run_record(self.stack, BatchRecord(record_id, value))


def batch_results(
    *,
    home: str,
    stack: str,
    records: Sequence[Any],
    address: str | None = None,
    actors: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Batch records answered on a pool of actors, yielded as they finish (the caller, the
    one writer, records each; a record whose worker died is retried on another)."""
    ray = connect(address)
    from ray.util import ActorPool

    count = min(actors or workers(ray), len(records))
    created = start_actors(ray, _BatchRunner, count, home, stack)
    try:
        yield from ActorPool(created).map_unordered(
            lambda actor, record: actor.run.remote(record.id, record.input), list(records)
        )
    except Exception as exc:
        raise RayExecutorError(f"batch on Ray failed (finished records are kept): {exc}") from exc
    finally:
        for actor in created:
            ray.kill(actor)


# --- pipeline steps -----------------------------------------------------------------------


def _run_step(
    home: str,
    op_name: str,
    step: str,
    directory: str,
    values: dict[str, Any],
    progress: dict[str, Any],
) -> dict[str, Any]:
    """One pipeline step's work, on a Ray worker."""
    from pathlib import Path

    from slmops.pipelines.ops import StepContext, operation
    from slmops.store.workspace import Workspace

    with Workspace.open(home) as workspace:
        op = operation(step, op_name)
        ctx = StepContext(workspace, Path(directory), step, progress=dict(progress))
        return op.run(ctx, op.parse(step, values))


def step_runner(address: str | None = None) -> Callable[..., dict[str, Any]]:
    """A function running a step's operation as a Ray task and waiting for its outputs."""
    ray = connect(address)
    remote = ray.remote(max_retries=RETRIES)(_run_step)

    def run(
        home: str,
        op_name: str,
        step: str,
        directory: str,
        values: dict[str, Any],
        progress: dict[str, Any],
    ) -> dict[str, Any]:
        try:
            return dict(ray.get(remote.remote(home, op_name, step, directory, values, progress)))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, SlmopsError) else None
            if cause is not None:
                raise cause from None
            raise RayExecutorError(f"step {step!r} failed on Ray: {exc}") from None

    return run
