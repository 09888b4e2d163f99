"""Workspace settings: ``config.toml`` in the workspace folder, overridden by environment."""

from __future__ import annotations

import os
import threading
import tomllib
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from slmops.errors import ConfigError
from slmops.store.redaction import check_kinds, compile_pattern

CONFIG_FILE_NAME = "config.toml"
_ENV_PREFIX = "SLMOPS_"
_ENV_LISTS = frozenset({"redact"})
"""Fields whose environment override is a comma-separated list."""
_TOML_ONLY = frozenset({"redact_patterns"})
"""Fields that cannot be set from the environment (see each field's docstring)."""

EmbedderBackend = Literal["onnx", "onnx-int8", "torch"]
EMBEDDER_BACKENDS: tuple[EmbedderBackend, ...] = get_args(EmbedderBackend)
DEFAULT_EMBEDDER_BACKEND: EmbedderBackend = "onnx"
SqliteSynchronous = Literal["full", "normal"]


class Settings(BaseModel):
    """Everything a workspace can be told. Unknown keys are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = None
    """SQLAlchemy URL of the metadata database; default: SQLite inside the workspace."""
    artifacts_url: str | None = None
    """fsspec URL of the artifact folder (``s3://bucket/prefix`` works); default: inside it."""
    cache_url: str | None = None
    """Where step results are cached: unset uses the metadata database, ``redis://`` Redis."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint (Phoenix, Langfuse, a collector); unset exports nowhere."""
    tracking_uri: str | None = None
    """MLflow tracking store for training runs; default: SQLite in the workspace (mlflow.db)."""
    chat_model: str = "local:smollm2-135m"
    embedder: str = "local:all-minilm-l6-v2"
    embedder_backend: EmbedderBackend = DEFAULT_EMBEDDER_BACKEND
    """What runs ``local:`` and ``st:`` embedders: ``onnx`` (ONNX Runtime, exported once from
    the model's own weights into the user's cache; vectors match torch's to cosine 0.9999),
    ``onnx-int8`` (the same graph with int8 weights: faster and smaller, vectors within
    cosine ~0.98 of fp32) or ``torch`` (sentence-transformers). The embedder URI, which
    corpora record, is the same for all three: fp32 ONNX and torch vectors are
    interchangeable. ``SLMOPS_EMBEDDER_BACKEND`` overrides it."""
    sqlite_synchronous: SqliteSynchronous = "normal"
    """How the SQLite metadata database (WAL mode) syncs its commits. ``normal`` (the
    default) syncs the log at checkpoints only: a crash or ``kill -9`` of slmops loses no
    commit, but a power cut or OS crash can lose the last commits before it (the database
    stays consistent; a lost eval result is rerun by ``--resume``, a lost version is added
    again). ``full`` fsyncs the log at every commit, so whatever a command reported
    committed survives a power cut too, at ~4-5 ms per commit instead of ~0.1-0.3 ms (a
    stored trace: 0.25 -> 4.9 ms; an eval dataset version: 9 -> 14 ms, on a virtual disk).
    ``SLMOPS_SQLITE_SYNCHRONOUS`` overrides it; a ``database_url`` server is not affected."""
    redact: tuple[str, ...] = ()
    """What to remove from prompts and answers before traces (and feedback) are stored or
    exported: any of ``email``, ``phone``, ``api_key``; each match becomes
    ``[REDACTED:<kind>]``. ``SLMOPS_REDACT`` takes them comma-separated (``email,phone``)."""
    redact_patterns: tuple[str, ...] = ()
    """Custom regular expressions (Python syntax) redacted like :attr:`redact`, as
    ``[REDACTED:custom]``. Set in ``config.toml`` only: a comma can be part of a regex, so
    there is no unambiguous way to list them in one environment variable."""

    @field_validator("cache_url")
    @classmethod
    def _known_cache_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "sql")):
            raise ValueError("must be unset, 'sql' or a redis:// URL")
        return value

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _lower_synchronous(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redact")
    @classmethod
    def _known_redaction_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_kinds(value)

    @field_validator("redact_patterns")
    @classmethod
    def _valid_redaction_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            compile_pattern(pattern)
        return value


def load_settings(home: Path) -> Settings:
    """Read ``home/config.toml`` (if present) and apply ``SLMOPS_<FIELD>`` environment overrides."""
    path = home / CONFIG_FILE_NAME
    values: dict[str, object] = {}
    if path.exists():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except RecursionError:
            # tomllib parses nested arrays and inline tables recursively: a few hundred
            # levels exhaust Python's stack. No setting nests; say so, not a traceback.
            raise ConfigError(f"{path}: not valid TOML: values are nested too deeply") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    for field in Settings.model_fields:
        env_name = _ENV_PREFIX + field.upper()
        env_value = os.environ.get(env_name)
        if not env_value:
            continue
        if field in _TOML_ONLY:
            raise ConfigError(f"{env_name} is not read from the environment; set {field} in {path}")
        if field in _ENV_LISTS:
            values[field] = [item.strip() for item in env_value.split(",") if item.strip()]
        else:
            values[field] = env_value
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    global _loaded_embedder_backend
    with _backend_lock:
        _loaded_embedder_backend = settings.embedder_backend
    return settings


# The embedder backend of the settings loaded last in this process. Embedders are loaded by
# URI from many places (corpora, apps, the server), none of which is handed the settings; a
# process works in one workspace (the CLI, a server, a Ray worker open one), so the backend
# of the workspace it opened is the one its embedders use. store/ cannot call into models/
# (layers), so models/loading.py asks here. An explicit backend passed to load_embedder wins.
_backend_lock = threading.Lock()
_loaded_embedder_backend: EmbedderBackend | None = None


def current_embedder_backend() -> EmbedderBackend:
    """The backend of the workspace settings loaded last in this process; before any, the
    ``SLMOPS_EMBEDDER_BACKEND`` environment variable, else ``onnx``."""
    with _backend_lock:
        if _loaded_embedder_backend is not None:
            return _loaded_embedder_backend
    return parse_embedder_backend(os.environ.get(_ENV_PREFIX + "EMBEDDER_BACKEND") or None)


def parse_embedder_backend(value: str | None) -> EmbedderBackend:
    """``value`` checked against :data:`EMBEDDER_BACKENDS` (None: the default)."""
    if value is None:
        return DEFAULT_EMBEDDER_BACKEND
    for backend in EMBEDDER_BACKENDS:
        if value == backend:
            return backend
    raise ConfigError(
        f"unknown embedder backend {value!r}; use one of {', '.join(EMBEDDER_BACKENDS)}"
    )
