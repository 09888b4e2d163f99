"""A tiny Llama GGUF for fast training tests: the shipped SmolLM2 file's tokenizer, chat
template and metadata, with 2 layers of 64 dimensions of seeded random weights. It takes the
same path as the real model (dequantized by transformers, trained, exported, run by
llama.cpp) in seconds."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from slmops.models.gguf_files import permute_rows
from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

EMBED, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
_HYPER = {
    "llama.block_count": LAYERS,
    "llama.embedding_length": EMBED,
    "llama.feed_forward_length": FFN,
    "llama.attention.head_count": HEADS,
    "llama.attention.head_count_kv": KV_HEADS,
    "llama.rope.dimension_count": EMBED // HEADS,
    "llama.context_length": 4096,
}


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    shipped = gguf.GGUFReader(shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"]))
    vocab = len(shipped.get_field("tokenizer.ggml.tokens").data)
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32)

    writer = gguf.GGUFWriter(path, "llama")
    for field in shipped.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture",):
            continue
        if field.name in _HYPER or field.name == "general.file_type":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for key, value in _HYPER.items():
        writer.add_uint32(key, value)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    head = EMBED // HEADS
    writer.add_tensor("token_embd.weight", weight(vocab, EMBED))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    for layer in range(LAYERS):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", permute_rows(weight(EMBED, EMBED), HEADS))
        writer.add_tensor(
            f"{blk}.attn_k.weight", permute_rows(weight(KV_HEADS * head, EMBED), KV_HEADS)
        )
        writer.add_tensor(f"{blk}.attn_v.weight", weight(KV_HEADS * head, EMBED))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(FFN, EMBED))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(FFN, EMBED))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(EMBED, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
