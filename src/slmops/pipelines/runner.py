"""Running a pipeline: each step in dependency order, reused when nothing it reads changed.

For every step the runner fills in the ``${step.output}`` references, checks the parameters,
and computes a key from the operation, the parameters and the operation's fingerprint of what
it reads outside the pipeline (file digests, the versions names resolve to now). A finished
step with the same key (in this or an earlier run) whose outputs still stand is *cached*: its
outputs are reused and its checks (gates) are evaluated again. Otherwise the step runs. A
failed step or a failed gate stops the steps downstream of it (they are *skipped*, with the
reason); independent branches go on. Every state change is committed as it happens, so a run
killed at any point resumes (``resume``) from the steps that did not finish, and a long step
that saved progress (an eval run, a training run) continues its own work.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slmops.errors import ConfigError, SlmopsError
from slmops.pipelines.ops import Check, StepContext, operation
from slmops.pipelines.records import FINISHED, PipelineRecords, RunRecord
from slmops.pipelines.spec import REFERENCE, PipelineError, PipelineSpec
from slmops.store.workspace import Workspace

KEY_VERSION = "1"  # bump when the meaning of a key changes: old cache entries stop matching


@dataclass(frozen=True)
class StepEvent:
    step: str
    status: str  # running | ok | cached | failed | gate_failed | skipped | interrupted
    detail: str = ""


OnEvent = Callable[[StepEvent], None]
OnProgress = Callable[[str, str, int, int], None]  # step, what, done, total


def step_key(pipeline: str, step: str, op: str, params: dict[str, Any], fp: dict[str, Any]) -> str:
    from slmops import __version__

    material = {
        "key": KEY_VERSION,
        "slmops": __version__,
        "pipeline": pipeline,
        "step": step,
        "op": op,
        "params": params,
        "fingerprint": fp,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def substitute(value: Any, outputs: dict[str, dict[str, Any]], step: str) -> Any:
    """``value`` with every ``${other.output}`` replaced by that step's output."""
    if isinstance(value, dict):
        return {k: substitute(v, outputs, step) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, outputs, step) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: Any) -> Any:
        other, key = match.group(1), match.group(2)
        produced = outputs.get(other, {})
        if key not in produced:
            names = ", ".join(sorted(produced)) or "none"
            raise ConfigError(
                f"step {step!r}: ${{{other}.{key}}}: step {other!r} has no output {key!r} "
                f"(its outputs: {names})"
            )
        return produced[key]

    whole = REFERENCE.fullmatch(value)
    if whole:  # the whole string: keep the output's own type (a number, a list)
        return lookup(whole)
    return REFERENCE.sub(lambda m: str(lookup(m)), value)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # complete | failed | interrupted
    error: str | None
    record: RunRecord


class PipelineRunner:
    """Runs a pipeline in this process (``executor="local"``)."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        on_event: OnEvent | None = None,
        on_progress: OnProgress | None = None,
        should_stop: Callable[[], bool] | None = None,
        executor: str = "local",
        address: str | None = None,
    ) -> None:
        if executor not in ("local", "ray"):
            raise PipelineError(f"unknown executor {executor!r}: use local or ray")
        self.executor = executor
        self.remote: Callable[..., dict[str, Any]] | None = None
        if executor == "ray":  # connect first: an unreachable cluster fails before any step
            from slmops.pipelines.ray_executor import step_runner

            self.remote = step_runner(address)
        self.workspace = workspace
        self.records = PipelineRecords(workspace)
        self.on_event = on_event or (lambda _event: None)
        self.on_progress = on_progress or (lambda _step, _what, _done, _total: None)
        self.should_stop = should_stop or (lambda: False)

    def run(
        self, spec: PipelineSpec, *, trigger: str = "manual", force: set[str] | None = None
    ) -> RunOutcome:
        """A new run of ``spec``; steps named in ``force`` run even when cached."""
        unknown = (force or set()) - set(spec.steps)
        if unknown:
            raise PipelineError(
                f"--force names no step of {spec.name!r}: {', '.join(sorted(unknown))}"
            )
        run_id = self.records.create(spec, trigger=trigger, executor=self.executor)
        return self._execute(run_id, spec, force or set())

    def resume(self, ref: str) -> RunOutcome:
        """Continue a stopped run (killed, interrupted or failed): finished steps keep their
        outputs, the others run (a long step continues from its saved progress)."""
        record = self.records.load(ref)
        if record.status == "complete":
            raise PipelineError(f"run {record.id[:12]} is complete; nothing to resume")
        if record.alive():
            raise PipelineError(
                f"run {record.id[:12]} is still running (pid {record.pid} on {record.host})"
            )
        self.records.claim(record.id)
        return self._execute(record.id, PipelineSpec.from_dict(record.spec), set(), record)

    # --- the run ------------------------------------------------------------------------

    def _execute(
        self, run_id: str, spec: PipelineSpec, force: set[str], previous: RunRecord | None = None
    ) -> RunOutcome:
        outputs: dict[str, dict[str, Any]] = {}
        blocked: dict[str, str] = {}  # step -> why its downstream cannot run
        first_error: str | None = None
        try:
            for name in spec.order:
                done = previous.step(name) if previous else None
                if done is not None and done.status in FINISHED:
                    outputs[name] = done.outputs
                    self.on_event(StepEvent(name, done.status, "finished before the resume"))
                    continue
                stopped_by = [u for u in spec.upstream(name) if u in blocked]
                if stopped_by:
                    why = f"upstream step {stopped_by[0]!r} {blocked[stopped_by[0]]}"
                    self.records.update_step(run_id, name, status="skipped", error=why)
                    blocked[name] = "was skipped"
                    self.on_event(StepEvent(name, "skipped", why))
                    continue
                status, error = self._step(
                    run_id, spec, name, outputs, force, done.progress if done else {}
                )
                if status not in FINISHED:
                    blocked[name] = "failed" if status == "failed" else "failed a gate"
                    first_error = first_error or f"step {name!r}: {error}"
        except KeyboardInterrupt:
            self.records.finish(run_id, "interrupted", "stopped by the user (Ctrl-C)")
            raise
        status = "complete" if not blocked else "failed"
        self.records.finish(run_id, status, first_error)
        return RunOutcome(run_id, status, first_error, self.records.load(run_id))

    def _step(
        self,
        run_id: str,
        spec: PipelineSpec,
        name: str,
        outputs: dict[str, dict[str, Any]],
        force: set[str],
        progress: dict[str, Any],
    ) -> tuple[str, str | None]:
        step = spec.steps[name]
        started = time.time()
        ctx = StepContext(
            workspace=self.workspace,
            directory=spec.directory,
            step=name,
            progress=dict(progress),
            report=lambda what, done, total: self.on_progress(name, what, done, total),
            should_stop=self.should_stop,
            functions=spec.functions,
        )

        def save_progress(state: dict[str, Any]) -> None:
            ctx.progress = dict(state)
            self.records.update_step(run_id, name, progress=ctx.progress)

        ctx.save_progress = save_progress
        self.records.update_step(run_id, name, status="running", started_at=started)
        self.on_event(StepEvent(name, "running"))
        try:
            op = operation(name, step.op)
            params = op.parse(name, substitute(step.params, outputs, name))
            fingerprint = op.fingerprint(ctx, params)
            keyed = params.model_dump(exclude=set(op.not_in_key))
            key = step_key(spec.name, name, step.op, keyed, fingerprint)
            inputs = {"params": keyed, "fingerprint": fingerprint}
            self.records.update_step(run_id, name, key=key, inputs=inputs)
            hit = None if name in force else self.records.cached(key)
            if hit is not None and op.still_valid(ctx, params, hit.outputs):
                produced, status = hit.outputs, "cached"
                detail = f"reused from run {hit.run_id[:12]}"
            else:
                produced, status, detail = self._run_op(spec, name, ctx, params), "ok", ""
            checks = op.checks(params, produced)
        except KeyboardInterrupt:
            self.records.update_step(
                run_id, name, status="interrupted", finished_at=time.time(), error="Ctrl-C"
            )
            self.on_event(StepEvent(name, "interrupted"))
            raise
        except SlmopsError as exc:
            return self._failed(run_id, name, str(exc))
        except Exception as exc:  # a bug or a library's own error: recorded, the run goes on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            message = f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
            return self._failed(run_id, name, message)
        failed = [c for c in checks if not c.passed]
        if failed:
            status = "gate_failed"
            detail = "; ".join(c.text for c in failed)
        outputs[name] = produced
        self.records.update_step(
            run_id,
            name,
            status=status,
            outputs=produced,
            finished_at=time.time(),
            error=detail if failed else None,
            progress={**ctx.progress, "checks": [_check(c) for c in checks]},
        )
        self.on_event(StepEvent(name, status, detail or _summary(produced)))
        return status, detail if failed else None

    def _run_op(self, spec: PipelineSpec, name: str, ctx: StepContext, params: Any) -> Any:
        step = spec.steps[name]
        given_here = step.op == "python" and step.params.get("call") in spec.functions
        if self.remote is None or given_here:  # a function given to Pipeline.function
            # lives only in this process
            return operation(name, step.op).run(ctx, params)
        return self.remote(
            str(self.workspace.home),
            step.op,
            name,
            str(spec.directory),
            params.model_dump(),
            ctx.progress,
        )

    def _failed(self, run_id: str, name: str, message: str) -> tuple[str, str]:
        self.records.update_step(
            run_id, name, status="failed", finished_at=time.time(), error=message
        )
        self.on_event(StepEvent(name, "failed", message))
        return "failed", message


def _check(check: Check) -> dict[str, Any]:
    return {"passed": check.passed, "text": check.text}


def _summary(outputs: dict[str, Any]) -> str:
    """A short line of what a step produced, for the progress view."""
    shown = []
    for key in ("ref", "dataset", "run", "alias", "uri"):
        value = outputs.get(key)
        if isinstance(value, str):
            shown.append(value if key != "run" else f"run {value[:12]}")
    return ", ".join(shown)
