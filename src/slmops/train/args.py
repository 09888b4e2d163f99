"""Training settings as small typed classes (validated together: every problem is reported in
one error). Their field docstrings are the documentation; the CLI's help repeats them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slmops.errors import ConfigError

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FULL_FINETUNE_MAX_PARAMETERS = 200_000_000


class LoraArgs(BaseModel):
    """Low-rank adapters on the model's linear projections."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    r: int = Field(16, ge=1, le=512)
    """Rank of each adapter."""
    alpha: int = Field(32, ge=1)
    """Scale numerator: updates are multiplied by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapters' input during training."""
    targets: tuple[str, ...] = LLAMA_PROJECTIONS
    """Module names that get adapters (the attention and MLP projections by default). The
    embeddings are not adaptable: llama.cpp cannot apply an adapter to tied embeddings."""

    @model_validator(mode="after")
    def _known_targets(self) -> LoraArgs:
        unknown = [t for t in self.targets if t not in LLAMA_PROJECTIONS]
        if unknown or not self.targets:
            raise ValueError(
                f"targets {unknown or '()'} are not projections; choose from "
                + ", ".join(LLAMA_PROJECTIONS)
            )
        return self


class TrainArgs(BaseModel):
    """How a run trains. Defaults suit a ~135M model on a laptop CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    method: Literal["lora", "full"] = "lora"
    """'lora' trains adapters; 'full' trains every weight (models of at most 200M parameters)."""
    epochs: int = Field(2, ge=1, le=100)
    """Passes over the training split."""
    learning_rate: float = Field(2e-4, gt=0, le=1)
    """Peak learning rate (AdamW), after a linear warm-up, then cosine decay."""
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    """Share of the optimizer steps spent warming the learning rate up."""
    weight_decay: float = Field(0.0, ge=0, lt=1)
    """AdamW weight decay."""
    micro_batch_size: int = Field(4, ge=1, le=256)
    """Examples per forward pass (grouped by length, so little padding is computed)."""
    grad_accumulation: int = Field(2, ge=1, le=256)
    """Micro-batches per optimizer step: the batch is micro_batch_size x grad_accumulation."""
    max_seq_tokens: int = Field(1024, ge=16, le=32768)
    """Examples longer than this many tokens are left out (and counted)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping."""
    seed: int = 0
    """Seeds the data order, adapter initialisation and dropout: same seed, same weights."""
    checkpoint_every: int = Field(20, ge=1)
    """Optimizer steps between checkpoints (one is also written at each epoch's end)."""
    early_stop_patience: int | None = Field(2, ge=1)
    """Stop after this many epochs without a better held-out loss (None: never)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'bf16' computes in bfloat16 with float32 weights (about 1.5x faster where the CPU has
    AVX512-BF16 or AMX); 'auto' picks it when the CPU has them."""
    threads: int | None = Field(None, ge=1)
    """Torch threads (default: the machine's cores)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (for trials)."""
    lora: LoraArgs = LoraArgs()


def check_args(values: dict[str, object]) -> TrainArgs:
    """``TrainArgs`` from plain values, every problem named in one error."""
    try:
        return TrainArgs.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'args'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors()
        )
        raise ConfigError(f"training arguments: {problems}") from None
