"""The operations a pipeline step can run: the lifecycle commands that already exist, called
through the library, plus user Python functions.

Each operation declares its parameters (a pydantic model: a step's table is checked before
anything runs), what it reads from outside the pipeline (``fingerprint``: file digests and the
versions that references such as ``handbook-qa`` or ``chat@champion`` resolve to *now*), what
it produced (``run``: plain data: versions, run ids, figures), whether a remembered result
still stands (``still_valid``: the corpus was not changed since, the alias still points there)
and the checks that stop the pipeline (``checks``: an eval's gates, a promotion's gates).
A step's cache key hashes the operation, its parameters and that fingerprint, so a step reruns
exactly when something it reads changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slmops.errors import ConfigError, NotFoundError, SlmopsError
from slmops.store.workspace import Workspace

if TYPE_CHECKING:
    from slmops.eval.generated import GeneratedDataset

Report = Callable[[str, int, int], None]
"""Called with (what, done, total) while a step works."""


@dataclass(frozen=True)
class Check:
    """A condition a step's result must meet for the pipeline to go on (a gate)."""

    passed: bool
    text: str


@dataclass
class StepContext:
    """What an operation gets besides its parameters."""

    workspace: Workspace
    directory: Path  # the pipeline's folder: relative paths are read from here
    step: str
    progress: dict[str, Any] = field(default_factory=dict)  # saved by an earlier, stopped try
    save_progress: Callable[[dict[str, Any]], None] = lambda _state: None
    report: Report = lambda _what, _done, _total: None
    should_stop: Callable[[], bool] = lambda: False
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # see spec

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.directory / path


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Operation:
    """One kind of step. Subclasses set ``name``, ``Params`` and implement ``run``."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    not_in_key: ClassVar[frozenset[str]] = frozenset()  # parameters re-checked, not rerun

    def fingerprint(self, ctx: StepContext, params: Any) -> dict[str, Any]:
        return {}

    def run(self, ctx: StepContext, params: Any) -> dict[str, Any]:
        raise NotImplementedError

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        return True

    def checks(self, params: Any, outputs: dict[str, Any]) -> list[Check]:
        return []

    def parse(self, step: str, values: dict[str, Any]) -> Any:
        try:
            return self.Params.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'parameters'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"step {step!r} ({self.name}): {problems}") from None


# --- helpers ------------------------------------------------------------------------------


def files_digest(paths: list[Path]) -> str:
    """A digest of every file under ``paths`` (names and contents, as ingest reads them)."""
    from slmops.data.documents import iter_files

    digest = hashlib.sha256()
    for path, relative in iter_files([p for p in paths if p.exists()]):
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _stack_fingerprint(ctx: StepContext, stack: str, models: dict[str, str]) -> dict[str, Any]:
    from slmops.apps.build import build_stack
    from slmops.eval.runner import pin_aliases

    built = build_stack(stack, ctx.workspace, models=models or None)
    pinned = pin_aliases(ctx.workspace, built.resolved.models)
    return {"stack": built.version, "versions": built.resolved.summary(), "pinned": pinned}


# --- data ---------------------------------------------------------------------------------


class IngestParams(Params):
    corpus: str
    paths: list[str] = Field(min_length=1)
    message: str = ""
    add: bool = False
    allow_removals: bool = False
    embedder: str | None = None
    chunk_tokens: int = Field(200, ge=16)
    overlap_tokens: int = Field(32, ge=0)
    wait: float = Field(600.0, ge=0)


class Ingest(Operation):
    """Bring a corpus to exactly the documents under ``paths`` (``add``: add them)."""

    name = "ingest"
    Params = IngestParams
    not_in_key = frozenset({"wait", "message"})

    def fingerprint(self, ctx: StepContext, params: IngestParams) -> dict[str, Any]:
        from slmops.data.corpus import check_ingest

        roots = check_ingest(params.corpus, [ctx.path(p) for p in params.paths])
        return {"files": files_digest(roots)}

    def run(self, ctx: StepContext, params: IngestParams) -> dict[str, Any]:
        from slmops.data.corpus import corpora_for

        corpora = corpora_for(ctx.workspace)
        report = corpora.ingest(
            params.corpus,
            [ctx.path(p) for p in params.paths],
            message=params.message or f"pipeline step {ctx.step}",
            embedder=params.embedder,
            chunk_tokens=params.chunk_tokens,
            overlap_tokens=params.overlap_tokens,
            add=params.add,
            allow_removals=params.allow_removals,
            wait=params.wait,
            on_progress=ctx.report,
        )
        version = report.version or corpora.resolve(f"{params.corpus}@latest").version
        return {
            "corpus": params.corpus,
            "version": version,
            "ref": f"{params.corpus}@{version}",
            "committed": report.version is not None,
            "documents": report.documents,
            "chunks": report.chunks,
            "added": report.added,
            "removed": report.removed,
        }

    def still_valid(self, ctx: StepContext, params: IngestParams, outputs: dict[str, Any]) -> bool:
        from slmops.data.corpus import corpora_for

        try:  # a version committed since (by hand, another pipeline) means: ingest again
            latest = corpora_for(ctx.workspace).resolve(f"{params.corpus}@latest")
        except NotFoundError:
            return False
        return bool(latest.version == outputs.get("version"))


class DatasetParams(Params):
    name: str
    file: str
    message: str = ""


class AddDataset(Operation):
    """Store an eval dataset file (JSONL) as a dataset version."""

    name = "dataset"
    Params = DatasetParams
    not_in_key = frozenset({"message"})

    def fingerprint(self, ctx: StepContext, params: DatasetParams) -> dict[str, Any]:
        path = ctx.path(params.file)
        if not path.is_file():
            raise ConfigError(f"step {ctx.step!r}: dataset file {path} does not exist")
        return {"file": hashlib.sha256(path.read_bytes()).hexdigest()}

    def run(self, ctx: StepContext, params: DatasetParams) -> dict[str, Any]:
        from slmops.eval.datasets import Datasets, read_cases

        path = ctx.path(params.file)
        version, created = Datasets(ctx.workspace).add(
            params.name, read_cases(path), message=params.message or f"{path.name} (pipeline)"
        )
        return {"dataset": version.ref, "cases": version.cases, "committed": created}

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        return _dataset_exists(ctx, outputs["dataset"])


def _dataset_exists(ctx: StepContext, ref: str) -> bool:
    from slmops.eval.datasets import Datasets

    try:
        Datasets(ctx.workspace).resolve(ref)
    except SlmopsError:
        return False
    return True


class SynthParams(Params):
    corpus: str
    n: int = Field(20, ge=1)
    dataset: str | None = None


class RedteamParams(Params):
    stack: str
    n: int = Field(2, ge=1)
    dataset: str | None = None


class _ModelWrittenDataset(Operation):
    """A dataset a model writes; its outputs name the version it committed (or matched)."""

    def write(self, ctx: StepContext, params: Any) -> GeneratedDataset:
        raise NotImplementedError

    def run(self, ctx: StepContext, params: Any) -> dict[str, Any]:
        made = self.write(ctx, params)
        return {
            "dataset": made.version.ref,
            "cases": made.version.cases,
            "committed": made.created,
            "trace": made.trace_id,
        }

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        return _dataset_exists(ctx, outputs["dataset"])


class Synth(_ModelWrittenDataset):
    """Write test cases from a corpus with the synth stack; store them as a dataset version."""

    name = "synth"
    Params = SynthParams

    def fingerprint(self, ctx: StepContext, params: SynthParams) -> dict[str, Any]:
        from slmops.data.corpus import corpora_for

        return {"corpus": corpora_for(ctx.workspace).resolve(params.corpus).version}

    def write(self, ctx: StepContext, params: SynthParams) -> GeneratedDataset:
        from slmops.eval.generated import synthesize

        return synthesize(ctx.workspace, params.corpus, n=params.n, dataset=params.dataset)


class Redteam(_ModelWrittenDataset):
    """Write attacks aimed at a stack (seed attacks plus generated); store them as a dataset."""

    name = "redteam"
    Params = RedteamParams

    def fingerprint(self, ctx: StepContext, params: RedteamParams) -> dict[str, Any]:
        return _stack_fingerprint(ctx, params.stack, {})

    def write(self, ctx: StepContext, params: RedteamParams) -> GeneratedDataset:
        from slmops.eval.generated import write_attacks

        return write_attacks(ctx.workspace, params.stack, n=params.n, dataset=params.dataset)


# --- eval ---------------------------------------------------------------------------------


class EvalParams(Params):
    stack: str
    dataset: str
    metrics: list[str] | None = None
    gates: list[str] = Field(default_factory=list)
    concurrency: int = Field(1, ge=1, le=64)
    models: dict[str, str] = Field(default_factory=dict)


class Evaluate(Operation):
    """Run a stack over a dataset version and score it; the gates decide whether the pipeline
    goes on. Changing only a gate re-checks the remembered run instead of running it again."""

    name = "eval"
    Params = EvalParams
    not_in_key = frozenset({"gates", "concurrency"})

    def fingerprint(self, ctx: StepContext, params: EvalParams) -> dict[str, Any]:
        from slmops.eval.datasets import Datasets
        from slmops.eval.gates import parse_gate

        for gate in params.gates:
            parse_gate(gate)  # a typo in a gate fails before the run, not after it
        return {
            **_stack_fingerprint(ctx, params.stack, params.models),
            "dataset": Datasets(ctx.workspace).resolve(params.dataset).ref,
        }

    def run(self, ctx: StepContext, params: EvalParams) -> dict[str, Any]:
        from slmops.apps.build import build_stack
        from slmops.core.runtime import Runtime
        from slmops.eval.datasets import Datasets
        from slmops.eval.gates import check_names, figures, parse_gate
        from slmops.eval.runner import EvalRun, build_metrics, load_run, pin_aliases

        ws = ctx.workspace
        overrides = dict(params.models)
        resumed = ctx.progress.get("run")
        if resumed:  # a stopped try of this step: finish that run, with its own models
            overrides = load_run(ws, resumed)["config"].get("models") or {}
        built = build_stack(params.stack, ws, models=overrides or None)
        if not resumed:
            pinned = pin_aliases(ws, built.resolved.models)
            if pinned:  # one model version for the whole run
                overrides = {**overrides, **pinned}
                built = build_stack(params.stack, ws, models=overrides)
        metrics = build_metrics(params.metrics, ws.settings.embedder)
        check_names([parse_gate(g) for g in params.gates], [m.key for m in metrics])
        runner = EvalRun(ws, built, metrics)
        dataset = Datasets(ws).resolve(params.dataset).ref
        run_id = resumed or runner.start(dataset, params.concurrency, models=overrides)
        ctx.save_progress({"run": run_id})
        _, cases = Datasets(ws).cases(dataset)
        summary = asyncio.run(
            runner.execute(
                run_id,
                cases,
                Runtime.from_workspace(ws),
                concurrency=params.concurrency,
                on_progress=lambda done, total: ctx.report("cases", done, total),
            )
        )
        return {
            "run": run_id,
            "dataset": dataset,
            "figures": figures(summary),
            "summary": summary,
        }

    def checks(self, params: EvalParams, outputs: dict[str, Any]) -> list[Check]:
        from slmops.eval.gates import check_gates, parse_gate

        results = check_gates([parse_gate(g) for g in params.gates], outputs["summary"])
        return [Check(r.passed, r.describe()) for r in results]

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        from slmops.eval.runner import load_run

        try:
            return bool(load_run(ctx.workspace, outputs["run"])["status"] == "complete")
        except SlmopsError:
            return False


# --- ml -----------------------------------------------------------------------------------


class TrainParams(Params):
    base: str = "local:smollm2-135m"
    data: str
    experiment: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class _SavingProgress:
    """Training progress that remembers the run id as soon as the run exists (so a stopped
    pipeline resumes that training run) and reports steps."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.total = 0

    def status(self, text: str) -> None:
        pass

    def begin(self, run_id: str, total_steps: int, done_steps: int) -> None:
        self.total = total_steps
        self.ctx.save_progress({"run": run_id})
        self.ctx.report("steps", done_steps, total_steps)

    def step(self, state: Any, metrics: dict[str, float]) -> None:
        self.ctx.report("steps", state.step, self.total)

    def epoch(self, state: Any, metrics: dict[str, float]) -> None:
        pass


class Train(Operation):
    """Fine-tune a base model on a training dataset version (LoRA by default)."""

    name = "train"
    Params = TrainParams

    def fingerprint(self, ctx: StepContext, params: TrainParams) -> dict[str, Any]:
        from slmops.train.datasets import TrainDatasets

        return {"data": TrainDatasets(ctx.workspace).resolve(params.data).ref}

    def run(self, ctx: StepContext, params: TrainParams) -> dict[str, Any]:
        from slmops.train.args import check_args
        from slmops.train.runs import Training

        training = Training(ctx.workspace)
        progress = _SavingProgress(ctx)
        if ctx.progress.get("run"):
            outcome = training.resume(
                ctx.progress["run"], progress=progress, should_stop=ctx.should_stop
            )
        else:
            outcome = training.start(
                base=params.base,
                data=params.data,
                args=check_args(params.args),
                name=params.experiment,
                progress=progress,
                should_stop=ctx.should_stop,
            )
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
        return {"run": outcome.run_id, "output": str(outcome.output), "metrics": outcome.metrics}

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        return Path(outputs["output"]).exists()


class ExportParams(Params):
    run: str
    format: str = "gguf-q8_0"


class Export(Operation):
    """Export a finished training run (GGUF, adapter GGUF, or merged checkpoint)."""

    name = "export"
    Params = ExportParams

    def run(self, ctx: StepContext, params: ExportParams) -> dict[str, Any]:
        from slmops.train.export import RunExporter
        from slmops.train.runs import Training

        run = Training(ctx.workspace).run(params.run)
        result = RunExporter(ctx.workspace, run.run_id).export(params.format, None)
        return {"uri": result.model_uri, "path": str(result.path), "sha256": result.sha256}

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        return Path(outputs["path"]).exists()


class RegisterParams(Params):
    name: str
    uri: str | None = None
    run: str | None = None
    format: str = "gguf-q8_0"
    intended_use: str = ""


class Register(Operation):
    """Register a model version: a model URI's weights, or a training run's export."""

    name = "register"
    Params = RegisterParams

    def run(self, ctx: StepContext, params: RegisterParams) -> dict[str, Any]:
        from slmops.registry.registration import register_run, register_uri
        from slmops.registry.store import ModelRegistry

        if (params.uri is None) == (params.run is None):
            raise ConfigError(f"step {ctx.step!r} (register): give uri or run (one of them)")
        registry = ModelRegistry(ctx.workspace)
        if params.run is not None:
            version = register_run(
                registry,
                name=params.name,
                run_id=params.run,
                fmt=params.format,
                intended_use=params.intended_use,
            )
        else:
            assert params.uri is not None
            version = register_uri(
                registry, name=params.name, uri=params.uri, intended_use=params.intended_use
            )
        return {"ref": version.ref, "version": version.version, "uri": f"registry:{version.ref}"}

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        from slmops.registry.store import ModelRegistry

        try:
            ModelRegistry(ctx.workspace).resolve(outputs["ref"])
        except SlmopsError:
            return False
        return True


class PromoteParams(Params):
    ref: str
    alias: str
    stack: str
    dataset: str
    gates: list[str] = Field(min_length=1)
    model_alias: str = "chat"
    reason: str = ""


class Promote(Operation):
    """Evaluate a registered version against the alias' holder and move the alias only if
    every gate passes (the registry's gated promotion)."""

    name = "promote"
    Params = PromoteParams
    not_in_key = frozenset({"reason"})

    def fingerprint(self, ctx: StepContext, params: PromoteParams) -> dict[str, Any]:
        from slmops.eval.datasets import Datasets

        return {"dataset": Datasets(ctx.workspace).resolve(params.dataset).ref}

    def run(self, ctx: StepContext, params: PromoteParams) -> dict[str, Any]:
        from slmops.registry.promotion import promote
        from slmops.registry.store import ModelRegistry

        result = promote(
            ctx.workspace,
            ModelRegistry(ctx.workspace),
            ref=params.ref,
            alias=params.alias,
            stack=params.stack,
            dataset=params.dataset,
            gates=params.gates,
            model_alias=params.model_alias,
            reason=params.reason or f"pipeline step {ctx.step}",
            on_progress=ctx.report,
        )
        return {
            "promoted": result.promoted,
            "alias": f"{result.candidate.name}@{params.alias}",
            "version": result.candidate.version,
            "run": result.candidate_run,
            "checks": [
                {"gate": c.gate, "passed": c.passed, "detail": c.detail} for c in result.checks
            ],
        }

    def checks(self, params: Any, outputs: dict[str, Any]) -> list[Check]:
        return [Check(bool(c["passed"]), f"{c['gate']}: {c['detail']}") for c in outputs["checks"]]

    def still_valid(self, ctx: StepContext, params: Any, outputs: dict[str, Any]) -> bool:
        from slmops.registry.store import ModelRegistry

        if not outputs.get("promoted"):
            return True  # a refused promotion stays refused for the same inputs
        try:  # moved since (a rollback, another promotion): promote again
            holder = ModelRegistry(ctx.workspace).resolve(outputs["alias"])
        except SlmopsError:
            return False
        return bool(holder.version == outputs["version"])


# --- user code ----------------------------------------------------------------------------


class PythonParams(Params):
    call: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)


class Python(Operation):
    """A user function ``module:function`` (a module in the pipeline's folder, or installed),
    called with the step context and ``args``; it returns a dict of JSON-able outputs (or
    None). Its source file is part of the cache key: edit it and the step reruns."""

    name = "python"
    Params = PythonParams

    def fingerprint(self, ctx: StepContext, params: PythonParams) -> dict[str, Any]:
        _, code = self._load(ctx, params.call)
        return {"code": code}

    def run(self, ctx: StepContext, params: PythonParams) -> dict[str, Any]:
        function, _ = self._load(ctx, params.call)
        try:
            result = function(ctx, **params.args)
        except SlmopsError:
            raise
        except Exception as exc:  # user code: report what it raised, as this step's failure
            raise StepFailedError(f"{params.call} raised {type(exc).__name__}: {exc}") from exc
        if result is None:
            return {}
        if not isinstance(result, dict):
            raise StepFailedError(
                f"{params.call} returned {type(result).__name__}; return a dict or None"
            )
        try:
            return dict(json.loads(json.dumps(result)))
        except (TypeError, ValueError) as exc:
            raise StepFailedError(
                f"{params.call} returned outputs that are not JSON: {exc}"
            ) from None

    @staticmethod
    def _load(ctx: StepContext, call: str) -> tuple[Callable[..., Any], str]:
        given = ctx.functions.get(call)
        if given is not None:
            try:
                code = inspect.getsource(given)
            except (OSError, TypeError):  # defined where no source is kept (a REPL)
                code = call
            return given, hashlib.sha256(code.encode()).hexdigest()
        module_name, _, attribute = call.partition(":")
        source = ctx.directory.joinpath(*module_name.split(".")).with_suffix(".py")
        try:
            if source.is_file():  # the pipeline's own code: loaded fresh, hashed
                spec = importlib.util.spec_from_file_location(
                    f"slmops_pipeline_{hashlib.sha256(str(source).encode()).hexdigest()[:12]}",
                    source,
                )
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                code = hashlib.sha256(source.read_bytes()).hexdigest()
            else:
                module = importlib.import_module(module_name)
                code = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
        except Exception as exc:  # importing runs user code: report whatever it raised
            raise ConfigError(
                f"step {ctx.step!r}: cannot import {module_name!r} (looked for {source} and "
                f"installed modules): {type(exc).__name__}: {exc}"
            ) from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise ConfigError(f"step {ctx.step!r}: {module_name!r} has no function {attribute!r}")
        return function, code


class StepFailedError(SlmopsError):
    """A step's own work failed (user code raised, bad outputs)."""


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Ingest(),
        AddDataset(),
        Synth(),
        Redteam(),
        Evaluate(),
        Train(),
        Export(),
        Register(),
        Promote(),
        Python(),
    )
}


def operation(step: str, name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ConfigError(
            f"step {step!r}: unknown op {name!r}; ops: {', '.join(OPERATIONS)}"
        ) from None
