"""Model cards: a Markdown page per version, written from what the registry, the training run
and the evaluations recorded (after Mitchell et al., "Model Cards for Model Reporting"). The
card is the version's MLflow description: the MLflow UI shows it, ``slmops model card`` edits
it, and each promotion appends its evaluation, so a user's edits are kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slmops.eval.compare import Comparison
from slmops.registry.store import ModelVersion
from slmops.train.tracking import TrackedRun

_SMALL_MODEL_LIMITS = (
    "A model of this size knows little beyond what it is given and reasons poorly: rely on it "
    "to answer from retrieved passages with citations (and refusals), not from memory. "
    "Answers outside the training data's task and domain are not evaluated here."
)


# GGUF metadata value types (the GGUF spec, versions 2 and 3) with a fixed size in bytes;
# 8 is a string, 9 an array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_string(path: str, key: str) -> str | None:
    """The string metadata ``key`` of a GGUF file, None when the file does not have it.

    Reads the header only and steps over every other value without decoding it:
    ``gguf.GGUFReader`` decodes all of them, the tokenizer's 50k-token vocabulary included,
    which took seconds per registration. Raises ValueError for a file that is not GGUF
    version 2 or 3 (or is cut short)."""
    wanted = key.encode()
    with Path(path).open("rb") as handle:
        end = os.fstat(handle.fileno()).st_size

        def read(size: int) -> bytes:
            # A damaged length must not make read() allocate more than the file holds.
            if size > end - handle.tell():
                raise ValueError(f"{path}: the GGUF header is cut short")
            return handle.read(size)

        def unpack(layout: str) -> tuple[int, ...]:
            return struct.unpack(layout, read(struct.calcsize(layout)))

        def skip(kind: int) -> None:
            if kind in _GGUF_SIZES:
                handle.seek(_GGUF_SIZES[kind], 1)
            elif kind == _GGUF_STRING:
                handle.seek(unpack("<Q")[0], 1)
            elif kind == _GGUF_ARRAY:
                item, count = unpack("<IQ")
                if item in _GGUF_SIZES:
                    handle.seek(_GGUF_SIZES[item] * count, 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                raise ValueError(f"{path}: unknown GGUF value type {kind}")

        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        (version,) = unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not read here")
        _tensors, fields = unpack("<QQ")
        for _ in range(fields):
            name = read(unpack("<Q")[0])
            (kind,) = unpack("<I")
            if name == wanted:
                if kind != _GGUF_STRING:
                    return None
                return read(unpack("<Q")[0]).decode("utf-8", errors="replace")
            skip(kind)
    return None


def _license(base_gguf: str | None) -> str:
    if not base_gguf:
        return "see the base model's own card"
    try:
        found = _gguf_string(base_gguf, "general.license")
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested madly
        return "see the base model's own card"
    return found if found is not None else "not stated in the base file"


def render_card(
    version: ModelVersion,
    *,
    intended_use: str = "",
    run: TrackedRun | None = None,
    run_spec: Mapping[str, Any] | None = None,
) -> str:
    """The card of a newly registered version."""
    spec = run_spec or {}
    base = spec.get("base", {})
    lines = [
        f"# {version.name} version {version.version}",
        "",
        "## Intended use",
        "",
        intended_use
        or (
            f"Answering the task of training dataset {spec['dataset']['ref']} "
            f"(from {json.dumps(spec['dataset'].get('lineage', {}))})."
            if spec
            else "Not stated: write it with `slmops model card " + version.ref + " --edit`."
        ),
        "",
        "## Model",
        "",
        f"- Weights: `{version.uri}` ({version.tags.get('slmops.format', '?')}), "
        f"{version.sha256 or 'a remote server: nothing local to pin'}",
        f"- Registered from: `{version.tags.get('slmops.registered_from', version.source)}`",
    ]
    if base:
        lines += [
            f"- Base model: `{base.get('uri')}` ({base.get('digest')})",
            f"- License of the base: {_license(base.get('gguf'))}",
        ]
    elif version.uri.startswith("gguf:"):
        weights = version.uri.removeprefix("gguf:").partition("+adapter:")[0]
        lines.append(f"- License (from the GGUF file): {_license(weights)}")
    if run is not None:
        params, metrics = run.params, run.metrics
        lines += [
            "",
            "## Training",
            "",
            f"- Run: `{run.run_id}` (experiment {run.experiment}), {run.status.lower()}",
            f"- Data: {params.get('data')} ({params.get('train_examples')} training, "
            f"{params.get('heldout_examples')} held-out examples), sha256 "
            f"{params.get('data_sha256', '')[:12]}",
            f"- Method: {params.get('method')}, LoRA r={params.get('lora.r')} "
            f"alpha={params.get('lora.alpha')}, {params.get('epochs')} epochs at learning rate "
            f"{params.get('learning_rate')}, batch {params.get('micro_batch_size')}x"
            f"{params.get('grad_accumulation')}, seed {params.get('seed')}",
            f"- Final training loss {metrics.get('final_train_loss', float('nan')):.4f}, best "
            f"held-out loss {metrics.get('best_heldout_loss', float('nan')):.4f}",
            f"- Lineage: prompt {run.tags.get('slmops.prompt', '-')}, corpora "
            f"{run.tags.get('slmops.corpora', '-')}, code {run.tags.get('slmops.code', '-')}",
        ]
    lines += ["", "## Limitations", "", _SMALL_MODEL_LIMITS, "", "## Evaluations", ""]
    lines.append("None yet: `slmops model promote` evaluates a version and records it here.")
    return "\n".join(lines) + "\n"


def evaluation_section(
    *,
    dataset: str,
    stack: str,
    summary: Mapping[str, Any],
    run_id: str,
    comparison: Comparison | None,
    against: str | None,
    gates: Sequence[tuple[str, bool, str]],
    promoted_to: str | None,
) -> str:
    """What one promotion measured, as a card section."""
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = f"### {dataset} on stack {stack}, {when} (eval run `{run_id[:12]}`)"
    lines = [head, ""]
    deltas = {d.metric: d for d in comparison.deltas} if comparison else {}
    if comparison is not None:
        lines.append(f"| metric | this version | {against} | change | 95% interval |")
        lines.append("| --- | --- | --- | --- | --- |")
    else:
        lines.append("| metric | this version |")
        lines.append("| --- | --- |")
    for key, metric in summary.get("metrics", {}).items():
        mean = metric.get("mean")
        if mean is None:
            continue
        d = deltas.get(key)
        if comparison is not None and d is not None:
            interval = f"[{d.low:+.3f}, {d.high:+.3f}]"
            lines.append(f"| {key} | {mean:.3f} | {d.a:.3f} | {d.delta:+.3f} | {interval} |")
        elif comparison is not None:
            lines.append(f"| {key} | {mean:.3f} | | | |")
        else:
            lines.append(f"| {key} | {mean:.3f} |")
    for name in ("p50_latency_ms", "p95_latency_ms"):
        if summary.get(name) is not None:
            lines.append(
                f"| {name} | {summary[name]:.0f} |" + (" | | |" if comparison is not None else "")
            )
    attacks = summary.get("attack_success_by_category")
    if attacks:
        lines += [
            "",
            "Red-team attack success by category: "
            + ", ".join(f"{category} {rate:.2f}" for category, rate in attacks.items()),
        ]
    if gates:
        lines += ["", "Gates:"] + [
            f"- {'passed' if ok else 'FAILED'}: {text} ({detail})" for text, ok, detail in gates
        ]
    lines += ["", f"Promoted to `{promoted_to}`." if promoted_to else "Not promoted.", ""]
    return "\n".join(lines)


def append_evaluation(card: str, section: str) -> str:
    placeholder = "None yet: `slmops model promote` evaluates a version and records it here.\n"
    body = card.replace(placeholder, "") if placeholder in card else card
    if "## Evaluations" not in body:
        body = body.rstrip() + "\n\n## Evaluations\n\n"
    return body.rstrip() + "\n\n" + section
