"""The one training loop (LoRA and full fine-tuning alike).

Seeded and repeatable: the data order depends on (seed, epoch) only and every random
generator is restored from a checkpoint, so a run resumed after Ctrl-C or ``kill -9`` ends
with the same weights as one that never stopped. The loss is computed only where there are
labels: the language-model head (49k x 576 for SmolLM2, a fifth of the model's compute)
projects the answer's positions, not the whole prompt's.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmops.errors import SlmopsError
from slmops.train.args import TrainArgs
from slmops.train.checkpoints import (
    CheckpointError,
    TrainState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from slmops.train.encoding import IGNORE, Encoded, epoch_batches
from slmops.train.model import Trainable

log = logging.getLogger("slmops.train")

StepCallback = Callable[[TrainState, dict[str, float]], None]


class DivergedError(SlmopsError):
    """The loss is no longer a finite number."""


EpochCallback = Callable[[TrainState, dict[str, float]], None]


@dataclass
class FitResult:
    state: TrainState
    output_weights: dict[str, Any]  # the trainable tensors to keep: best held-out, else last
    total_steps: int
    resumed_from: int | None = None
    seconds: float = 0.0
    heldout_losses: list[float] = field(default_factory=list)


def use_bf16(precision: str) -> bool:
    """bfloat16 autocast where asked, or where the CPU computes it natively ('auto')."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def concrete_args(args: TrainArgs) -> TrainArgs:
    """``args`` with 'auto' precision and default threads decided for this machine, as a run
    records them: a resumed run must compute exactly as it started, wherever it resumes."""
    return args.model_copy(
        update={
            "precision": "bf16" if use_bf16(args.precision) else "fp32",
            "threads": args.threads or os.cpu_count() or 1,
        }
    )


def total_optimizer_steps(batches_per_epoch: int, args: TrainArgs) -> int:
    total = args.epochs * math.ceil(batches_per_epoch / args.grad_accumulation)
    return min(total, args.max_steps) if args.max_steps else total


def learning_rate(step: int, total: int, args: TrainArgs) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak (a pure function of the step,
    so nothing about the schedule needs saving)."""
    warmup = math.ceil(total * args.warmup_ratio)
    if step < warmup:
        return args.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return args.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _tensors(batch: Sequence[Encoded], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return ids, labels, mask


def batch_loss(trainable: Trainable, batch: Sequence[Encoded], bf16: bool) -> tuple[Any, int]:
    """(summed token loss, labelled tokens) of one micro-batch."""
    import torch

    pad_id = trainable.tokenizer.pad_token_id
    ids, labels, mask = _tensors(
        batch, trainable.tokenizer.eos_token_id if pad_id is None else pad_id
    )
    lm = trainable.causal_lm
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]
        chosen = targets != IGNORE
        logits = lm.get_output_embeddings()(hidden[:, :-1][chosen])
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[chosen], reduction="sum")
    return loss, int(chosen.sum())


def heldout_loss(
    trainable: Trainable, examples: Sequence[Encoded], micro_batch_size: int, bf16: bool
) -> float:
    """Mean token loss on held-out examples (no dropout, no gradients)."""
    import torch

    trainable.model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    with torch.no_grad():
        for start in range(0, len(ordered), micro_batch_size):
            loss, n = batch_loss(trainable, ordered[start : start + micro_batch_size], bf16)
            total += float(loss)
            count += n
    trainable.model.train()
    return total / max(count, 1)


def _save_best(path: Path, weights: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(f".{path.name}.partial")
    save_file(weights, partial)
    partial.replace(path)


def fit(
    trainable: Trainable,
    train_set: Sequence[Encoded],
    heldout_set: Sequence[Encoded],
    args: TrainArgs,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train until the epochs are done, early stopping, ``max_steps`` or ``should_stop()``
    (checked after each optimizer step; a checkpoint is written before returning)."""
    import torch

    if not train_set:
        raise ValueError("no training examples")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    try:
        return _fit(
            trainable, train_set, heldout_set, args, run_dir, resume, on_step, on_epoch, should_stop
        )
    finally:
        torch.set_num_threads(threads)  # the process's other work (embedding) keeps its own


def _fit(
    trainable: Trainable,
    train_set: Sequence[Encoded],
    heldout_set: Sequence[Encoded],
    args: TrainArgs,
    run_dir: Path,
    resume: bool,
    on_step: StepCallback | None,
    on_epoch: EpochCallback | None,
    should_stop: Callable[[], bool] | None,
) -> FitResult:
    import torch
    from safetensors.torch import load_file

    bf16 = use_bf16(args.precision)
    parameters = trainable.trainable()
    optimizer = torch.optim.AdamW(
        list(parameters.values()), lr=args.learning_rate, weight_decay=args.weight_decay
    )
    checkpoints = run_dir / "checkpoints"
    best_path = run_dir / "best.safetensors"
    state, resumed_from = TrainState(), None
    existing = list_checkpoints(checkpoints) if resume else []
    for candidate in reversed(existing):  # the newest readable one (an older one is kept)
        try:
            state = load_checkpoint(candidate, parameters, optimizer)
        except CheckpointError as exc:
            log.warning("%s; trying the one before it", exc)
            continue
        resumed_from = state.step
        break
    else:
        if existing:
            raise CheckpointError(f"no checkpoint of {run_dir.name} can be read; start again")
    best: dict[str, Any] | None = load_file(best_path) if resume and best_path.is_file() else None
    batches_per_epoch = len(epoch_batches(train_set, args.micro_batch_size, args.seed, 0))
    total = total_optimizer_steps(batches_per_epoch, args)
    started = time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(checkpoints, state, parameters, optimizer)

    def end_epoch() -> None:
        nonlocal best
        metrics: dict[str, float] = {"epoch": float(state.epoch + 1)}
        if heldout_set:
            loss = heldout_loss(trainable, heldout_set, args.micro_batch_size, bf16)
            metrics["heldout_loss"] = loss
            if state.best_heldout_loss is None or loss < state.best_heldout_loss:
                state.best_heldout_loss, state.best_epoch = loss, state.epoch + 1
                state.epochs_without_improvement = 0
                best = {k: v.detach().clone() for k, v in parameters.items()}
                _save_best(best_path, best)
            else:
                state.epochs_without_improvement += 1
        if on_epoch:
            on_epoch(state, metrics)

    while not state.finished:
        if state.epoch >= args.epochs:
            state.finished, state.stop_reason = True, "epochs done"
            break
        batches = epoch_batches(train_set, args.micro_batch_size, args.seed, state.epoch)
        while state.batch < len(batches):
            group = batches[state.batch : state.batch + args.grad_accumulation]
            items = [[train_set[i] for i in micro] for micro in group]
            labelled = sum(e.trained_tokens for micro in items for e in micro)
            tokens = sum(len(e.input_ids) for micro in items for e in micro)
            step_started = time.perf_counter()
            loss_sum = 0.0
            for micro in items:
                loss, _ = batch_loss(trainable, micro, bf16)
                (loss / labelled).backward()
                loss_sum += float(loss.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(
                list(parameters.values()), args.max_grad_norm
            )
            if not (math.isfinite(loss_sum) and math.isfinite(float(grad_norm))):
                raise DivergedError(
                    f"the loss became {loss_sum / labelled} at step {state.step + 1} (gradient "
                    f"norm {float(grad_norm)}): lower --lr, or check the data; the last "
                    "checkpoint is intact"
                )
            rate = learning_rate(state.step, total, args)
            for group_params in optimizer.param_groups:
                group_params["lr"] = rate
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch += len(group)
            state.tokens += tokens
            if on_step:
                seconds = time.perf_counter() - step_started
                on_step(
                    state,
                    {
                        "train_loss": loss_sum / labelled,
                        "learning_rate": rate,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": tokens / seconds,
                        "total_steps": float(total),
                    },
                )
            if args.max_steps and state.step >= args.max_steps:
                state.finished, state.stop_reason = True, "max_steps"
                break
            if should_stop and should_stop():
                checkpoint()
                return FitResult(state, {}, total, resumed_from, time.perf_counter() - started)
            if state.step % args.checkpoint_every == 0:
                checkpoint()
        end_epoch()
        patience = args.early_stop_patience
        if patience and state.epochs_without_improvement >= patience and not state.finished:
            state.finished, state.stop_reason = True, "early stop"
        state.epoch, state.batch = state.epoch + 1, 0
        checkpoint()
    output = best if best is not None else {k: v.detach().clone() for k, v in parameters.items()}
    return FitResult(
        state,
        output,
        total,
        resumed_from,
        time.perf_counter() - started,
    )
