"""Step result caches. A key is derived from the step's identity (name, kind, version and,
for model calls, model and sampling settings) and the canonical JSON of its validated input;
values are stored as JSON and re-validated against the step's output type when read."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from slmops.errors import WorkspaceError
from slmops.store.schema import cache_entries


def cache_key(identity: dict[str, Any], input_json: Any) -> str:
    canonical = json.dumps(
        {"identity": identity, "input": input_json},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class StepCache(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, step: str, value: str) -> None: ...

    def clear(self, step: str | None = None) -> int: ...


class SQLStepCache:
    """Cache entries in the workspace's metadata database (SQLite or Postgres)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise WorkspaceError(f"the SQL step cache supports SQLite and Postgres, not {dialect}")
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert

    def get(self, key: str) -> str | None:
        with self._engine.connect() as connection:
            return connection.execute(
                select(cache_entries.c.value).where(cache_entries.c.key == key)
            ).scalar_one_or_none()

    def put(self, key: str, step: str, value: str) -> None:
        statement = self._insert(cache_entries).values(
            key=key, step=step, value=value, created_at=time.time()
        )
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "created_at": time.time()}
        )
        try:
            with self._engine.begin() as connection:
                connection.execute(statement)
        except SQLAlchemyError as exc:
            raise WorkspaceError(f"cache write failed: {exc}") from exc

    def clear(self, step: str | None = None) -> int:
        statement = delete(cache_entries)
        if step is not None:
            statement = statement.where(cache_entries.c.step == step)
        with self._engine.begin() as connection:
            return int(connection.execute(statement).rowcount or 0)


class RedisStepCache:
    """Cache entries in Redis (``redis://host:port/db``), optionally expiring."""

    _PREFIX = "slmops:cache:"

    def __init__(self, url: str, *, ttl_s: int | None = None, client: Any = None) -> None:
        if client is None:
            try:
                import redis
            except ImportError as exc:
                raise WorkspaceError(
                    "a redis:// cache needs the extra: pip install 'slmops[redis]'"
                ) from exc
            client = redis.Redis.from_url(url)
        self._client = client
        self._ttl = ttl_s

    def get(self, key: str) -> str | None:
        value = self._client.get(self._PREFIX + key)
        return value.decode("utf-8") if isinstance(value, bytes) else value

    def put(self, key: str, step: str, value: str) -> None:
        self._client.set(self._PREFIX + key, value, ex=self._ttl)
        self._client.sadd(f"{self._PREFIX}step:{step}", key)

    def clear(self, step: str | None = None) -> int:
        pattern = f"{self._PREFIX}step:{step}" if step else f"{self._PREFIX}step:*"
        removed = 0
        for index_key in self._client.scan_iter(match=pattern):
            keys = [
                self._PREFIX + (k.decode() if isinstance(k, bytes) else k)
                for k in self._client.smembers(index_key)
            ]
            if keys:
                removed += int(self._client.delete(*keys))
            self._client.delete(index_key)
        return removed
