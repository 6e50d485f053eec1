"""MemoryCache and RedisCache against the same contract; Redis is a real redis-server.

Time is a fake clock wherever our code reads it; only Redis's own TTL needs real time,
and that is awaited by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from llmgw.cache import Cache, CachedAnswer, cache_key, scope_of
from llmgw.cache.backends import (
    STATS_KEY,
    CacheUnavailable,
    MemoryCache,
    RedisCache,
    make_cache,
)
from llmgw.config.models import CacheSettings
from llmgw.errors import ConfigError
from llmgw.types import Usage
from tests.fixtures.redis import RedisServer, free_port

LOGGER = "llmgw.cache"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def answer(content: str = "hello", cost_micros: int = 1234) -> CachedAnswer:
    return CachedAnswer(content=content, tool_calls=[{"id": "t1", "type": "function",
                                                      "function": {"name": "f", "arguments": "{}"}}],
                        finish_reason="stop", usage=Usage(prompt_tokens=5, completion_tokens=3),
                        cost_micros=cost_micros, model_group="fast", requested_group="fast",
                        deployment="d1", provider="openai", model="gpt-x", request_id="req-1",
                        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def key(scope: str = "project:p1", text: str = "hi") -> str:
    return cache_key(scope, "fast", [{"role": "user", "content": text}], {"temperature": 0})


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    """A plain client on the session server, flushed so each test starts empty."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Cache]:
    if request.param == "memory":
        backend: Cache = MemoryCache(max_entries=100, clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:  # sync: an async fixture can't be requested here
            client.flushdb()
        backend = RedisCache(url, clock=clock)
    yield backend
    await backend.aclose()


# -- the contract, both backends ------------------------------------------------------


async def test_is_a_cache(cache: Cache) -> None:
    assert isinstance(cache, Cache)
    assert cache.name in ("memory", "redis")


async def test_miss_then_hit(cache: Cache) -> None:
    k = key()
    assert await cache.get(k) is None
    await cache.set(k, answer(), ttl_s=60)
    assert await cache.get(k) == answer()


async def test_a_different_key_misses(cache: Cache) -> None:
    await cache.set(key(text="a"), answer("A"), ttl_s=60)
    assert await cache.get(key(text="b")) is None
    assert await cache.get(key(scope="project:other", text="a")) is None
    assert (await cache.get(key(text="a"))).content == "A"  # type: ignore[union-attr]


async def test_set_replaces(cache: Cache) -> None:
    await cache.set(key(), answer("old"), ttl_s=60)
    await cache.set(key(), answer("new"), ttl_s=60)
    assert (await cache.get(key())).content == "new"  # type: ignore[union-attr]


async def test_clear_scope_deletes_only_that_scope(cache: Cache) -> None:
    for scope, text in [("project:a", "1"), ("project:a", "2"), ("project:ab", "1"),
                        ("project:b", "1"), ("global", "1")]:
        await cache.set(key(scope, text), answer(), ttl_s=60)
    assert await cache.clear("project:a") == 2
    assert await cache.get(key("project:a", "1")) is None
    assert await cache.get(key("project:a", "2")) is None
    for scope in ("project:ab", "project:b", "global"):
        assert await cache.get(key(scope, "1")) is not None, scope
    assert await cache.clear("project:nobody") == 0
    assert await cache.clear() == 3
    assert (await cache.stats()).entries == 0


async def test_clear_matches_a_scope_literally(cache: Cache) -> None:
    # A project id with glob characters must not become a wildcard in Redis's SCAN MATCH
    # (tests/cache/test_scope_isolation.py covers ids that are each other's prefixes).
    star, query = (scope_of("project", project_id=p, agent_type=None) for p in ("a*", "a?[x]"))
    await cache.set(key(star), answer(), ttl_s=60)
    await cache.set(key("project:ab"), answer(), ttl_s=60)
    await cache.set(key(query), answer(), ttl_s=60)
    assert await cache.clear(star) == 1
    assert await cache.get(key("project:ab")) is not None
    assert await cache.clear(query) == 1
    assert await cache.get(key("project:ab")) is not None


async def test_stats_count_hits_misses_entries(cache: Cache) -> None:
    await cache.get(key(text="1"))
    await cache.set(key(text="1"), answer(), ttl_s=60)
    await cache.set(key(text="2"), answer(), ttl_s=60)
    await cache.get(key(text="1"))
    await cache.get(key(text="2"))
    await cache.get(key(text="3"))
    stats = await cache.stats()
    assert (stats.backend, stats.entries, stats.hits, stats.misses, stats.errors) == (
        cache.name, 2, 2, 2, 0)


# -- MemoryCache ------------------------------------------------------------------------


async def test_memory_ttl_follows_the_clock(clock: FakeClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set(key(), answer(), ttl_s=10)
    clock.advance(9.999)
    assert await cache.get(key()) is not None
    clock.advance(0.001)
    assert await cache.get(key()) is None
    assert (await cache.stats()).entries == 0


async def test_memory_expired_entries_leave_the_count(clock: FakeClock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set(key(text="short"), answer(), ttl_s=1)
    await cache.set(key(text="long"), answer(), ttl_s=100)
    clock.advance(2)
    assert (await cache.stats()).entries == 1


async def test_memory_evicts_least_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache(max_entries=3, clock=clock)
    a, b, c, d, e = (key(text=t) for t in "abcde")
    for k in (a, b, c):
        await cache.set(k, answer(), ttl_s=60)
    assert await cache.get(a) is not None  # a is now the most recent; b the least
    await cache.set(d, answer(), ttl_s=60)
    assert [await cache.get(k) is not None for k in (a, b, c, d)] == [True, False, True, True]
    await cache.set(c, answer("c2"), ttl_s=60)  # a re-set also counts as a use
    await cache.set(e, answer(), ttl_s=60)  # evicts a (order now: a, d, c -> d, c, e)
    assert [await cache.get(k) is not None for k in (a, c, d, e)] == [False, True, True, True]
    assert (await cache.stats()).entries == 3


async def test_memory_keeps_answers_out_of_the_garbage_collector() -> None:
    cache = MemoryCache()
    stored = answer()
    stored.tool_calls.append({"id": "call-1", "function": {"name": "f", "arguments": "{}"}})
    for n in range(50):
        await cache.set(key(text=str(n)), stored, ttl_s=60)
    # What an entry holds is text: nothing of it for a GC pass to walk.
    assert not any(gc.is_tracked(value) for _, value in cache._entries.values())
    hit = await cache.get(key(text="7"))
    assert hit == stored and hit is not stored  # a copy, equal to what was stored
    hit.tool_calls.clear()  # a caller changing its copy changes no other hit
    assert (await cache.get(key(text="7"))).tool_calls == stored.tool_calls


# -- RedisCache -------------------------------------------------------------------------


async def test_redis_stores_json_with_a_ttl(redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    cache = RedisCache(redis_url)
    await cache.set(key(), answer(), ttl_s=60)
    assert CachedAnswer.model_validate_json(await raw.get(key())) == answer()
    assert 59_000 < await raw.pttl(key()) <= 60_000
    await cache.aclose()


async def test_redis_ttl_expires(redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    cache = RedisCache(redis_url)
    await cache.set(key(), answer(), ttl_s=0.2)
    assert await raw.pttl(key()) <= 200  # has a TTL (or -2: already gone on a slow machine)
    assert await raw.pttl(key()) != -1
    deadline = time.monotonic() + 5
    while await raw.exists(key()):
        assert time.monotonic() < deadline, "the key never expired"
        await asyncio.sleep(0.02)
    assert await cache.get(key()) is None
    await cache.aclose()


async def test_redis_stats_are_shared_by_processes(redis_url: str,  # noqa: F811
                                                   raw: aioredis.Redis) -> None:
    one, two = RedisCache(redis_url), RedisCache(redis_url)
    await one.set(key(), answer(), ttl_s=60)
    await one.get(key())
    await two.get(key())
    await two.get(key(text="nope"))
    assert (one.hits, one.misses, two.hits, two.misses) == (1, 0, 1, 1)
    for cache in (one, two):
        stats = await cache.stats()
        assert (stats.hits, stats.misses, stats.entries) == (2, 1, 1)
    assert await one.clear() == 1
    assert await raw.exists(STATS_KEY)  # clearing entries keeps the totals
    await one.aclose()
    await two.aclose()


async def test_redis_clear_in_batches(redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    cache = RedisCache(redis_url)
    payload = answer().model_dump_json()
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(2500):
            pipe.set(key("project:big", str(i)), payload, px=60_000)
        pipe.set(key("project:small"), payload, px=60_000)
        await pipe.execute()
    assert (await cache.stats()).entries == 2501
    assert await cache.clear("project:big") == 2500
    assert (await cache.stats()).entries == 1
    await cache.aclose()


@pytest.mark.parametrize("corrupt", [b"not json", b'{"content": 1}', b"\xff\xfe"])
async def test_redis_corrupt_value_is_a_miss_and_deleted(redis_url: str,  # noqa: F811
                                                         raw: aioredis.Redis,
                                                         corrupt: bytes) -> None:
    cache = RedisCache(redis_url)
    await raw.set(key(), corrupt)
    assert await cache.get(key()) is None
    assert not await raw.exists(key())
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.errors) == (0, 1, 0)
    await cache.set(key(), answer(), ttl_s=60)  # and the cache keeps working
    assert await cache.get(key()) == answer()
    await cache.aclose()


class NetworkCounter:
    """Counts the commands a RedisCache sends (each is a network attempt)."""

    def __init__(self, cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = cache._client.execute_command

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(cache._client, "execute_command", counting)


async def test_redis_down_costs_nothing_and_recovers(
        clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        redis_servers: Callable[..., RedisServer]) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    port = free_port()  # nothing listens here yet
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    cache = RedisCache(url, retry_after_s=5.0, clock=clock)
    net = NetworkCounter(cache, monkeypatch)

    assert await cache.get(key()) is None
    await cache.set(key(), answer(), ttl_s=60)  # no exception
    assert net.calls == 1 and cache.errors == 1
    [warning] = warnings_of(caplog)
    message = warning.getMessage()
    assert f"127.0.0.1:{port}" in message and "uncached" in message
    assert "s3cret-pw" not in message

    for _ in range(50):  # within retry_after_s: no network at all
        clock.advance(0.09)
        assert await cache.get(key()) is None
        await cache.set(key(), answer(), ttl_s=60)
    assert net.calls == 1 and cache.errors == 1

    clock.advance(0.6)  # past the wait, still down: one probe, no second warning
    assert await cache.get(key()) is None
    assert net.calls == 2 and cache.errors == 2
    assert len(warnings_of(caplog)) == 1

    redis_servers(port, password="s3cret-pw")
    await cache.set(key(), answer(), ttl_s=60)  # still inside the new wait: dropped
    assert net.calls == 2
    clock.advance(5.0)
    await cache.set(key(), answer(), ttl_s=60)
    assert await cache.get(key()) == answer()
    assert len(warnings_of(caplog)) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert (await cache.stats()).errors == 2
    await cache.aclose()


async def test_redis_down_warns_once_under_concurrency(
        clock: FakeClock, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    net = NetworkCounter(cache, monkeypatch)
    results = await asyncio.gather(*(cache.get(key(text=str(i))) for i in range(20)))
    assert results == [None] * 20
    assert len(warnings_of(caplog)) == 1
    calls = net.calls
    clock.advance(5.0)  # past the wait: one request probes, the others stay uncached
    await asyncio.gather(*(cache.get(key(text=str(i))) for i in range(20)))
    assert net.calls == calls + 1
    assert len(warnings_of(caplog)) == 1
    await cache.aclose()


async def test_redis_stopped_mid_use(clock: FakeClock, caplog: pytest.LogCaptureFixture,
                                     redis_servers: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_servers()
    cache = RedisCache(server.url, clock=clock)
    await cache.set(key(), answer(), ttl_s=60)
    assert await cache.get(key()) == answer()
    server.stop()
    assert await cache.get(key()) is None
    await cache.set(key(), answer(), ttl_s=60)
    assert await cache.get(key()) is None
    assert cache.errors == 1 and len(warnings_of(caplog)) == 1
    with pytest.raises(CacheUnavailable, match="unavailable"):
        await cache.stats()  # explicit operations (the CLI's) do report the failure
    with pytest.raises(CacheUnavailable):
        await cache.clear()
    await cache.aclose()


async def test_redis_that_never_answers_times_out(clock: FakeClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Accepts connections, never replies: the socket timeout bounds the cost.
    held: list[asyncio.StreamWriter] = []  # kept open: a dropped writer closes its socket
    server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", socket_timeout=0.1, clock=clock)
    started = time.monotonic()
    assert await cache.get(key()) is None
    assert time.monotonic() - started < 2
    assert cache.errors == 1 and len(warnings_of(caplog)) == 1
    await cache.aclose()
    for writer in held:
        writer.close()
    server.close()


# -- make_cache -------------------------------------------------------------------------


def test_make_cache_none_and_memory() -> None:
    assert make_cache(CacheSettings(backend="none")) is None
    memory = make_cache(CacheSettings(backend="memory", max_entries=7))
    assert isinstance(memory, MemoryCache) and memory.max_entries == 7


async def test_make_cache_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMGW_CACHE_URL", raising=False)
    from_file = make_cache(CacheSettings(backend="redis", url="redis://127.0.0.1:1/0"))
    assert isinstance(from_file, RedisCache) and from_file.url == "redis://127.0.0.1:1/0"
    monkeypatch.setenv("LLMGW_CACHE_URL", "redis://127.0.0.1:2/3")
    from_env = make_cache(CacheSettings(backend="redis", url="redis://127.0.0.1:1/0"))
    assert isinstance(from_env, RedisCache) and from_env.url == "redis://127.0.0.1:2/3"
    assert isinstance(make_cache(CacheSettings(backend="memory")), MemoryCache)  # no switch
    for c in (from_file, from_env):
        await c.aclose()


def test_make_cache_redis_needs_a_valid_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMGW_CACHE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"llmgw\.cache\.url") as info:
        make_cache(CacheSettings(backend="redis"))
    assert info.value.key == "llmgw.cache.url"
    with pytest.raises(ConfigError, match=r"llmgw\.cache\.url"):
        make_cache(CacheSettings(backend="redis", url="http://127.0.0.1:6379"))


async def test_redis_concurrent_gets_and_sets_share_round_trips(
        redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    async def calls(command: str) -> int:
        return (await raw.info("commandstats")).get(f"cmdstat_{command}", {}).get("calls", 0)

    cache = RedisCache(redis_url)
    # Load both scripts: later calls are one EVALSHA each.
    await cache.get(key(text="warm"))
    warm = [key(text=f"warm{i}") for i in range(3)]  # one alone, then two together
    await asyncio.gather(*(cache.set(k, answer(), ttl_s=60) for k in warm))
    await raw.delete(*warm)
    sets, scripts = await calls("set"), await calls("evalsha")
    texts = [f"q{i}" for i in range(20)]
    await asyncio.gather(*(cache.set(key(text=t), answer(content=t), ttl_s=60)
                           for t in texts[:12]))
    # The first set went alone; the 11 made while it was out went together in one script
    # (whose SETs Redis counts as well).
    assert (await calls("set") - sets, await calls("evalsha") - scripts) == (12, 1)
    before = await calls("evalsha")
    got = await asyncio.gather(*(cache.get(key(text=t)) for t in texts))
    assert [g.content if g else None for g in got] == texts[:12] + [None] * 8
    # The first get went alone; the 19 made while it was out went together in one script.
    assert await calls("evalsha") - before == 2
    assert (cache.hits, cache.misses) == (12, 9)
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (12, 9, 12)
    assert all([0 < await raw.pttl(key(text=t)) <= 60_000 for t in texts[:12]])
    await cache.aclose()
