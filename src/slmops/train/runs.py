"""Training runs: set up, fit, record. Every run is tracked in MLflow and keeps a folder in the
workspace (``training/RUN_ID``) that describes itself (``run.json``: base, data version,
arguments), so resuming or exporting it needs nothing passed by hand."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import slmops
from slmops.errors import ConfigError, NotFoundError, SlmopsError
from slmops.models.uri import parse_model_uri
from slmops.store.names import name_problem
from slmops.store.owners import pid_alive
from slmops.store.workspace import Workspace
from slmops.train.args import TrainArgs, check_args
from slmops.train.base import BaseCheckpoint, prepare_base
from slmops.train.checkpoints import TrainState, list_checkpoints
from slmops.train.datasets import TrainDatasets, TrainDatasetVersion
from slmops.train.encoding import encode_all
from slmops.train.fit import FitResult, concrete_args, fit, use_bf16
from slmops.train.model import Trainable, load_trainable, save_output
from slmops.train.plot import loss_svg
from slmops.train.tracking import KIND_TAG, TrackedRun, Tracker, flatten

log = logging.getLogger("slmops.train")

RUN_FILE = "run.json"
LOSS_PLOT = "loss.svg"


class TrainingProgress(Protocol):
    """What a run reports while it works (the CLI draws it; the default prints nothing)."""

    def status(self, text: str) -> None: ...
    def begin(self, run_id: str, total_steps: int, done_steps: int) -> None: ...
    def step(self, state: TrainState, metrics: dict[str, float]) -> None: ...
    def epoch(self, state: TrainState, metrics: dict[str, float]) -> None: ...


class _Silent:
    def status(self, text: str) -> None:
        pass

    def begin(self, run_id: str, total_steps: int, done_steps: int) -> None:
        pass

    def step(self, state: TrainState, metrics: dict[str, float]) -> None:
        pass

    def epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        pass


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    status: str  # finished | interrupted
    state: TrainState
    output: Path | None  # the adapter or model folder
    run_dir: Path
    metrics: dict[str, float]


def run_dir(workspace: Workspace, run_id: str) -> Path:
    return workspace.home / "training" / run_id


def read_run_file(workspace: Workspace, run_id: str) -> dict[str, Any]:
    path = run_dir(workspace, run_id) / RUN_FILE
    try:
        spec = dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise NotFoundError(
            f"training run {run_id} has no folder in this workspace ({path.parent}); it was "
            "tracked elsewhere, or its folder was removed"
        ) from None
    except (OSError, ValueError) as exc:
        raise SlmopsError(f"{path} cannot be read: {exc}") from exc
    missing = [k for k in ("run_id", "experiment", "base", "dataset", "args") if k not in spec]
    if missing:
        raise SlmopsError(f"{path} is damaged: it lacks {', '.join(missing)}")
    return spec


def _code_version() -> dict[str, str]:
    version = {"slmops": slmops.__version__}
    package = Path(slmops.__file__).parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        if commit:
            version["git_commit"] = commit
    return version


def _system(args: TrainArgs) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpus": os.cpu_count(),
        "threads": args.threads or os.cpu_count(),
        "bf16": use_bf16(args.precision),
    }


def _peak_memory_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


class Training:
    """Start or resume fine-tuning runs in a workspace."""

    def __init__(self, workspace: Workspace, tracker: Tracker | None = None) -> None:
        self.workspace = workspace
        self.tracker = tracker or Tracker(workspace)

    # --- starting ------------------------------------------------------------------------

    def start(
        self,
        *,
        base: str,
        data: str,
        args: TrainArgs,
        name: str | None = None,
        progress: TrainingProgress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainingOutcome:
        """Fine-tune ``base`` on training dataset ``data`` (``NAME@N``); the run is recorded
        as it goes and can be resumed with :meth:`resume` if it stops early."""
        report = progress or _Silent()
        problem = name_problem("experiment", name) if name is not None else None
        if problem:
            raise ConfigError(problem)
        datasets = TrainDatasets(self.workspace)
        version, examples = datasets.examples(data)
        train_examples = [e for e in examples if e.split == "train"]
        if not train_examples:
            raise ConfigError(f"{version.ref} has no example in its training split")
        args = concrete_args(args)
        report.status(f"Preparing base model {base}")
        checkpoint = prepare_base(base, self.workspace)
        experiment = name or version.name
        run_id = self.tracker.start_run(
            experiment,
            run_name=f"{experiment}-{base.rpartition(':')[2]}",
            tags={KIND_TAG: "train", "slmops.state": "running"},
        )
        folder = run_dir(self.workspace, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        spec = {
            "run_id": run_id,
            "experiment": experiment,
            "base": checkpoint.as_dict(),
            "dataset": {
                "ref": version.ref,
                "sha256": version.sha256,
                "format": version.format,
                "lineage": version.lineage,
            },
            "args": args.model_dump(mode="json"),
            "code": _code_version(),
            "created_at": time.time(),
        }
        (folder / RUN_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        with _training_lock(folder, run_id):
            self._record_setup(run_id, spec, version, args)
            return self._train(run_id, spec, checkpoint, version, args, report, should_stop, False)

    def _record_setup(
        self, run_id: str, spec: dict[str, Any], version: TrainDatasetVersion, args: TrainArgs
    ) -> None:
        lineage = version.lineage
        self.tracker.log_params(
            run_id,
            {
                **flatten("", args.model_dump(mode="json")),
                "base": spec["base"]["uri"],
                "base_digest": spec["base"]["digest"],
                "data": version.ref,
                "data_sha256": version.sha256,
                "data_format": version.format,
            },
        )
        self.tracker.set_tags(
            run_id,
            {
                "slmops.base": spec["base"]["uri"],
                "slmops.base_digest": spec["base"]["digest"],
                "slmops.data": version.ref,
                "slmops.lineage": lineage,
                "slmops.code": spec["code"],
                "slmops.system": _system(args),
                "slmops.host": socket.gethostname(),
                "slmops.pid": os.getpid(),
                **({"slmops.prompt": lineage["prompt"]} if lineage.get("prompt") else {}),
                **({"slmops.corpora": lineage["corpora"]} if lineage.get("corpora") else {}),
            },
        )
        self.tracker.log_dataset(
            run_id,
            version.ref,
            version.sha256,
            {"uri": version.uri, "examples": version.examples, "heldout": version.heldout},
        )

    # --- resuming ------------------------------------------------------------------------

    def resume(
        self,
        run_id: str,
        *,
        progress: TrainingProgress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainingOutcome:
        """Continue a run from its last checkpoint, with the settings it started with."""
        tracked = self.tracker.run("train", run_id)
        with _training_lock(run_dir(self.workspace, tracked.run_id), tracked.run_id):
            return self._resume(tracked, progress or _Silent(), should_stop)

    def _resume(
        self,
        tracked: TrackedRun,
        report: TrainingProgress,
        should_stop: Callable[[], bool] | None,
    ) -> TrainingOutcome:
        spec = read_run_file(self.workspace, tracked.run_id)
        folder = run_dir(self.workspace, tracked.run_id)
        state = state_of(tracked)
        if state == "finished":
            raise ConfigError(f"training run {tracked.run_id[:12]} has already finished")
        if state == "running":
            raise ConfigError(
                f"training run {tracked.run_id[:12]} is still running (process "
                f"{tracked.tags.get('slmops.pid')} on {tracked.tags.get('slmops.host')})"
            )
        if not list_checkpoints(folder / "checkpoints"):
            raise ConfigError(
                f"training run {tracked.run_id[:12]} stopped before its first checkpoint; "
                "start it again"
            )
        version, _ = TrainDatasets(self.workspace).examples(spec["dataset"]["ref"])
        if version.sha256 != spec["dataset"]["sha256"]:
            raise ConfigError(f"training dataset {version.ref} changed since the run started")
        report.status(f"Preparing base model {spec['base']['uri']}")
        checkpoint = prepare_base(spec["base"]["uri"], self.workspace)
        if checkpoint.digest != spec["base"]["digest"]:
            raise ConfigError(
                f"the weights of {spec['base']['uri']} changed since the run started "
                f"({spec['base']['digest'][:19]} -> {checkpoint.digest[:19]})"
            )
        args = check_args(spec["args"])
        self.tracker.set_status(tracked.run_id, "RUNNING")
        self.tracker.set_tags(
            tracked.run_id, {"slmops.state": "running", "slmops.pid": os.getpid()}
        )
        return self._train(
            tracked.run_id, spec, checkpoint, version, args, report, should_stop, True
        )

    # --- the run -------------------------------------------------------------------------

    def _train(
        self,
        run_id: str,
        spec: dict[str, Any],
        checkpoint: BaseCheckpoint,
        version: TrainDatasetVersion,
        args: TrainArgs,
        report: TrainingProgress,
        should_stop: Callable[[], bool] | None,
        resume: bool,
    ) -> TrainingOutcome:
        folder = run_dir(self.workspace, run_id)
        try:
            report.status("Loading the model and encoding the examples")
            trainable = load_trainable(checkpoint.checkpoint, args)
            _, examples = TrainDatasets(self.workspace).examples(version.ref)
            train_set, left_out = encode_all(
                trainable.tokenizer,
                [e for e in examples if e.split == "train"],
                args.max_seq_tokens,
            )
            heldout_set, heldout_left_out = encode_all(
                trainable.tokenizer,
                [e for e in examples if e.split == "heldout"],
                args.max_seq_tokens,
            )
            if not train_set:
                raise ConfigError(
                    f"no training example of {version.ref} fits in {args.max_seq_tokens} tokens"
                )
            if not resume:
                self.tracker.log_params(
                    run_id,
                    {
                        "train_examples": len(train_set),
                        "heldout_examples": len(heldout_set),
                        "left_out_examples": left_out + heldout_left_out,
                        "parameters": trainable.parameters,
                        "trainable_parameters": trainable.trainable_parameters,
                    },
                )
            result = self._fit(
                run_id, trainable, train_set, heldout_set, args, report, should_stop, resume
            )
        except BaseException as exc:
            self._mark_ended(run_id, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        if not result.state.finished:  # stopped on request, after a checkpoint
            self._mark_ended(run_id, interrupted=True)
            return TrainingOutcome(run_id, "interrupted", result.state, None, folder, {})
        try:
            return self._finish(run_id, trainable, result, folder, report)
        except BaseException:
            self._mark_ended(run_id, interrupted=False)
            raise

    def _mark_ended(self, run_id: str, *, interrupted: bool) -> None:
        """Record how a run ended early; a tracking store that fails now must not hide the
        error that ended the run."""
        with contextlib.suppress(Exception):
            self.tracker.set_tags(
                run_id, {"slmops.state": "interrupted" if interrupted else "failed"}
            )
            self.tracker.set_status(run_id, "KILLED" if interrupted else "FAILED")

    def _fit(
        self,
        run_id: str,
        trainable: Trainable,
        train_set: Any,
        heldout_set: Any,
        args: TrainArgs,
        report: TrainingProgress,
        should_stop: Callable[[], bool] | None,
        resume: bool,
    ) -> FitResult:
        begun = False

        def on_step(state: TrainState, metrics: dict[str, float]) -> None:
            nonlocal begun
            if not begun:
                report.begin(run_id, int(metrics["total_steps"]), state.step - 1)
                begun = True
            logged = {k: v for k, v in metrics.items() if k != "total_steps"}
            self._log_best_effort(run_id, logged, state.step)
            report.step(state, metrics)

        def on_epoch(state: TrainState, metrics: dict[str, float]) -> None:
            self._log_best_effort(run_id, metrics, state.step)
            report.epoch(state, metrics)

        return fit(
            trainable,
            train_set,
            heldout_set,
            args,
            run_dir(self.workspace, run_id),
            resume=resume,
            on_step=on_step,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )

    def _log_best_effort(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """A metric the store failed to take is lost, not the training: a resumed run logs
        the steps since its checkpoint again anyway."""
        try:
            self.tracker.log_metrics(run_id, metrics, step)
        except Exception as exc:
            log.warning("metrics of step %s not recorded: %s", step, exc)

    def _finish(
        self,
        run_id: str,
        trainable: Trainable,
        result: FitResult,
        folder: Path,
        report: TrainingProgress,
    ) -> TrainingOutcome:
        import torch

        report.status("Saving the result")
        parameters = trainable.trainable()
        with torch.no_grad():
            for name, value in result.output_weights.items():
                parameters[name].copy_(value)
        output = save_output(trainable, folder, run_id)
        epochs = result.state.epoch or 1
        final: dict[str, float] = {
            "train_seconds": result.seconds,
            "train_tokens": float(result.state.tokens),
            "peak_memory_mb": _peak_memory_mb(),
            "minutes_per_epoch": result.seconds / 60 / epochs,
        }
        if result.state.best_heldout_loss is not None:
            final["best_heldout_loss"] = result.state.best_heldout_loss
        if result.resumed_from is None and result.seconds > 0:
            final["train_tokens_per_s"] = result.state.tokens / result.seconds
        last_loss = self._last(run_id, "train_loss")
        if last_loss is not None:
            final["final_train_loss"] = last_loss
        self.tracker.log_metrics(run_id, final, result.state.step)
        plot = self.write_plot(run_id, folder / LOSS_PLOT)
        self.tracker.log_artifact(run_id, output, output.name)
        self.tracker.log_artifact(run_id, folder / RUN_FILE)
        self.tracker.log_artifact(run_id, plot)
        self.tracker.set_tags(
            run_id,
            {
                "slmops.state": "finished",
                "slmops.stop_reason": result.state.stop_reason or "",
                "slmops.output": str(output),
            },
        )
        self.tracker.set_status(run_id, "FINISHED")
        return TrainingOutcome(run_id, "finished", result.state, output, folder, final)

    def _last(self, run_id: str, key: str) -> float | None:
        history = self.tracker.history(run_id, key)
        return history[-1][1] if history else None

    def write_plot(self, run_id: str, path: Path) -> Path:
        """The run's loss curve (training loss per step, held-out loss per epoch) as SVG."""
        train = self.tracker.history(run_id, "train_loss")
        heldout = self.tracker.history(run_id, "heldout_loss")
        path.write_text(loss_svg(f"Loss of run {run_id[:12]}", train, heldout), encoding="utf-8")
        return path

    # --- evaluations of exported models ---------------------------------------------------

    def record_eval(
        self, model_uris: Iterable[str], eval_run_id: str, dataset: str, summary: dict[str, Any]
    ) -> list[str]:
        """Log an eval run's metric means on the training runs whose exports it evaluated
        (found by the exported file's path); returns those runs' ids."""
        paths = {str(p.resolve()) for uri in model_uris for p in _local_files(uri)}
        if not paths:
            return []
        found = []
        for run in self.runs(limit=10000):
            exported = {
                value
                for key, value in run.tags.items()
                if key.startswith("slmops.export.") and not key.endswith(".sha256")
            }
            if exported & paths:
                self.log_eval(run.run_id, eval_run_id, dataset, summary)
                found.append(run.run_id)
        return found

    def log_eval(self, run_id: str, eval_run_id: str, dataset: str, summary: dict[str, Any]) -> str:
        """Put an eval run's metric means on training run ``run_id`` (``eval.DATASET.METRIC``)
        and name it as the run's last eval; returns that short description."""
        prefix = f"eval.{dataset.replace('@', '_v')}"
        metrics = {
            f"{prefix}.{key}": float(value["mean"])
            for key, value in summary.get("metrics", {}).items()
            if value.get("mean") is not None
        }
        described = " ".join(f"{key}={value:.3f}" for key, value in list(metrics.items())[:3])
        last = f"{dataset} {described.replace(prefix + '.', '')}"
        self.tracker.log_metrics(run_id, metrics, 0)
        self.tracker.set_tags(
            run_id, {"slmops.eval.last": last, f"slmops.eval.{eval_run_id[:12]}": dataset}
        )
        return last

    # --- reading -------------------------------------------------------------------------

    def runs(self, limit: int = 50) -> list[TrackedRun]:
        return self.tracker.runs("train", limit=limit)

    def run(self, run_id: str) -> TrackedRun:
        return self.tracker.run("train", run_id)


def _local_files(uri: str) -> list[Path]:
    """The local weight files a model URI names (a GGUF, an adapter, a checkpoint)."""
    try:
        parsed = parse_model_uri(uri)
    except SlmopsError:
        return []
    files = [Path(parsed.adapter).expanduser()] if parsed.adapter else []
    if parsed.scheme in ("gguf", "hf"):
        files.append(Path(parsed.location).expanduser())
    return files


@contextlib.contextmanager
def _training_lock(folder: Path, run_id: str) -> Iterator[None]:
    """One process trains a run at a time (two resumes of one run would write the same
    checkpoints)."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".training.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"training run {run_id[:12]} is being trained by another process"
        ) from None
    try:
        yield
    finally:
        lock.release()


def state_of(run: TrackedRun) -> str:
    """finished / interrupted / failed / running, or crashed: a run marked running whose
    process on this host is gone (``kill -9``, a power cut)."""
    state = run.tags.get("slmops.state", run.status.lower())
    if state != "running":
        return state
    if run.tags.get("slmops.host") == socket.gethostname():
        try:
            pid = int(run.tags.get("slmops.pid", "0"))
        except ValueError:
            return "crashed"
        if not pid_alive(pid):
            return "crashed"
    return state
