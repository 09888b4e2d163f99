"""Model fingerprints: the SHA-256 of the weights a model URI names, so a lock can pin the
exact model file and not only its name (a reinstalled package or an overwritten GGUF file
would otherwise change answers silently).

Hashing a 100 MB file takes a few tenths of a second, so digests are remembered in a small
JSON file in the user's cache folder, keyed by path, size and modification time (as git's
index does): a later check costs one ``stat``. The cache is only an optimisation; when it
cannot be read or written the digest is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from slmops.models.loading import BUILTIN_CHAT_MODELS, BUILTIN_EMBEDDERS, shipped_file
from slmops.models.resolvers import resolve_uri
from slmops.models.uri import BUILTIN_SCHEMES, parse_model_uri

_lock = threading.Lock()


def user_cache_dir() -> Path:
    """slmops' folder in the user's cache: ``$XDG_CACHE_HOME/slmops`` (else ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slmops"


def cache_file() -> Path:
    return user_cache_dir() / "model-digests.json"


def weights_path(uri: str) -> Path | None:
    """The file or folder holding a URI's weights; None for a remote server."""
    parsed = parse_model_uri(uri)
    if parsed.scheme not in BUILTIN_SCHEMES:
        return weights_path(resolve_uri(uri).uri)
    if parsed.scheme == "openai":
        return None
    if parsed.scheme == "local":
        table = BUILTIN_CHAT_MODELS if parsed.location in BUILTIN_CHAT_MODELS else BUILTIN_EMBEDDERS
        if parsed.location in table:
            return shipped_file(*table[parsed.location])
        return None  # an unknown name fails where the model is loaded, with its own message
    return Path(parsed.location).expanduser()


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, dict[str, str]]) -> None:
    target = cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(cache, indent=0, sort_keys=True), encoding="utf-8")
        partial.replace(target)  # atomic: a reader sees the old cache or the new one
    except OSError:
        pass  # a read-only home: digests are simply computed again next time


def model_digest(uri: str) -> str | None:
    """``sha256:HEX`` of the weights (for a folder, of its files' names and digests; for a
    model with an adapter, of both digests), or None for a model on a remote server (nothing
    local to pin)."""
    parsed = parse_model_uri(uri)
    if parsed.scheme not in BUILTIN_SCHEMES:  # a registry version: its weights' digest
        return model_digest(resolve_uri(uri).uri)
    if parsed.adapter:
        base, adapter = model_digest(parsed.base), _path_digest(Path(parsed.adapter).expanduser())
        if base is None or adapter is None:
            return None
        return "sha256:" + hashlib.sha256(f"{base}\n{adapter}".encode()).hexdigest()
    return _path_digest(weights_path(uri))


def _path_digest(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    with _lock:
        cache = _read_cache()
        changed = False
        parts = []
        for file in _files(path):
            key, stamp = str(file.resolve()), _stamp(file)
            entry = cache.get(key)
            if entry is None or entry.get("stamp") != stamp:
                entry = {"stamp": stamp, "sha256": file_sha256(file)}
                cache[key] = entry
                changed = True
            name = file.relative_to(path) if path.is_dir() else file.name
            parts.append(f"{name}:{entry['sha256']}")
        if changed:
            _write_cache(cache)
    if path.is_file():
        return "sha256:" + parts[0].rpartition(":")[2]
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
