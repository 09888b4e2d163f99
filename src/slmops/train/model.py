"""The model being trained, with LoRA plugged in through two hooks: which parameters train,
and which are saved. Everything else (the loop, checkpoints, export) is the same for LoRA
and full fine-tuning."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmops.errors import ConfigError, ModelError
from slmops.train.args import FULL_FINETUNE_MAX_PARAMETERS, TrainArgs

ADAPTER_FOLDER = "adapter"  # PEFT's own format: adapter_config.json + adapter_model.safetensors
MODEL_FOLDER = "model"  # a full fine-tune: a transformers checkpoint


@dataclass
class Trainable:
    """A loaded model ready to train (``model``: the PEFT wrapper or the plain model)."""

    model: Any
    tokenizer: Any
    method: str
    parameters: int
    trainable_parameters: int

    @property
    def causal_lm(self) -> Any:
        """The transformers causal LM inside (the LoRA layers are injected into it)."""
        return self.model.get_base_model() if self.method == "lora" else self.model

    def trainable(self) -> dict[str, Any]:
        """The parameters that train, by name: what the optimizer steps and a checkpoint
        saves (hook 1 and 2)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}


def load_trainable(checkpoint: Path, args: TrainArgs) -> Trainable:
    """The base checkpoint with adapters attached (``lora``) or all weights trainable
    (``full``); adapters are initialised from ``args.seed``."""
    import torch

    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(
            "fine-tuning needs the 'train' extra: pip install 'slmops[train]'"
        ) from exc
    torch.manual_seed(args.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the base checkpoint {checkpoint}: {exc}") from exc
    if getattr(model.config, "model_type", None) != "llama":
        raise ModelError(
            f"base {checkpoint} is a {model.config.model_type!r} model; slmops fine-tunes and "
            "exports Llama-architecture models (SmolLM2, Llama, TinyLlama, ...)"
        )
    parameters = sum(p.numel() for p in model.parameters())
    if args.method == "full":
        if parameters > FULL_FINETUNE_MAX_PARAMETERS:
            raise ConfigError(
                "full fine-tuning is for models of at most "
                f"{FULL_FINETUNE_MAX_PARAMETERS:,} parameters; this one has {parameters:,}: "
                "use --method lora"
            )
        model.train()
        return Trainable(model, tokenizer, "full", parameters, parameters)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora.r,
        lora_alpha=args.lora.alpha,
        lora_dropout=args.lora.dropout,
        target_modules=list(args.lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # PEFT calls an API transformers has deprecated
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    peft_model.train()
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return Trainable(peft_model, tokenizer, "lora", parameters, trainable)


def save_output(trainable: Trainable, folder: Path, run_id: str) -> Path:
    """The run's result in the format its tools read: a PEFT adapter folder, or a full
    transformers checkpoint (with the tokenizer), recording the run it came from."""
    if trainable.method == "lora":
        target = folder / ADAPTER_FOLDER
        trainable.model.save_pretrained(target)
    else:
        target = folder / MODEL_FOLDER
        trainable.model.save_pretrained(target)
        trainable.tokenizer.save_pretrained(target)
    (target / "slmops-run.json").write_text(json.dumps({"run_id": run_id}), encoding="utf-8")
    return target
