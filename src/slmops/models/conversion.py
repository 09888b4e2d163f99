"""Turn a GGUF file into a transformers checkpoint (extra ``hf``): the starting point for
fine-tuning the shipped model, which ships only as GGUF."""

from __future__ import annotations

from pathlib import Path

from slmops.errors import ModelError, ModelUnavailableError


def gguf_to_transformers(gguf_path: str | Path, output_dir: str | Path) -> Path:
    """Dequantize ``gguf_path`` into a float32 checkpoint folder ``output_dir``."""
    source = Path(gguf_path)
    if not source.is_file():
        raise ModelUnavailableError(f"GGUF file {source} does not exist")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError("converting GGUF needs the 'hf' extra: pip install 'slmops[hf]'") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    except (ValueError, OSError, ImportError) as exc:
        raise ModelError(f"transformers cannot read {source}: {exc}") from exc
    # A model loaded from GGUF remembers its quantizer and refuses save_pretrained(); a fresh
    # model built from the same config and given the dequantized weights saves normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    target = Path(output_dir)
    target.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
