from __future__ import annotations

import os

import pytest
from pydantic import BaseModel

from slmops.core import Function
from slmops.core.cache import RedisStepCache, SQLStepCache
from slmops.core.runtime import Runtime, use_runtime
from slmops.core.tracing import Tracer


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return x * x


def cached_square(counter: Counter, **options) -> Function:
    return Function(counter, name="square", input_type=int, output_type=int, cache=True, **options)


def test_cached_step_is_not_rerun_and_the_hit_is_traced(spans_of):
    counter = Counter()
    step = cached_square(counter)
    first, second = step.invoke(9), step.invoke(9)
    assert (first.output, second.output, counter.calls) == (81, 81, 1)
    assert spans_of(first.trace_id)["square"]["attributes"]["slmops.cache.hit"] is False
    assert spans_of(second.trace_id)["square"]["attributes"]["slmops.cache.hit"] is True
    step.run(10)
    assert counter.calls == 2  # another input is another key


def test_version_change_invalidates_the_cache():
    counter = Counter()
    cached_square(counter).run(3)
    cached_square(counter, version="2").run(3)
    assert counter.calls == 2


def test_uncached_steps_always_run():
    counter = Counter()
    step = Function(counter, name="square", input_type=int, output_type=int)
    step.run(2), step.run(2)
    assert counter.calls == 2


class V1(BaseModel):
    value: int


class V2(BaseModel):
    value: int
    unit: str


def test_stale_values_are_revalidated_and_recomputed(workspace):
    calls = []

    def make_v1(x: int) -> V1:
        calls.append(1)
        return V1(value=x)

    def make_v2(x: int) -> V2:
        calls.append(2)
        return V2(value=x, unit="m")

    Function(make_v1, name="measure", cache=True).run(5)
    # Same name and version but the output type gained a field: the old value must not be served.
    assert Function(make_v2, name="measure", cache=True).run(5) == V2(value=5, unit="m")
    assert calls == [1, 2]


def test_sql_cache_clear(workspace):
    cache = SQLStepCache(workspace.engine)
    cache.put("k1", "a", "1")
    cache.put("k2", "b", "2")
    cache.put("k1", "a", "3")  # upsert
    assert cache.get("k1") == "3"
    assert cache.clear("a") == 1
    assert cache.get("k1") is None and cache.get("k2") == "2"


def test_redis_cache_backend():
    fakeredis = pytest.importorskip("fakeredis")
    cache = RedisStepCache("redis://unused", client=fakeredis.FakeRedis())
    counter = Counter()
    with use_runtime(Runtime(tracer=Tracer(), cache=cache)):
        step = cached_square(counter)
        assert step.run(4) == 16 and step.run(4) == 16
    assert counter.calls == 1
    assert cache.clear("square") == 1
    assert cache.clear() == 0


def test_without_a_cache_backend_steps_still_run():
    counter = Counter()
    with use_runtime(Runtime.in_memory()):
        step = cached_square(counter)
        step.run(1), step.run(1)
    assert counter.calls == 2


REDIS_URL = os.environ.get("SLMOPS_TEST_REDIS_URL")


@pytest.mark.skipif(not REDIS_URL, reason="set SLMOPS_TEST_REDIS_URL to test a real Redis")
def test_workspace_cache_url_uses_a_real_redis(tmp_path, monkeypatch):
    import redis

    from slmops.store import Workspace

    monkeypatch.setenv("SLMOPS_CACHE_URL", REDIS_URL)
    counter = Counter()
    with Workspace.open(tmp_path / "redis-ws") as ws:
        runtime = Runtime.from_workspace(ws)
        assert isinstance(runtime.cache, RedisStepCache)
        step = cached_square(counter, version=f"redis-{tmp_path.name}")  # unique per run
        with use_runtime(runtime):
            assert step.run(12) == 144 and step.run(12) == 144
    assert counter.calls == 1
    client = redis.Redis.from_url(REDIS_URL)
    assert client.scard("slmops:cache:step:square") >= 1
    assert runtime.cache.clear("square") >= 1
