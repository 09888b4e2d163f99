"""Where training examples come from besides a file: an evaluation dataset rendered through a
stack's own prompt, or the stack's stored traces.

Rendering through the stack matters: a model fine-tuned on the exact messages the stack sends
at run time (its system prompt, its template, the passages its retrieval finds) learns the
task it will be asked, not a paraphrase of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from slmops.apps.stack import Stack
from slmops.core.llm_call import LLMCall
from slmops.eval.datasets import Datasets
from slmops.models.base import ChatMessage
from slmops.store.schema import spans, traces
from slmops.store.workspace import Workspace
from slmops.train.datasets import TrainDataError, TrainExample

Progress = Callable[[int, int], None]
"""Called with (items done, items in all)."""

TraceFilter = Callable[[dict[str, Any], list[dict[str, Any]]], bool]
"""Decides whether a stored trace (its row and its spans) becomes an example: human feedback
chooses traces through it (see slmops.monitor.trace_data.training_choice)."""


@dataclass
class BuiltExamples:
    """Examples made from another source, what was left out and why, and their lineage."""

    examples: list[TrainExample]
    skipped: dict[str, int] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def answer_node(stack: Stack, node: str | None) -> tuple[str, LLMCall]:
    """The stack's model step whose answers are trained: ``node``, else the streaming one."""
    if node is None:
        streaming = stack.streaming_node()
        if streaming is None or not isinstance(streaming.step, LLMCall):
            raise TrainDataError(
                f"stack {stack.stack_name!r} has no text-answering model step at its top "
                "level; name one with --node"
            )
        return streaming.name, streaming.step
    for candidate in stack.nodes:
        if candidate.name == node:
            if not isinstance(candidate.step, LLMCall) or candidate.step.structured:
                raise TrainDataError(f"step {node!r} of {stack.stack_name!r} is no text LLM call")
            if candidate.for_each:
                raise TrainDataError(f"step {node!r} runs for_each; train a single-call step")
            return candidate.name, candidate.step
    names = ", ".join(n.name for n in stack.nodes)
    raise TrainDataError(f"stack {stack.stack_name!r} has no step {node!r} (steps: {names})")


async def examples_from_eval_dataset(
    workspace: Workspace,
    dataset_ref: str,
    stack: Stack,
    *,
    node: str | None = None,
    grounded_only: bool = False,
    on_progress: Progress | None = None,
) -> BuiltExamples:
    """One chat example per answerable case with a reference: the messages the stack's
    answering step is sent for the case's input (retrieval and earlier steps run for real),
    then the reference as the assistant's answer. The example keeps the case's id (and its
    ``metadata.group``), so the train/held-out split follows the case. ``grounded_only``
    leaves out cases whose reference is not in the rendered prompt: training a model to
    answer what its passages do not say teaches it to make answers up."""
    version, cases = Datasets(workspace).cases(dataset_ref)
    name, llm = answer_node(stack, node)
    built = BuiltExamples(examples=[])
    for done, case in enumerate(cases, start=1):
        if case.adversarial or not case.answerable:
            built.skip("unanswerable or adversarial (the stack should refuse, not answer)")
        elif not (case.reference or "").strip():
            built.skip("no reference answer")
        else:
            value = await stack.input_of(case.input, name)
            prompt = llm.render(value)
            reference = case.reference or ""
            if grounded_only and not _contains(prompt[-1].content, reference):
                built.skip("reference not in the passages the stack retrieved")
            else:
                group = case.metadata.get("group")
                built.examples.append(
                    TrainExample(
                        id=case.id,
                        group=group if isinstance(group, str) else None,
                        messages=[*prompt, ChatMessage(role="assistant", content=reference)],
                        metadata={"case_id": case.id, "tags": list(case.tags)},
                    )
                )
        if on_progress:
            on_progress(done, len(cases))
    if not built.examples:
        reasons = "; ".join(f"{n} {why}" for why, n in built.skipped.items())
        raise TrainDataError(f"dataset {version.ref} gives no training example ({reasons})")
    summary = stack.resolved.summary()
    built.lineage = {
        "eval_dataset": version.ref,
        "stack": stack.stack_name,
        "stack_version": stack.version,
        "node": name,
        "prompt": llm.prompt_version,
        "corpora": summary["corpora"],
        "prompts": summary["prompts"],
        "models": summary["models"],
    }
    return built


def _contains(text: str, part: str) -> bool:
    """Whether ``part`` occurs in ``text``, ignoring case and spacing."""
    return " ".join(part.lower().split()) in " ".join(text.lower().split())


def examples_from_traces(
    workspace: Workspace,
    stack_name: str,
    *,
    node: str | None = None,
    keep: TraceFilter | None = None,
    limit: int | None = None,
    replies: Mapping[str, str] | None = None,
) -> BuiltExamples:
    """One chat example per successful stored run of ``stack_name``: the messages its
    answering model step was sent (``node``, else the last model call) and the reply it gave.
    Refused answers are left out; ``keep`` chooses among the rest (all by default).
    ``replies`` maps trace ids to corrected answers that replace the model's reply (a
    corrected refusal is kept: the correction says it should have answered)."""
    with workspace.engine.connect() as connection:
        query = (
            select(traces)
            .where(traces.c.name == stack_name, traces.c.status == "ok")
            .order_by(traces.c.started_at)
        )
        trace_rows = [dict(r._mapping) for r in connection.execute(query)]
        built = BuiltExamples(examples=[])
        for trace in trace_rows:
            span_rows = [
                dict(r._mapping)
                for r in connection.execute(
                    select(spans)
                    .where(spans.c.trace_id == trace["trace_id"])
                    .order_by(spans.c.start_ns)
                )
            ]
            example = _trace_example(
                trace, span_rows, node, built, (replies or {}).get(trace["trace_id"])
            )
            if example is None:
                continue
            if keep is not None and not keep(trace, span_rows):
                built.skip("not chosen by the filter")
                continue
            if any(e.id == example.id for e in built.examples):
                built.skip("the same conversation again")
                continue
            built.examples.append(example)
            if limit is not None and len(built.examples) >= limit:
                break
    if not built.examples:
        reasons = "; ".join(f"{n} {why}" for why, n in built.skipped.items()) or "none stored"
        raise TrainDataError(f"no usable traces of stack {stack_name!r} ({reasons})")
    built.lineage = {"traces_of": stack_name, "traces": len(built.examples)}
    return built


def _trace_example(
    trace: dict[str, Any],
    span_rows: Sequence[dict[str, Any]],
    node: str | None,
    built: BuiltExamples,
    correction: str | None = None,
) -> TrainExample | None:
    if (trace.get("attributes") or {}).get("slmops.shadow_of"):
        built.skip("a shadow run (another version's answer, never sent)")
        return None
    root = next((s for s in span_rows if s["parent_id"] is None), None)
    refused = root is not None and _refused(root["attributes"].get("slmops.output"))
    if refused and correction is None:
        built.skip("refused")
        return None
    llm_spans = [s for s in span_rows if s["kind"] == "llm" and (node is None or s["name"] == node)]
    if not llm_spans:
        built.skip("no model call" + (f" named {node!r}" if node else ""))
        return None
    attributes = llm_spans[-1]["attributes"]
    try:
        sent = json.loads(attributes["gen_ai.prompt"])
        reply = correction if correction is not None else json.loads(attributes["slmops.output"])
        messages = [ChatMessage.model_validate(m) for m in sent]
    except (KeyError, ValueError, TypeError):  # a prompt cut to the attribute limit, say
        built.skip("prompt or reply not stored whole")
        return None
    if not isinstance(reply, str) or not reply.strip():
        built.skip("empty or structured reply")
        return None
    try:
        return TrainExample(
            messages=[*messages, ChatMessage(role="assistant", content=reply)],
            metadata={"trace_id": trace["trace_id"], "corrected": correction is not None},
        )
    except ValueError:
        built.skip("not a valid conversation")
        return None


def _refused(output: Any) -> bool:
    try:
        value = json.loads(output) if isinstance(output, str) else None
    except ValueError:
        return False
    return isinstance(value, dict) and bool(value.get("refused"))
