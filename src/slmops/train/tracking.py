"""Experiment tracking in MLflow: the store users already know, and the one slmops reads back.

The tracking store defaults to SQLite inside the workspace (``WORKSPACE/mlflow.db``, kept apart
from ``slmops.db``: both use Alembic, and MLflow's own migrations must not meet slmops'), with
artifacts under the workspace's artifact folder. ``tracking_uri`` in ``config.toml`` (or
``$SLMOPS_TRACKING_URI``, else ``$MLFLOW_TRACKING_URI``) points it at a tracking server.
``mlflow ui --backend-store-uri sqlite:///WORKSPACE/mlflow.db`` shows the runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmops.errors import NotFoundError, SlmopsError
from slmops.store.workspace import Workspace

KIND_TAG = "slmops.kind"
_PARAM_LIMIT = 6000  # MLflow truncates longer parameter values


class TrackingError(SlmopsError):
    """The tracking store cannot be reached or refused a write."""


def tracking_uri(workspace: Workspace) -> str:
    configured = workspace.settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return configured or f"sqlite:///{workspace.home / 'mlflow.db'}"


@dataclass(frozen=True)
class TrackedRun:
    """What slmops shows of a tracked run."""

    run_id: str
    name: str
    experiment: str
    status: str
    started_at: float
    finished_at: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str


class Tracker:
    """A thin, typed layer over ``MlflowClient`` bound to one workspace's tracking store."""

    def __init__(self, workspace: Workspace) -> None:
        # Set before MLflow is imported: this machine may be offline, and a training run
        # should not phone anywhere. A user's own setting wins.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise TrackingError(
                "experiment tracking needs the 'train' extra: pip install 'slmops[train]'"
            ) from exc
        # MLflow sets up its loggers at import and announces schema migrations at INFO
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.workspace = workspace
        self.uri = tracking_uri(workspace)
        self._local = self.uri.startswith("sqlite:")
        try:
            if self._local:
                self.client = _create_sqlite_store_once(self.uri, MlflowClient)
            else:
                self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        except Exception as exc:  # MLflow raises its own and SQLAlchemy's errors
            raise TrackingError(f"tracking store {self.uri} cannot be opened: {exc}") from exc

    # --- writing -------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self._local:  # never MLflow's default: ./mlruns below whatever the cwd is
            location = self.workspace.artifacts.uri(f"mlflow/{name}")
            if "://" not in location:  # a local folder
                location = Path(location).resolve().as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags)
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, _text(value)[:_PARAM_LIMIT]) for key, value in params.items()]
        self.client.log_batch(run_id, params=entries)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, _text(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(run_id, metrics=entries)

    def log_dataset(self, run_id: str, name: str, sha256: str, source: Mapping[str, Any]) -> None:
        """Record a dataset version the run trained on (MLflow's dataset inputs)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=sha256[:32],  # MLflow keeps at most 36 characters
            source_type="slmops",
            source=json.dumps(dict(source)),
        )
        tags = [InputTag("mlflow.data.context", "training")]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), folder)
        else:
            self.client.log_artifact(run_id, str(path), folder)

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING (again, on resume), or an end: FINISHED, FAILED, KILLED."""
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status=status)

    # --- reading -------------------------------------------------------------------------

    def runs(self, kind: str, *, limit: int = 50) -> list[TrackedRun]:
        """Runs of one slmops kind (``train``), newest first, across experiments."""
        experiments = {e.experiment_id: e.name for e in self.client.search_experiments()}
        if not experiments:
            return []
        found = self.client.search_runs(
            list(experiments),
            filter_string=f"tags.`{KIND_TAG}` = '{kind}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        return [self._tracked(run, experiments) for run in found]

    def run(self, kind: str, run_id: str) -> TrackedRun:
        """A run by id or a unique prefix (6 or more characters)."""
        if len(run_id) < 6:
            raise NotFoundError(f"run id {run_id!r} is too short; give at least 6 characters")
        matches = [r for r in self.runs(kind, limit=10000) if r.run_id.startswith(run_id)]
        if not matches:
            raise NotFoundError(f"no {kind} run with id {run_id!r} in {self.uri}")
        if len(matches) > 1:
            raise NotFoundError(f"run id prefix {run_id!r} is ambiguous; give more of it")
        return matches[0]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's (step, value) points. A resumed run logs the steps after its last
        checkpoint again (the same values: training is repeatable); the last point of each
        step is kept."""
        points = {m.step: m.value for m in self.client.get_metric_history(run_id, key)}
        return sorted(points.items())

    def artifacts(self, run_id: str, folder: str | None = None) -> list[str]:
        listed: list[str] = []
        for info in self.client.list_artifacts(run_id, folder):
            if info.is_dir:
                listed += self.artifacts(run_id, info.path)
            else:
                listed.append(info.path)
        return listed

    def _tracked(self, run: Any, experiments: Mapping[str, str]) -> TrackedRun:
        info, data = run.info, run.data
        return TrackedRun(
            run_id=info.run_id,
            name=info.run_name or "",
            experiment=experiments.get(info.experiment_id, info.experiment_id),
            status=info.status,
            started_at=info.start_time / 1000,
            finished_at=info.end_time / 1000 if info.end_time else None,
            params=dict(data.params),
            metrics=dict(data.metrics),
            tags=dict(data.tags),
            artifact_uri=info.artifact_uri,
        )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _create_sqlite_store_once(uri: str, client_type: Any) -> Any:
    """Open a SQLite tracking store, creating its schema under a file lock: MLflow migrates a
    new database without one, and processes that open a new store at the same time corrupt
    it."""
    from filelock import FileLock

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        client = client_type(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the store (and its schema) is made here
    return client


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings as MLflow parameters: ``{"lora": {"r": 16}}`` -> ``lora.r``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(f"{name}.", value))
        elif isinstance(value, Sequence) and not isinstance(value, str):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat
