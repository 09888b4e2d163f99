"""``/models`` (registered models), ``/models/{name}`` (versions, aliases and the audit log of
their moves), ``/models/{name}/{version}`` (one version: lineage and its model card),
``/train`` (training runs) and ``/train/{run}`` (one run, with its loss curve).

Everything is read the way ``slmops model`` and ``slmops train`` read it: the registry and the
runs are in the workspace's MLflow tracking store. Without MLflow (the ``train`` extra) the
pages say so; a workspace whose local store does not exist yet shows empty lists (the store
is not created just to be looked at).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from slmops.errors import NotFoundError, SlmopsError
from slmops.registry.promotion import alias_events
from slmops.registry.store import ModelRegistry, ModelVersion
from slmops.store.workspace import Workspace
from slmops.train.runs import RUN_FILE, Training, read_run_file, run_dir, state_of
from slmops.train.tracking import TrackedRun, Tracker, TrackingError, tracking_uri
from slmops.ui.auth import RefusedError
from slmops.ui.charts import LineChart, line_chart

if TYPE_CHECKING:
    from slmops.ui.app import Console

MAX_RUNS = 200
MAX_CHART_POINTS = 240
LINEAGE_TAGS = (
    ("slmops.train_run", "training run"),
    ("slmops.base", "base model"),
    ("slmops.base_digest", "base digest"),
    ("slmops.dataset", "training data"),
    ("slmops.prompt", "prompt"),
    ("slmops.corpora", "corpora"),
    ("slmops.export", "export"),
    ("slmops.registered_from", "registered from"),
)


class StoreMissingError(Exception):
    """The workspace's local tracking store has not been created yet: nothing tracked."""


class TrackingStore:
    """The workspace's MLflow client, opened once on first use and shared by the pages."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._tracker: Tracker | None = None
        self._lock = threading.Lock()

    def tracker(self) -> Tracker:
        """Raises :class:`TrackingError` without MLflow (or when the store cannot be opened)
        and :class:`StoreMissingError` when the local store does not exist yet."""
        with self._lock:
            if self._tracker is None:
                uri = tracking_uri(self.workspace)
                if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
                    raise StoreMissingError()
                self._tracker = Tracker(self.workspace)
            return self._tracker

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.workspace, self.tracker())

    def training(self) -> Training:
        return Training(self.workspace, self.tracker())


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    """A model card as HTML: CommonMark and tables, raw HTML in it escaped (shown as text),
    and links only to safe schemes (markdown-it refuses ``javascript:`` and the like). The
    one piece of HTML a template marks safe (``card_html | safe``)."""
    return str(_MARKDOWN.render(text))


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def lineage_of(version: ModelVersion) -> list[tuple[str, str, Any]]:
    """(tag, label, value) for each lineage tag the version has (JSON values parsed)."""
    found = []
    for tag, label in LINEAGE_TAGS:
        value = version.tags.get(tag)
        if value not in (None, "", "{}"):
            found.append((tag, label, _json_value(value) if tag == "slmops.corpora" else value))
    return found


def evaluations_of(version: ModelVersion) -> dict[str, str]:
    """Eval run id (its first 12 characters) -> dataset, as promotions tag the version."""
    return {
        key.removeprefix("slmops.eval."): value
        for key, value in sorted(version.tags.items())
        if key.startswith("slmops.eval.")
    }


def untracked_aliases(aliases: dict[str, int], events: list[dict[str, Any]]) -> list[str]:
    """Aliases whose target no logged move explains (set with MLflow's own tools)."""
    return [
        alias
        for alias, target in sorted(aliases.items())
        if not any(e["alias"] == alias and e["to_version"] == target for e in events)
    ]


def event_runs(event: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, eval run id) of an audit-log entry's evidence: the candidate's run, then the
    runs of each alias it was compared with."""
    evidence = event.get("evidence") or {}
    runs = []
    if evidence.get("candidate_run"):
        runs.append(("candidate", str(evidence["candidate_run"])))
    for alias, run in (evidence.get("holder_runs") or {}).items():
        runs.append((f"vs {alias}", str(run)))
    return runs


@dataclass
class RunRow:
    run: TrackedRun
    state: str
    steps: int
    final_loss: float | None
    heldout_loss: float | None
    tokens_per_s: float | None
    last_eval: str


def run_row(training: Training, run: TrackedRun) -> RunRow:
    history = training.tracker.history(run.run_id, "train_loss")
    metrics = run.metrics
    return RunRow(
        run=run,
        state=state_of(run),
        steps=history[-1][0] if history else 0,
        final_loss=metrics.get("final_train_loss", metrics.get("train_loss")),
        heldout_loss=metrics.get("best_heldout_loss", metrics.get("heldout_loss")),
        tokens_per_s=metrics.get("train_tokens_per_s"),
        last_eval=run.tags.get("slmops.eval.last", ""),
    )


def loss_chart(
    run_id: str, train: list[tuple[int, float]], heldout: list[tuple[int, float]]
) -> LineChart:
    """Training loss per step and held-out loss at each epoch's end, over the steps (thinned
    to at most :data:`MAX_CHART_POINTS` training points; every held-out point is kept)."""
    kept_train = train
    if len(train) > MAX_CHART_POINTS:
        stride = -(-len(train) // MAX_CHART_POINTS)
        kept_train = train[::stride]
        if kept_train[-1] != train[-1]:
            kept_train.append(train[-1])
    train_at, heldout_at = dict(kept_train), dict(heldout)
    steps = sorted({*train_at, *heldout_at})
    return line_chart(
        f"Loss of run {run_id[:12]}",
        [f"step {step}" for step in steps],
        {
            "training loss": [train_at.get(step) for step in steps],
            "held-out loss": [heldout_at.get(step) for step in steps],
        },
        fmt=lambda value: f"{value:.3f}",
    )


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    store = TrackingStore(console.workspace)

    def unavailable(request: Request, template: str, title: str, exc: Exception) -> HTMLResponse:
        """The index pages without MLflow (a note) or without a store yet (empty)."""
        note = str(exc) if isinstance(exc, TrackingError) else ""
        return console.render(
            request, template, title=title, note=note, models=[], rows=[], store=""
        )

    def store_uri() -> str:
        return store.tracker().uri

    def detail_store() -> TrackingStore:
        """For pages of one model or run: no store means no such model or run."""
        try:
            store.tracker()
        except StoreMissingError:
            raise NotFoundError("nothing is tracked in this workspace yet") from None
        except TrackingError as exc:  # no MLflow, or a store that cannot be opened
            raise RefusedError(503, str(exc)) from None
        return store

    @routes.get("/models", response_class=HTMLResponse)
    def model_list(request: Request) -> HTMLResponse:
        try:
            registry = store.registry()
        except (TrackingError, StoreMissingError) as exc:
            return unavailable(request, "models.html", "Models", exc)
        models = []
        for name in registry.names():
            versions = registry.versions(name)
            models.append(
                {
                    "name": name,
                    "versions": versions,
                    "latest": versions[0] if versions else None,
                    "aliases": registry.aliases(name),
                }
            )
        return console.render(
            request, "models.html", title="Models", note="", models=models, store=store_uri()
        )

    @routes.get("/models/{name}", response_class=HTMLResponse)
    def model_page(request: Request, name: str) -> HTMLResponse:
        registry = detail_store().registry()
        aliases = registry.aliases(name)  # NotFoundError (404) for an unknown name
        versions = registry.versions(name)
        events = alias_events(console.workspace, name)
        return console.render(
            request,
            "model.html",
            title=f"Model · {name}",
            name=name,
            aliases=aliases,
            versions=versions,
            events=list(reversed(events)),  # newest first
            event_runs=event_runs,
            untracked=untracked_aliases(aliases, events),
        )

    @routes.get("/models/{name}/{selector}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, selector: str) -> HTMLResponse:
        registry = detail_store().registry()
        registry.aliases(name)  # an unknown model is named as such
        version = registry.resolve(f"{name}@{selector}")
        other_tags = {
            key: value
            for key, value in sorted(version.tags.items())
            if key not in dict(LINEAGE_TAGS) and not key.startswith("slmops.eval.")
        }
        return console.render(
            request,
            "model_version.html",
            title=f"Model · {version.ref}",
            version=version,
            lineage=lineage_of(version),
            evaluations=evaluations_of(version),
            other_tags=other_tags,
            card_html=render_markdown(version.card) if version.card.strip() else None,
        )

    @routes.get("/train", response_class=HTMLResponse)
    def run_list(request: Request, limit: int = 50) -> HTMLResponse:
        try:
            training = store.training()
        except (TrackingError, StoreMissingError) as exc:
            return unavailable(request, "model_runs.html", "Training runs", exc)
        runs = training.runs(max(1, min(limit, MAX_RUNS)))
        return console.render(
            request,
            "model_runs.html",
            title="Training runs",
            note="",
            rows=[run_row(training, run) for run in runs],
            store=store_uri(),
        )

    @routes.get("/train/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        tracking = detail_store()
        training = tracking.training()
        run = training.run(run_id)  # NotFoundError (404) for an unknown id
        tracker = training.tracker
        train = tracker.history(run.run_id, "train_loss")
        heldout = tracker.history(run.run_id, "heldout_loss")
        folder = run_dir(console.workspace, run.run_id)
        spec: dict[str, Any] = {}
        spec_error = ""
        if (folder / RUN_FILE).is_file():
            try:
                spec = read_run_file(console.workspace, run.run_id)
            except SlmopsError as exc:
                spec_error = str(exc)
        try:
            artifacts = tracker.artifacts(run.run_id)
            artifacts_error = ""
        except Exception as exc:  # MLflow raises its own errors for a missing artifact store
            artifacts, artifacts_error = [], str(exc)
        registry = tracking.registry()
        registered = [
            version
            for name in registry.names()
            for version in registry.versions(name)
            if version.run_id == run.run_id
        ]
        return console.render(
            request,
            "model_run.html",
            title=f"Training run · {run.run_id[:12]}",
            run=run,
            state=state_of(run),
            params=sorted(run.params.items()),
            figures=sorted(run.metrics.items()),
            chart=loss_chart(run.run_id, train, heldout) if train or heldout else None,
            heldout=heldout,
            steps=train[-1][0] if train else 0,
            checkpoints=sorted(p.name for p in (folder / "checkpoints").glob("step-*")),
            folder=str(folder),
            artifacts=artifacts,
            artifacts_error=artifacts_error,
            spec=spec,
            spec_error=spec_error,
            registered=registered,
        )

    return routes
