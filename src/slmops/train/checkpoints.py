"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is a folder ``step-NNNNNN`` holding the trainable weights (safetensors), the
optimizer's state (tensors only, loaded with ``weights_only``), and ``state.json``: the step,
the data cursor (epoch and next micro-batch), the random generators' states and the
early-stopping record. It is written under a temporary name and renamed when complete, so a
crash (even ``kill -9``) never leaves a half checkpoint under a real name.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slmops.errors import SlmopsError

KEEP = 2  # checkpoints kept per run: the newest, and one before it in case it is damaged


class CheckpointError(SlmopsError):
    """A checkpoint cannot be written or read back."""


@dataclass
class TrainState:
    """Where a run is: restored from a checkpoint, it continues with the same next batch."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # the next micro-batch of that epoch
    tokens: int = 0  # tokens trained on so far
    best_heldout_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    finished: bool = False
    stop_reason: str | None = None


def _name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial ones start with a dot and are skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())


def save_checkpoint(
    folder: Path, state: TrainState, trainable: dict[str, Any], optimizer: Any
) -> Path:
    import torch
    from safetensors.torch import save_file

    target = folder / _name(state.step)
    partial = folder / f".{_name(state.step)}.{uuid.uuid4().hex[:8]}.partial"
    try:
        partial.mkdir(parents=True)
        save_file(
            {k: v.detach().contiguous() for k, v in trainable.items()},
            partial / "trainable.safetensors",
        )
        torch.save(
            {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
            partial / "optimizer.pt",
        )
        record = {"state": asdict(state), "python_rng": _python_rng_to_json(random.getstate())}
        (partial / "state.json").write_text(json.dumps(record), encoding="utf-8")
        if target.exists():  # the same step written before a crash: replace it
            shutil.rmtree(target)
        partial.rename(target)
    except Exception as exc:  # a full disk surfaces as OSError or as torch's RuntimeError
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {target}: {exc}") from exc
    for old in list_checkpoints(folder)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, trainable: dict[str, Any], optimizer: Any) -> TrainState:
    """Put the weights, optimizer state and random generators back; returns the state."""
    import torch
    from safetensors.torch import load_file

    try:
        record = json.loads((path / "state.json").read_text(encoding="utf-8"))
        weights = load_file(path / "trainable.safetensors")
        saved = torch.load(path / "optimizer.pt", weights_only=True)
        state = TrainState(**record["state"])
        python_rng = _python_rng_from_json(record["python_rng"])
    except Exception as exc:  # safetensors, pickle and JSON each raise their own
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    missing = sorted(set(trainable) - set(weights))
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {len(missing)} trainable tensors (e.g. {missing[0]}); "
            "it was written for other settings"
        )
    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(weights[name])
    try:
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this run: {exc}") from exc
    random.setstate(python_rng)
    return state


def _python_rng_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(value: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)
