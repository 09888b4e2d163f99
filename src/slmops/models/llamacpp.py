"""GGUF models run in-process by llama.cpp's own server engine (``xllamacpp``).

The engine decodes concurrent requests together (continuous batching over parallel slots) and
keeps each slot's KV cache, so a request that shares a prefix with the slot's last prompt (a
system prompt, few-shot examples, earlier chat turns) only reads the new part. It is called in
process (no HTTP for generation); its HTTP listener, which llama.cpp always opens, binds to
127.0.0.1 on a free port behind a random API key and serves only token counting here."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from slmops.errors import ConfigError, ModelError, ModelUnavailableError
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    FinishReason,
    GenerationParams,
    StreamAccumulator,
    Usage,
)

# Used only when a GGUF file carries no chat template of its own.
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# llama.cpp's defaults for the samplers a request does not set (top-k 40, min-p 0.05): the
# same as llama-cpp-python's, so sampled answers keep their character across the change.
_SAMPLING_DEFAULTS = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}


# LLGuidance's JSON layout options (what llama.cpp's grammar engine reads from a schema).
_COMPACT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


@dataclass(frozen=True)
class EngineSettings:
    """How the engine is laid out; every field has an environment switch (README: "Faster
    inference").

    ``slots``: sequences decoded together. Each slot has a KV cache of its own rather than one
    shared pool, because a shared pool changed greedy answers (the attention over the pool runs
    in a different order depending on where the other requests' tokens sit; measured: 6-8 of
    16 prompts differed) while separate slots give the lone request's answer."""

    slots: int = 4
    # Each slot's KV cache is allocated whole at start (23 KB a token for SmolLM2-135M in 16
    # bits): 4 x 2048 tokens is 188 MB. A RAG prompt with its answer stays under 1,500 tokens.
    context_per_slot: int = 2048
    prefix_reuse: bool = True
    threads: int = 0  # 0: one per core
    prompt_cache_mib: int = 0  # llama.cpp's host-memory cache of evicted slots' prompts
    micro_batch: int = 512  # tokens per forward pass
    # The KV cache's number formats, "K/V" (one name: both). The default keeps keys in f16 and
    # values in bf16 (the same 2 bytes) for exactness, not size: with any pair but f16/f16 (or
    # f32/f32) ggml's flash attention runs one kernel for every token, a row at a time, in
    # the cache's order, and adds values up in f32. f16/f16 takes two other kernels: tiles of
    # 64 queries for prompts read 64 or more tokens at a time, and, for one sequence decoding
    # alone past 256 tokens of context, keys split between threads and merged. Each rounds
    # otherwise, so an answer depended on how its prompt was cut and on whether other
    # requests were decoding beside it (measured: 9 of 12 long prompts answered differently
    # alone than 4 at a time; bench/bench_exactness.py). "q8_0" nearly halves the cache but
    # changed 8 of 16 greedy answers of SmolLM2-135M and made grammar-constrained replies run
    # on to max_tokens.
    kv_type: str = "f16/bf16"

    @classmethod
    def from_environment(cls, n_ctx: int | None = None) -> EngineSettings:
        def number(name: str, default: int, low: int, high: int) -> int:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: give a whole number") from None
            if not low <= value <= high:
                raise ConfigError(f"{name}={value}: must be between {low} and {high}")
            return value

        reuse = os.environ.get("SLMOPS_PREFIX_REUSE", "1").strip().lower()
        if reuse not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
            raise ConfigError(f"SLMOPS_PREFIX_REUSE={reuse!r}: give 1 (on) or 0 (off)")
        return cls(
            slots=number("SLMOPS_LLAMA_SLOTS", cls.slots, 1, 64),
            context_per_slot=n_ctx
            or number("SLMOPS_LLAMA_CONTEXT", cls.context_per_slot, 256, 131072),
            prefix_reuse=reuse in ("1", "true", "on", "yes"),
            threads=number("SLMOPS_LLAMA_THREADS", 0, 0, 512),
            prompt_cache_mib=number("SLMOPS_PROMPT_CACHE_MIB", cls.prompt_cache_mib, 0, 1 << 20),
            micro_batch=number("SLMOPS_LLAMA_MICRO_BATCH", cls.micro_batch, 2, 4096),
            kv_type=kv_type_from(os.environ.get("SLMOPS_LLAMA_KV_TYPE") or cls.kv_type),
        )


KV_TYPES = ("f16", "bf16", "q8_0", "q4_0")


def kv_type_from(raw: str, *, name: str = "SLMOPS_LLAMA_KV_TYPE") -> str:
    """A KV cache number format given by a user, checked: ``K/V`` or one name for both,
    written back as ``K/V``."""
    parts = [part.strip() for part in raw.strip().lower().split("/")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or any(part not in KV_TYPES for part in parts):
        raise ConfigError(
            f"{name}={raw!r}: give one of {', '.join(KV_TYPES)} for keys and values, or a"
            " pair KEYS/VALUES such as f16/bf16"
        )
    return "/".join(parts)


def kv_types(kv_type: str) -> tuple[str, str]:
    """(keys' format, values' format) of a checked ``kv_type``."""
    keys, _, values = kv_type.partition("/")
    return keys, values or keys


class _Sigaction(ctypes.Structure):
    # Room for any platform's struct sigaction: it is only copied back, never read.
    _fields_ = [("raw", ctypes.c_byte * 512)]


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """llama.cpp's server installs its own SIGINT/SIGTERM handlers (they stop its loop), which
    would take Ctrl+C and uvicorn's shutdown away from the host process: put the process's
    handlers back once the engine has started."""
    if sys.platform == "win32":
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = {sig: _Sigaction() for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, action in saved.items():
        libc.sigaction(int(sig), None, ctypes.byref(action))
    try:
        yield
    finally:
        for sig, action in saved.items():
            libc.sigaction(int(sig), ctypes.byref(action), None)


class ChatTemplate:
    """A GGUF's chat template rendered the way Hugging Face's transformers renders it (a
    sandboxed Jinja2 environment), so prompts are exactly what the model was trained on."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        import jinja2
        import jinja2.ext

        from slmops.models.templating import BoundedSandbox

        # Bounded as well as sandboxed: a GGUF file is external input, and its template runs
        # on every request (see slmops.models.templating).
        environment = BoundedSandbox(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols],
        )
        environment.add_filter("tojson", _tojson)
        try:
            self._template = environment.from_string(template)
        except jinja2.TemplateError as exc:
            raise ModelError(f"the model's chat template does not parse: {exc}") from exc
        except (RecursionError, SyntaxError):
            raise ModelError("the model's chat template nests too deeply") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        import jinja2

        from slmops.models.templating import render_bounded

        def raise_exception(message: str) -> None:
            raise ModelError(f"the model's chat template refused the messages: {message}")

        context = {
            "messages": [m.model_dump() for m in messages],
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "raise_exception": raise_exception,
            "add_generation_prompt": True,
            "strftime_now": lambda f: datetime.now().strftime(f),
        }
        try:
            prompt = render_bounded(self._template, context)
        except jinja2.TemplateError as exc:
            raise ModelError(f"the model's chat template failed: {exc}") from exc
        except ModelError:
            raise
        except Exception as exc:  # a template is code: {{ 1 / 0 }} is a Python error
            raise ModelError(
                f"the model's chat template failed: {type(exc).__name__}: {exc}"
            ) from exc
        return prompt, [self.eos_token] if self.eos_token else []


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)


def _engine_error(reply: dict[str, Any]) -> str | None:
    """The message of an error reply of the engine, None for an answer."""
    error = reply.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if "code" in reply and "choices" not in reply:  # the binding's own failure shape
        return str(reply.get("message") or reply)
    return None


def _usage(reply: dict[str, Any]) -> Usage:
    details = reply.get("prompt_tokens_details") or {}
    return Usage(
        int(reply["prompt_tokens"]),
        int(reply["completion_tokens"]),
        int(details.get("cached_tokens") or 0),
    )


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_SCHEMA_VALUES = frozenset({"enum", "const", "default", "examples", "required"})


def _closed_objects(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists properties
    and says nothing of others. llama.cpp's own schema converter always read it so; LLGuidance
    follows JSON Schema (others allowed), and the model then kept inventing keys until
    max_tokens (measured: a classifier's ``{"label": ...}`` ran on into copies of its schema).
    A schema that allows other keys explicitly keeps them."""
    if isinstance(schema, list):
        return [_closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):  # names -> subschemas
            closed[key] = {name: _closed_objects(sub) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES:  # data, not subschemas
            closed[key] = value
        else:
            closed[key] = _closed_objects(value)
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise :class:`ModelError` for a schema that is not valid JSON Schema or that llama.cpp's
    grammar engine (LLGuidance) cannot enforce. The engine itself does not say so: it decodes
    unconstrained without a word (measured: ``{"type": "objectx"}`` and ``{"not": ...}`` gave
    free text), so schemas are checked here first, by the same LLGuidance."""
    if not isinstance(schema, dict):
        raise ModelError(f"a JSON schema is an object, not {type(schema).__name__}")
    try:
        text = json.dumps(schema, sort_keys=True)
    except (RecursionError, ValueError):
        raise ModelError("not a usable JSON schema: it nests too deeply") from None
    problem = _schema_problem(text)
    if problem:
        raise ModelError(problem)


@functools.lru_cache(maxsize=256)
def _schema_problem(text: str) -> str | None:
    """What is wrong with a schema (its JSON text), None when nothing. Cached: the server checks
    a request's schema before generating and the backend again on the call, and an LLMCall
    sends the same schema on every call and retry."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from llguidance import LLMatcher, grammar_from

    try:
        Draft202012Validator.check_schema(json.loads(text))
        problem = LLMatcher.validate_grammar(grammar_from("json_schema", text))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"not a valid JSON schema at {where}: {exc.message}"
    except (RecursionError, ValueError):
        return "not a usable JSON schema: it nests too deeply"
    if problem:
        return f"JSON schema cannot be turned into a grammar: {problem[:300]}"
    return None


class LlamaCppChatModel:
    """A GGUF chat model, safe to call from any number of threads at once: concurrent calls
    are decoded together by llama.cpp (up to ``slots`` at a time, the rest wait in its queue),
    and a streaming call stops generating when its iterator is closed."""

    def __init__(
        self,
        path: str | Path,
        *,
        uri: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        adapter: Path | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        model_path = Path(path)
        if not model_path.is_file():
            raise ModelUnavailableError(f"GGUF file {model_path} does not exist")
        if adapter is not None:
            if not adapter.is_file():
                raise ModelUnavailableError(f"adapter file {adapter} does not exist")
            from slmops.models.gguf_files import check_adapter

            check_adapter(adapter, model_path)  # a bad adapter would crash llama.cpp
        self.settings = settings or EngineSettings.from_environment(n_ctx)
        threads = n_threads or self.settings.threads or os.cpu_count() or 1
        started = time.perf_counter()
        self._server, self._address, self._key = _start_engine(
            model_path, adapter, self.settings, threads
        )
        self.load_time_s = time.perf_counter() - started
        self._uri = uri or f"gguf:{model_path}"
        props = self._http("GET", "/props")
        self._template = ChatTemplate(
            props.get("chat_template") or _CHATML_TEMPLATE,
            bos_token=str(props.get("bos_token") or ""),
            eos_token=str(props.get("eos_token") or ""),
        )

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def context_length(self) -> int:
        """The longest prompt plus answer one request can have (one slot's context)."""
        return self.settings.context_per_slot

    def format_prompt(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        """The exact prompt text the model sees, and the stop strings its template implies."""
        return self._template.render(messages)

    def count_tokens(self, text: str) -> int:
        reply = self._http(
            "POST", "/tokenize", {"content": text, "add_special": False, "parse_special": True}
        )
        return len(reply["tokens"])

    def engine_counters(self) -> dict[str, float]:
        """llama.cpp's running totals (``prompt_tokens_total``, ``tokens_predicted_total``,
        ...), from its Prometheus text."""
        counters: dict[str, float] = {}
        for line in self._server.handle_metrics().splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("llamacpp:"):
                with contextlib.suppress(ValueError):
                    counters[name.removeprefix("llamacpp:")] = float(value)
        return counters

    def _http(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = httpx.request(
                method,
                self._address + route,
                json=body,
                headers={"Authorization": f"Bearer {self._key}"},
                timeout=60,
                trust_env=False,  # never through a proxy: the listener is on 127.0.0.1
            )
        except httpx.HTTPError as exc:
            raise ModelError(f"{self._uri}: llama.cpp's engine did not answer: {exc}") from exc
        if response.status_code != 200:
            raise ModelError(f"{self._uri}: llama.cpp refused {route}: {response.text[:300]}")
        return response.json()

    # --- generation ----------------------------------------------------------------------

    def _request(
        self,
        prompt: str,
        params: GenerationParams,
        extra_stop: Sequence[str],
        json_schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            **_SAMPLING_DEFAULTS,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": [*params.stop, *extra_stop],
            "cache_prompt": self.settings.prefix_reuse,
        }
        if params.seed is not None:
            request["seed"] = params.seed
        if json_schema is not None:
            check_json_schema(json_schema)
            # One-line JSON: left free, the model pretty-prints, and the indentation cost a
            # third of a small tool call's tokens (40 against 26 measured), enough to cut
            # calls short at a modest max_tokens. A schema's own x-guidance options win.
            request["json_schema"] = {"x-guidance": _COMPACT_JSON, **_closed_objects(json_schema)}
        return request

    def _generate(self, request: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()
        reply = self._server.handle_completions(request)
        error = _engine_error(reply)
        if error is not None:
            raise ModelError(f"{self._uri}: {error}")
        choice = reply["choices"][0]
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        return ChatResult(
            text=choice["text"],
            finish_reason=finish,
            usage=_usage(reply["usage"]),
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
        return self._generate(
            self._request(prompt, params or GenerationParams(), stop, json_schema)
        )

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        return self._generate(self._request(prompt, params or GenerationParams(), []))

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> Iterator[ChatChunk]:
        prompt, stop = self.format_prompt(messages)
        return self._stream(self._request(prompt, params or GenerationParams(), stop, json_schema))

    def stream_prompt(
        self, prompt: str, params: GenerationParams | None = None, *, extra_stop: Sequence[str] = ()
    ) -> Iterator[ChatChunk]:
        """Stream a raw prompt; the final chunk carries the finish reason and exact usage."""
        return self._stream(self._request(prompt, params or GenerationParams(), extra_stop))

    def _stream(self, request: dict[str, Any]) -> Iterator[ChatChunk]:
        """The engine calls back on the thread that asked it, until the answer ends or the
        callback returns True: a thread of its own per stream hands the pieces over. It starts
        at the first ``next()``, so a stream never read asks the engine for nothing (one begun
        and dropped stops at its next token: see ``finally``)."""
        request = {**request, "stream": True, "stream_options": {"include_usage": True}}
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        closed = threading.Event()

        def on_piece(piece: dict[str, Any]) -> bool:
            pieces.put(("piece", piece))
            return closed.is_set()  # True stops the generation

        def run() -> None:
            try:
                self._server.handle_completions(request, on_piece)
            except BaseException as exc:  # handed to the consumer
                pieces.put(("error", exc))
            else:
                pieces.put(("done", None))

        threading.Thread(target=run, name="slmops-llama-stream", daemon=True).start()
        finish: FinishReason = "stop"
        usage: Usage | None = None
        try:
            while True:
                kind, value = pieces.get()
                if kind == "error":
                    raise ModelError(f"{self._uri}: {value}") from value
                if kind == "done":
                    break
                error = _engine_error(value)
                if error is not None:
                    raise ModelError(f"{self._uri}: {error}")
                if value.get("usage"):
                    usage = _usage(value["usage"])
                for choice in value.get("choices") or ():
                    if choice.get("finish_reason") == "length":
                        finish = "length"
                    if choice.get("text"):
                        yield ChatChunk(text=choice["text"])
            yield ChatChunk(text="", finish_reason=finish, usage=usage or Usage(0, 0))
        finally:
            closed.set()

    def stream_to_result(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResult:
        """Stream and collect (measures time to first token)."""
        acc = StreamAccumulator(model=self._uri)
        for chunk in self.stream(messages, params):
            acc.add(chunk)
        return acc.result()


def _start_engine(
    model_path: Path, adapter: Path | None, settings: EngineSettings, threads: int
) -> tuple[Any, str, str]:
    """Start llama.cpp's server engine on ``model_path``: (engine, listener URL, API key)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise ModelUnavailableError(
            f"the llama.cpp engine is not installed ({exc}): pip install xllamacpp"
        ) from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_parallel = settings.slots
    params.kv_unified = False  # a KV cache per slot: see EngineSettings
    params.n_ctx = settings.context_per_slot * settings.slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cache_prompt = settings.prefix_reuse
    params.cache_ram_mib = settings.prompt_cache_mib
    params.warmup = False  # ready sooner; the first request pays for paging the weights in
    params.verbosity = -1 if not os.environ.get("SLMOPS_LLAMA_VERBOSE") else 3
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port
    params.n_threads_http = 2
    params.n_ubatch = settings.micro_batch
    params.n_batch = max(settings.micro_batch, 512)
    keys, values = kv_types(settings.kv_type)
    params.cache_type_k = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{keys.upper()}")
    params.cache_type_v = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{values.upper()}")
    # Always flash attention: a quantized V cache needs it, and the exactness argued at
    # EngineSettings.kv_type is about its kernels (the other attention path changed 5 of 24
    # multi-turn answers at any micro-batch).
    params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
    params.endpoint_metrics = True  # tokens read and predicted: benches and tests count them
    key = secrets.token_urlsafe(32)
    params.api_keys = [key]
    if adapter is not None:
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(adapter), 1.0)]
    try:
        with _signal_handlers_kept():
            server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ModelError(f"llama.cpp could not load {model_path}: {exc}") from exc
    # Wait for the engine's task loop to run (a metrics request is answered by it): an engine
    # dropped before its loop starts never stops, and its destructor waits forever (seen when
    # an engine was freed right after it was made).
    server.handle_metrics()
    return server, str(server.listening_address), key
