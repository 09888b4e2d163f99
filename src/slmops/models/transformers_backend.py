"""Hugging Face transformers checkpoints (extra ``hf``): the path fine-tuned models take."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from slmops.errors import ModelError, ModelUnavailableError
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    GenerationParams,
    Usage,
)


class TransformersChatModel:
    """A causal LM checkpoint folder loaded on the CPU. Much slower than llama.cpp for
    serving (~20 tokens/s for 135M on 2 cores): use it for models being trained."""

    def __init__(self, path: str | Path, *, uri: str | None = None) -> None:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"{folder} is not a transformers checkpoint (no config.json)"
            )
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError("hf: models need the 'hf' extra: pip install 'slmops[hf]'") from exc
        # Any: transformers' own types do not describe the generate/decode calls made here.
        # A pytorch_model.bin is a pickle: transformers reads it with torch's weights-only
        # unpickler, which refuses code, and raises UnpicklingError whose text suggests
        # weights_only=False. Never that: the error is reported as what it is.
        try:
            self._tokenizer: Any = AutoTokenizer.from_pretrained(folder)
            self._model: Any = AutoModelForCausalLM.from_pretrained(folder)
        except pickle.UnpicklingError as exc:
            raise ModelError(
                f"{folder} holds a pickled file that is not plain weights (it could run code "
                "when loaded), so it is not loaded; save the checkpoint as safetensors"
            ) from exc
        except Exception as exc:  # transformers, torch, safetensors and JSON raise their own
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(
                f"{folder} cannot be loaded as a transformers checkpoint: "
                f"{type(exc).__name__}: {first[:200]}"
            ) from exc
        self._model.eval()
        self._uri = uri or f"hf:{folder}"
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self._uri

    def _generate(self, input_ids: Any, params: GenerationParams, streamer: Any = None) -> Any:
        import torch

        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": sampling,
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self._tokenizer)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            return self._model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs
            )

    def _encode_chat(self, messages: Sequence[ChatMessage]) -> Any:
        return self._tokenizer.apply_chat_template(
            [m.model_dump() for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]

    def _result(self, input_ids: Any, params: GenerationParams, started: float) -> ChatResult:
        with self._lock:
            output = self._generate(input_ids, params)
        new_tokens = output[0, input_ids.shape[1] :]
        text = self._tokenizer.decode(new_tokens, skip_special_tokens=True)
        hit_eos = self._tokenizer.eos_token_id in new_tokens.tolist()
        return ChatResult(
            text=text,
            finish_reason="stop" if hit_eos or len(new_tokens) < params.max_tokens else "length",
            usage=Usage(int(input_ids.shape[1]), len(new_tokens)),
            model=self._uri,
            latency_s=time.perf_counter() - started,
        )

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        # No constrained decoding here: LLMCall validates the reply and retries on bad JSON.
        del json_schema
        started = time.perf_counter()
        return self._result(self._encode_chat(messages), params or GenerationParams(), started)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        started = time.perf_counter()
        ids = self._tokenizer(prompt, return_tensors="pt")["input_ids"]
        return self._result(ids, params or GenerationParams(), started)

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        # Streams as one chunk: transformers' streamers need a second thread, and this path
        # exists for checkpoints under training, not for interactive serving.
        result = self.chat(messages, params)
        yield ChatChunk(text=result.text)
        yield ChatChunk(text="", finish_reason=result.finish_reason, usage=result.usage)
