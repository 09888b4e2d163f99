"""Workspace settings: ``config.toml`` in the workspace folder, overridden by environment."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from slmops.errors import ConfigError

CONFIG_FILE_NAME = "config.toml"
_ENV_PREFIX = "SLMOPS_"


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

    @field_validator("cache_url")
    @classmethod
    def _known_cache_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "sql")):
            raise ValueError("must be unset, 'sql' or a redis:// URL")
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
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    for field in Settings.model_fields:
        env_value = os.environ.get(_ENV_PREFIX + field.upper())
        if env_value:
            values[field] = env_value
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
