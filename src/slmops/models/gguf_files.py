"""Writing GGUF files llama.cpp loads: a Llama model's weights, a LoRA adapter, quantized
copies. llama.cpp's conventions (from its converters and loader) that matter here:

- tensor names: ``token_embd``, ``output_norm``, ``blk.N.attn_q`` ... (see ``_LAYER_NAMES``);
  no ``output.weight`` when the embeddings are tied;
- the rows of the Q and K projections are permuted (rotary halves interleaved), K's with the
  number of key/value heads;
- 1-D tensors (the norms) must be float32;
- an adapter is ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``,
  with ``NAME.lora_a`` (r x in) and ``NAME.lora_b`` (out x r, rows permuted like the base's
  for Q and K); llama.cpp scales it by alpha / r;
- metadata (hyper-parameters, tokenizer, chat template) is copied from the base GGUF, so the
  new file tokenizes and formats chats exactly like the base.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slmops.errors import ModelError, ModelUnavailableError

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")
_SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.file_type", "general.alignment")

# llama.cpp's file types (llama.h LLAMA_FTYPE_*), by the name slmops' export formats use
QUANT_TYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q4_k_m": 15, "q5_k_m": 17}


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's name for a transformers Llama tensor (None for ``lm_head`` when tied)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    match = _LAYER.match(hf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    return None


def permute_rows(weight: Any, heads: int) -> Any:
    """llama.cpp's row order for a Q or K projection (or a LoRA B matrix of one)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class _Template:
    """The base GGUF a new file copies: its metadata and its tensors' names and shapes."""

    def __init__(self, path: Path) -> None:
        import gguf

        try:
            self.reader = gguf.GGUFReader(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a readable GGUF file: {exc}") from exc
        self.path = path
        self.arch = str(self.field("general.architecture"))
        if self.arch != "llama":
            raise ModelError(f"{path} is a {self.arch!r} model; export supports 'llama'")
        self.heads = int(self.field("llama.attention.head_count"))
        self.kv_heads = int(self.field("llama.attention.head_count_kv", self.heads))
        # ggml lists shapes innermost first; numpy (and transformers) the other way round
        self.shapes = {
            t.name: tuple(int(d) for d in reversed(t.shape)) for t in self.reader.tensors
        }

    def field(self, key: str, default: Any = None) -> Any:
        found = self.reader.get_field(key)
        if found is None:
            if default is None:
                raise ModelError(f"{self.path} has no {key!r} metadata")
            return default
        return found.contents()

    def writer(self, path: Path, metadata: Mapping[str, str]) -> Any:
        import gguf

        writer = gguf.GGUFWriter(path, self.arch)
        for field in self.reader.fields.values():
            if field.name.startswith(_SKIPPED_KEYS) or field.name in metadata:
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        alignment = self.reader.get_field("general.alignment")
        if alignment is not None:
            writer.add_custom_alignment(int(alignment.contents()))
        for key, value in metadata.items():
            writer.add_string(key, value)
        return writer


@functools.lru_cache(maxsize=4)
def _cached_template(path: str, _size: int, _mtime_ns: int) -> _Template:
    return _Template(Path(path))


def _template(path: Path) -> _Template:
    """The template for ``path``, read once per process while the file is unchanged (gguf-py
    takes seconds to parse a 49k-token vocabulary)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"GGUF file {path} cannot be read: {exc}") from exc
    return _cached_template(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _partial(path: Path) -> Path:
    """A unique temporary name beside ``path``: two writers never share one."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def _abandon(writer: Any, partial: Path) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    partial.unlink(missing_ok=True)


def write_model_gguf(
    weights: Mapping[str, Any],
    template: Path,
    path: Path,
    *,
    dtype: str = "f16",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A Llama model's transformers weights (numpy float32 arrays by name) as a GGUF with the
    template's metadata and exactly its tensors (names and shapes are checked)."""
    import gguf
    import numpy as np

    base = _template(template)
    tensors: dict[str, Any] = {}
    for hf_name, value in weights.items():
        name = gguf_name(hf_name)
        if name is None:
            raise ModelError(f"tensor {hf_name!r} has no llama.cpp name")
        if name == "output.weight" and name not in base.shapes:
            continue  # tied to the embeddings, as in the base
        array = np.asarray(value, dtype=np.float32)
        if name.endswith("attn_q.weight"):
            array = permute_rows(array, base.heads)
        elif name.endswith("attn_k.weight"):
            array = permute_rows(array, base.kv_heads)
        tensors[name] = array
    if set(tensors) != set(base.shapes):
        missing = sorted(set(base.shapes) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(base.shapes))[:3]
        raise ModelError(
            f"the weights do not match {template.name}'s tensors (missing {missing}, extra {extra})"
        )
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}[dtype]
    for name, shape in base.shapes.items():
        if tensors[name].shape != shape:
            raise ModelError(f"tensor {name} has shape {tensors[name].shape}; the base has {shape}")
    partial = _partial(path)
    writer = base.writer(partial, dict(metadata or {}))
    try:
        writer.add_file_type(file_type)
        for name in base.shapes:
            array = tensors[name]
            # norms and other vectors stay float32: llama.cpp's CPU kernels need them so
            writer.add_tensor(
                name, array if array.ndim == 1 or dtype == "f32" else array.astype(np.float16)
            )
        _finish(writer)
        partial.replace(path)
    except BaseException:
        _abandon(writer, partial)
        raise
    return path


def write_adapter_gguf(
    lora: Mapping[str, tuple[Any, Any]],
    alpha: float,
    template: Path,
    path: Path,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """LoRA matrices ``{hf base tensor name: (A (r x in), B (out x r))}`` as a llama.cpp
    adapter for the template's model."""
    import gguf
    import numpy as np

    base = _template(template)
    checked: list[tuple[str, Any, Any]] = []
    for hf_name, (a, b) in sorted(lora.items()):
        name = gguf_name(hf_name)
        if name is None or name not in base.shapes or name.startswith(("token_embd", "output")):
            raise ModelError(f"an adapter on {hf_name!r} cannot be applied by llama.cpp")
        a = np.asarray(a, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        out_features, in_features = base.shapes[name]
        if a.shape[1] != in_features or b.shape[0] != out_features or a.shape[0] != b.shape[1]:
            raise ModelError(f"adapter for {name}: shapes {a.shape}/{b.shape} do not fit the base")
        if name.endswith("attn_q.weight"):
            b = permute_rows(b, base.heads)
        elif name.endswith("attn_k.weight"):
            b = permute_rows(b, base.kv_heads)
        checked.append((name, a, b))
    partial = _partial(path)
    writer = gguf.GGUFWriter(partial, base.arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for key, value in (metadata or {}).items():
            writer.add_string(key, value)
        for name, a, b in checked:
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)
        _finish(writer)
        partial.replace(path)
    except BaseException:
        _abandon(writer, partial)
        raise
    return path


def check_adapter(adapter: Path, base: Path) -> None:
    """Raise ModelError unless llama.cpp can apply ``adapter`` to ``base``. Checked here
    because llama-cpp-python 0.3.36 crashes the process on an adapter it cannot load."""
    import gguf

    try:
        reader = gguf.GGUFReader(adapter)
    except (OSError, ValueError) as exc:
        raise ModelError(f"adapter {adapter} is not a readable GGUF file: {exc}") from exc

    def field(key: str) -> Any:
        found = reader.get_field(key)
        return None if found is None else found.contents()

    if field("general.type") != "adapter" or field("adapter.type") != "lora":
        raise ModelError(f"{adapter} is not a LoRA adapter GGUF (general.type/adapter.type)")
    model = _template(base)
    if field("general.architecture") != model.arch:
        raise ModelError(f"adapter {adapter.name} is for {field('general.architecture')!r} models")
    for tensor in reader.tensors:
        target, _, part = tensor.name.rpartition(".")
        if part not in ("lora_a", "lora_b") or target not in model.shapes:
            raise ModelError(f"adapter tensor {tensor.name!r} has no place in {base.name}")
        if target.startswith(("token_embd", "output")):
            raise ModelError(f"adapter tensor {tensor.name!r}: embeddings cannot be adapted")
        rows, cols = model.shapes[target]
        shape = tuple(int(d) for d in reversed(tensor.shape))
        fits = shape[1] == cols if part == "lora_a" else shape[0] == rows
        if not fits:
            raise ModelError(f"adapter tensor {tensor.name} {shape} does not fit {base.name}")


def llama_cpp_bindings(purpose: str) -> Any:
    """llama-cpp-python's C bindings, needed for quantizing and scoring GGUF files only (the
    ``train`` extra: it compiles llama.cpp, which serving no longer needs)."""
    try:
        import llama_cpp
    except ImportError:
        raise ModelUnavailableError(
            f"{purpose} needs llama-cpp-python (the 'train' extra): pip install 'slmops[train]'"
        ) from None
    return llama_cpp


def quantize_gguf(source: Path, path: Path, quant: str, *, threads: int = 0) -> Path:
    """llama.cpp's own quantizer (the one ``llama-quantize`` runs) on a float GGUF file.
    Rows too narrow for a K-quant fall back to another type, as llama.cpp decides."""
    llama_cpp = llama_cpp_bindings("quantizing a GGUF file")
    from llama_cpp._utils import suppress_stdout_stderr

    if quant not in QUANT_TYPES:
        raise ModelError(f"unknown quantization {quant!r}; known: {', '.join(QUANT_TYPES)}")
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant]
    params.nthread = threads
    partial = _partial(path)
    with suppress_stdout_stderr(disable=False):  # llama.cpp logs every tensor it converts
        code = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
    if code != 0:
        partial.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not quantize {source.name} to {quant} (code {code})")
    partial.replace(path)
    return path
