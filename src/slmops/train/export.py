"""Exports of a finished run: files llama.cpp runs (the merged model as GGUF, or the LoRA
adapter as a GGUF adapter applied to the base at load time) and a merged transformers
checkpoint. Every GGUF records the run it came from in its metadata."""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmops.errors import ConfigError, ModelError
from slmops.models.fingerprint import model_digest
from slmops.models.gguf_files import (
    QUANT_TYPES,
    write_adapter_gguf,
    write_model_gguf,
)
from slmops.models.gguf_files import quantize_gguf as _quantize
from slmops.store.workspace import Workspace
from slmops.train.base import SOURCE_FILE, source_gguf
from slmops.train.model import ADAPTER_FOLDER, MODEL_FOLDER
from slmops.train.runs import read_run_file, run_dir

FORMATS = ("gguf-f16", *(f"gguf-{q}" for q in QUANT_TYPES), "adapter", "hf")


@dataclass(frozen=True)
class Export:
    run_id: str
    format: str
    path: Path
    sha256: str
    size_bytes: int
    model_uri: str  # how to name it wherever a model is asked for


def _sha256(path: Path) -> str:
    """The same digest a lock or the registry computes for these weights."""
    digest = model_digest(f"{'gguf' if path.is_file() else 'hf'}:{path}")
    return (digest or "").removeprefix("sha256:")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class RunExporter:
    """Exports of one finished run, found by its ``run.json``."""

    def __init__(self, workspace: Workspace, run_id: str) -> None:
        self.workspace = workspace
        self.spec = read_run_file(workspace, run_id)
        self.run_id = self.spec["run_id"]
        self.folder = run_dir(workspace, self.run_id)
        self.method = self.spec["args"].get("method", "lora")
        output = self.folder / (ADAPTER_FOLDER if self.method == "lora" else MODEL_FOLDER)
        if not output.is_dir():
            raise ConfigError(
                f"training run {self.run_id[:12]} has no result yet (it did not finish); "
                f"resume it with: slmops train run --resume {self.run_id[:12]}"
            )
        self.output = output
        base_checkpoint = Path(self.spec["base"]["checkpoint"])
        template = self.spec["base"].get("gguf") or source_gguf(base_checkpoint)
        self.template = Path(template) if template else None
        self.base_checkpoint = base_checkpoint

    def metadata(self) -> dict[str, str]:
        return {
            "general.name": f"{self.spec['experiment']} (slmops run {self.run_id[:12]})",
            "slmops.train.run_id": self.run_id,
            "slmops.train.base": self.spec["base"]["uri"],
            "slmops.train.base_digest": self.spec["base"]["digest"],
            "slmops.train.dataset": self.spec["dataset"]["ref"],
        }

    def default_path(self, fmt: str) -> Path:
        stem = f"{self.spec['experiment']}-{self.run_id[:8]}"
        suffix = {"hf": "", "adapter": "-adapter.gguf"}.get(
            fmt, f"-{fmt.removeprefix('gguf-')}.gguf"
        )
        return self.workspace.home / "exports" / f"{stem}{suffix}"

    def _need_template(self) -> Path:
        if self.template is None or not self.template.is_file():
            raise ConfigError(
                f"run {self.run_id[:12]}'s base {self.spec['base']['uri']} came with no GGUF to "
                "copy the tokenizer and metadata from; export --format hf and convert that "
                "folder with llama.cpp's convert_hf_to_gguf.py"
            )
        return self.template

    def merged_weights(self) -> tuple[Any, Any]:
        """(the merged model, its tokenizer): base plus adapter, or the fully tuned model."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.method == "full":
            model = AutoModelForCausalLM.from_pretrained(self.output, dtype=torch.float32)
            return model, AutoTokenizer.from_pretrained(self.output)
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(self.base_checkpoint, dtype=torch.float32)
        with warnings.catch_warnings():  # PEFT calls an API transformers has deprecated
            warnings.filterwarnings("ignore", category=FutureWarning)
            merged = PeftModel.from_pretrained(base, self.output).merge_and_unload()
        return merged, AutoTokenizer.from_pretrained(self.base_checkpoint)

    def export(self, fmt: str, path: Path | None = None) -> Export:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
        target = (path or self.default_path(fmt)).expanduser().resolve()
        exports = (self.workspace.home / "exports").resolve()
        if target.exists() and exports not in target.parents:
            raise ConfigError(f"{target} exists; remove it or choose another --output")
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "hf":
            self._export_hf(target)
            uri = f"hf:{target}"
        elif fmt == "adapter":
            self._export_adapter(target)
            uri = f"gguf:{self._need_template()}+adapter:{target}"
            if self.spec["base"]["uri"].startswith("local:"):
                uri = f"{self.spec['base']['uri']}+adapter:{target}"
        else:
            self._export_gguf(fmt.removeprefix("gguf-"), target)
            uri = f"gguf:{target}"
        return Export(self.run_id, fmt, target, _sha256(target), _size(target), uri)

    def _export_gguf(self, kind: str, target: Path) -> None:
        template = self._need_template()
        model, _ = self.merged_weights()
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        if kind == "f16":
            write_model_gguf(weights, template, target, dtype="f16", metadata=self.metadata())
            return
        # llama.cpp quantizes from full float32, so nothing is rounded twice
        scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.f32")
        try:
            write_model_gguf(weights, template, scratch, dtype="f32", metadata=self.metadata())
            _quantize(scratch, target, kind)
        finally:
            scratch.unlink(missing_ok=True)

    def _export_adapter(self, target: Path) -> None:
        if self.method != "lora":
            raise ConfigError(f"run {self.run_id[:12]} trained every weight: it has no adapter")
        from safetensors.torch import load_file

        template = self._need_template()
        config = json.loads((self.output / "adapter_config.json").read_text(encoding="utf-8"))
        if config.get("use_rslora") or config.get("use_dora"):
            raise ModelError("llama.cpp applies plain LoRA adapters only (no rsLoRA, no DoRA)")
        tensors = load_file(self.output / "adapter_model.safetensors")
        pairs: dict[str, tuple[Any, Any]] = {}
        for key, value in tensors.items():
            # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
            stem, _, part = key.removesuffix(".weight").rpartition(".")
            hf_name = stem.removeprefix("base_model.model.") + ".weight"
            a, b = pairs.get(hf_name, (None, None))
            if part == "lora_A":
                a = value.float().numpy()
            elif part == "lora_B":
                b = value.float().numpy()
            else:
                raise ModelError(f"adapter tensor {key!r} is not a LoRA matrix")
            pairs[hf_name] = (a, b)
        incomplete = [name for name, (a, b) in pairs.items() if a is None or b is None]
        if incomplete:
            raise ModelError(f"adapter lacks half of {incomplete[0]}")
        write_adapter_gguf(
            pairs, float(config["lora_alpha"]), template, target, metadata=self.metadata()
        )

    def _export_hf(self, target: Path) -> None:
        model, tokenizer = self.merged_weights()
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        record: dict[str, Any] = {"run_id": self.run_id, **self.metadata()}
        if self.template is not None:
            record["gguf"] = str(self.template)  # so this folder exports to GGUF again
        (partial / SOURCE_FILE).write_text(json.dumps(record), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)


@dataclass(frozen=True)
class Closeness:
    """How close a quantized file stays to a reference file on some texts."""

    tokens: int  # positions compared
    agreement: float  # share of positions where both files' most likely next token agree
    perplexity_reference: float
    perplexity_candidate: float


def _next_token_scores(path: Path, texts: list[str], n_ctx: int) -> list[Any]:
    """Per text: (log-probabilities of the actual next tokens, most likely next tokens)."""
    import numpy as np

    from slmops.models.gguf_files import llama_cpp_bindings

    llama_cpp = llama_cpp_bindings("scoring an export against its reference")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
    scored = []
    for text in texts:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)[:n_ctx]
        if len(tokens) < 2:
            continue
        llm.reset()
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens) - 1], dtype=np.float64)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
        actual = logits[np.arange(len(tokens) - 1), tokens[1:]] - log_norm
        scored.append((actual, logits.argmax(axis=1)))
    return scored


def closeness(reference: Path, candidate: Path, texts: list[str], n_ctx: int = 2048) -> Closeness:
    """Greedy next-token agreement and perplexity of ``candidate`` against ``reference``
    (e.g. a q4 export against the f16 one), run by llama.cpp on ``texts``."""
    import numpy as np

    ours = _next_token_scores(reference, texts, n_ctx)
    theirs = _next_token_scores(candidate, texts, n_ctx)
    if not ours:
        raise ConfigError("no text long enough to compare the files on")
    positions = sum(len(a) for a, _ in ours)
    agree = sum(int((ra == ca).sum()) for (_, ra), (_, ca) in zip(ours, theirs, strict=True))
    return Closeness(
        tokens=positions,
        agreement=agree / positions,
        perplexity_reference=float(np.exp(-np.concatenate([a for a, _ in ours]).mean())),
        perplexity_candidate=float(np.exp(-np.concatenate([a for a, _ in theirs]).mean())),
    )
