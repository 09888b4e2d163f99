"""GGUF models run in-process by llama.cpp (``llama-cpp-python``)."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from slmops.errors import ModelError, ModelUnavailableError
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    FinishReason,
    GenerationParams,
    StreamAccumulator,
    Usage,
)

T = TypeVar("T")

# Used only when a GGUF file carries no chat template of its own.
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_formatter(llm: Any) -> Any:
    """The chat formatter a loaded ``llama_cpp.Llama`` implies: its GGUF's own template."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    model = llm._model  # token texts are only exposed on the low-level model
    eos = model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = model.token_get_text(bos_id) if bos_id != -1 else ""
    template = llm.metadata.get("tokenizer.chat_template") or _CHATML_TEMPLATE
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


class _LlamaThread:
    """The one thread that runs every llama.cpp call in this process.

    llama.cpp (built with OpenMP) keeps a team of compute threads per calling thread. Measured
    on 2 cores: the first thread to generate runs at ~110 tokens/s and every other thread then
    at ~75-80, so calls from async steps, servers and worker threads all come here. Running
    them on one thread also serialises them, which a llama.cpp context needs."""

    _executor: ThreadPoolExecutor | None = None
    _thread_id: int | None = None
    _guard = threading.Lock()

    @classmethod
    def _pool(cls) -> ThreadPoolExecutor:
        with cls._guard:
            if cls._executor is None:
                cls._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmops-llama")
                cls._thread_id = cls._executor.submit(threading.get_ident).result()
            return cls._executor

    @classmethod
    def call(cls, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        pool = cls._pool()
        if threading.get_ident() == cls._thread_id:  # already on it (a nested call)
            return fn(*args, **kwargs)
        return pool.submit(fn, *args, **kwargs).result()

    @classmethod
    def stream(cls, produce: Callable[[Callable[[Any], bool]], None]) -> Iterator[Any]:
        """Run ``produce(emit)`` on the llama thread and yield what it emits. ``emit`` returns
        False once the consumer has gone (closed the iterator), so generation stops early."""
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> bool:
            items.put(("item", item))
            return not cancelled.is_set()

        def job() -> None:
            try:
                produce(emit)
            except BaseException as exc:  # handed to the consumer
                items.put(("error", exc))
            else:
                items.put(("done", None))

        cls._pool().submit(job)
        try:
            while True:
                kind, value = items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            cancelled.set()


class _TokenCounter:
    """A llama.cpp stopping criterion that never stops. llama.cpp calls it once on the prompt,
    once per completion token and, on a natural stop, once for the end-of-text sample (which
    its own usage does not count), so it gives exact usage for streamed generations (whose
    chunks carry none); checked against the non-streamed usage in the tests."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.calls = 0

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        self.calls += 1
        return False

    def usage(self, finish: FinishReason) -> Usage:
        extra_calls = 2 if finish == "stop" else 1
        return Usage(self.prompt_tokens or 0, max(self.calls - extra_calls, 0))


def format_with(formatter: Any, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
    response = formatter(messages=[m.model_dump() for m in messages])
    stop = response.stop if isinstance(response.stop, list) else [response.stop or ""]
    return response.prompt, [s for s in stop if s]


class LlamaCppChatModel:
    """A GGUF chat model, safe to call from any thread: every call runs on the process's one
    llama.cpp thread (see :class:`_LlamaThread`), so calls are serialised and a streaming call
    occupies it until its iterator is exhausted or closed (closing stops the generation).

    Every generation starts from a reset context: llama.cpp's reuse of the previous prompt's
    KV cache changes greedy outputs (measured: the same prompt at temperature 0 gave two
    different answers depending on the call before it), and repeatable answers matter more
    for caching and evaluation than the prompt re-evaluation this costs a 135M model."""

    def __init__(
        self,
        path: str | Path,
        *,
        uri: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        adapter: Path | None = None,
    ) -> None:
        model_path = Path(path)
        if not model_path.is_file():
            raise ModelUnavailableError(f"GGUF file {model_path} does not exist")
        if adapter is not None:
            if not adapter.is_file():
                raise ModelUnavailableError(f"adapter file {adapter} does not exist")
            from slmops.models.gguf_files import check_adapter

            check_adapter(adapter, model_path)  # a bad adapter would crash llama.cpp
        from llama_cpp import Llama, StoppingCriteriaList

        self._stopping_list = StoppingCriteriaList
        started = time.perf_counter()
        try:
            self._llm = _LlamaThread.call(
                Llama,
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=n_threads or os.cpu_count() or 1,
                lora_path=str(adapter) if adapter is not None else None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self.load_time_s = time.perf_counter() - started
        self._uri = uri or f"gguf:{model_path}"
        self._formatter = chat_formatter(self._llm)

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def context_length(self) -> int:
        return int(self._llm.n_ctx())

    def format_prompt(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        """The exact prompt text the model sees, and the stop strings its template implies."""
        return format_with(self._formatter, messages)

    def count_tokens(self, text: str) -> int:
        tokens = _LlamaThread.call(
            self._llm.tokenize, text.encode("utf-8"), add_bos=False, special=True
        )
        return len(tokens)

    # --- generation ----------------------------------------------------------------------

    def _kwargs(self, params: GenerationParams, extra_stop: list[str]) -> dict[str, Any]:
        return {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": [*params.stop, *extra_stop],
            "seed": params.seed,
        }

    def _grammar(self, json_schema: dict[str, Any] | None) -> Any:
        if json_schema is None:
            return None
        from llama_cpp import LlamaGrammar

        try:
            return LlamaGrammar.from_json_schema(json.dumps(json_schema), verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"JSON schema cannot be turned into a grammar: {exc}") from exc

    def _generate(self, prompt: str, kwargs: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()

        def generate() -> Any:
            self._llm.reset()
            return self._llm.create_completion(prompt, **kwargs)

        try:
            out = _LlamaThread.call(generate)
        except ValueError as exc:  # e.g. prompt + max_tokens exceed the context window
            raise ModelError(f"{self._uri}: {exc}") from exc
        choice = out["choices"][0]
        usage = out["usage"]
        finish: FinishReason = "length" if choice["finish_reason"] == "length" else "stop"
        return ChatResult(
            text=choice["text"],
            finish_reason=finish,
            usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
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
        prompt, stop = self.format_prompt(messages)
        kwargs = self._kwargs(params or GenerationParams(), stop)
        kwargs["grammar"] = self._grammar(json_schema)
        return self._generate(prompt, kwargs)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        return self._generate(prompt, self._kwargs(params or GenerationParams(), []))

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        prompt, stop = self.format_prompt(messages)
        return self.stream_prompt(prompt, params, extra_stop=stop)

    def stream_prompt(
        self, prompt: str, params: GenerationParams | None = None, *, extra_stop: Sequence[str] = ()
    ) -> Iterator[ChatChunk]:
        """Stream a raw prompt; the final chunk carries the finish reason and exact usage."""
        kwargs = self._kwargs(params or GenerationParams(), list(extra_stop))
        counter = _TokenCounter()
        kwargs["stopping_criteria"] = self._stopping_list([counter])

        def produce(emit: Callable[[Any], bool]) -> None:
            self._llm.reset()
            finish: FinishReason = "stop"
            try:
                stream = self._llm.create_completion(prompt, stream=True, **kwargs)
                for piece in cast(Iterator[dict[str, Any]], stream):
                    choice = piece["choices"][0]
                    if choice.get("finish_reason") == "length":
                        finish = "length"
                    if choice["text"] and not emit(ChatChunk(text=choice["text"])):
                        return  # the consumer went away: stop generating
            except ValueError as exc:
                raise ModelError(f"{self._uri}: {exc}") from exc
            emit(ChatChunk(text="", finish_reason=finish, usage=counter.usage(finish)))

        yield from _LlamaThread.stream(produce)

    def stream_to_result(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResult:
        """Stream and collect (measures time to first token)."""
        acc = StreamAccumulator(model=self._uri)
        for chunk in self.stream(messages, params):
            acc.add(chunk)
        return acc.result()
