"""No project id (or agent type) is another's prefix in the cache: get, clear and stats touch
exactly one scope's entries, on the memory backend and on a real Redis.

Issue 20, defect 7: `llmgw cache clear --project a` also deleted project `a:b`'s answers,
because keys were `llmgw:cache:project:<raw id>:<hash>` and clearing went by prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis

from llmgw.cache import KEY_PREFIX, Cache, CachedAnswer, cache_key, scope_of
from llmgw.cache.backends import STATS_KEY, MemoryCache, RedisCache
from llmgw.cache.semantic import SemanticIndex
from llmgw.types import Usage

# Each is a prefix of another, a glob pattern, or an escape of one, for raw keys and MATCH.
PROJECTS = ["a", "a:b", "a:", "a*", "a?", "a[b]", "a[", "a]", "a\\", "a\\b", "ab", "a%3Ab",
            "a b", "a/b", "ä", "*", ":"]
AGENT_TYPES = [None, "-", "qa", "qa:x", "qa*"]


def project(pid: str) -> str:
    return scope_of("project", project_id=pid, agent_type=None)


def answer(content: str) -> CachedAnswer:
    return CachedAnswer(content=content, usage=Usage(prompt_tokens=1, completion_tokens=1),
                        cost_micros=7, model_group="fast", requested_group="fast",
                        request_id=f"req-{content}", created_at=datetime(2026, 1, 2, tzinfo=UTC))


def key(scope: str, text: str = "same question") -> str:
    return cache_key(scope, "fast", [{"role": "user", "content": text}], {"temperature": 0})


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        backend: Cache = MemoryCache()
    else:
        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        backend = RedisCache(url)
    yield backend
    await backend.aclose()


# -- the scope strings ---------------------------------------------------------------------


def test_no_scope_prefixes_another_scopes_keys() -> None:
    scopes = ([project(p) for p in PROJECTS] + ["global"] +
              [scope_of("agent_type", project_id="p", agent_type=t) for t in AGENT_TYPES])
    assert len(set(scopes)) == len(scopes)
    for mine in scopes:
        for other in scopes:
            if other != mine:
                assert not key(other).startswith(f"{KEY_PREFIX}{mine}:"), (mine, other)


def test_an_encoded_scope_holds_no_separator_or_glob_character() -> None:
    for pid in PROJECTS:
        encoded = project(pid).removeprefix("project:")
        assert not set(encoded) & set(":*?[]\\^"), pid


def test_scopes_stay_readable_for_plain_ids() -> None:
    assert project("checkout-eu_2.x") == "project:checkout-eu_2.x"
    assert scope_of("agent_type", project_id="p", agent_type="qa-engineer") == (
        "agent_type:qa-engineer")
    assert scope_of("global", project_id="a:b", agent_type="x") == "global"


@pytest.mark.parametrize("raw", ["project:a:b", "project:a*", "project:", "agent_type:a?",
                                 "tenant:a", "global:x", "project:a%3ab"])
async def test_a_raw_scope_is_refused_everywhere(raw: str, cache: Cache) -> None:
    with pytest.raises(ValueError, match="scope_of"):
        cache_key(raw, "fast", [{"role": "user", "content": "q"}], {})
    with pytest.raises(ValueError, match="scope_of"):
        await cache.clear(raw)
    with pytest.raises(ValueError, match="scope_of"):
        await cache.stats(raw)
    index = SemanticIndex(lambda texts: [[1.0, 0.0] for _ in texts])
    with pytest.raises(ValueError, match="scope_of"):
        await index.add(raw, "fast", "q", "fp", "k")
    with pytest.raises(ValueError, match="scope_of"):
        index.clear(raw)


# -- get, stats, clear on both backends ------------------------------------------------------


async def fill(cache: Cache, scopes: list[str]) -> dict[str, int]:
    """Scope i gets i + 1 entries: a count that leaks across scopes shows."""
    counts = {}
    for i, scope in enumerate(scopes):
        for n in range(i + 1):
            await cache.set(key(scope, f"q{n}"), answer(f"{scope}/{n}"), ttl_s=60)
        counts[scope] = i + 1
    return counts


async def test_get_serves_each_project_its_own_answer(cache: Cache) -> None:
    scopes = [project(p) for p in PROJECTS]
    for scope in scopes:
        await cache.set(key(scope), answer(scope), ttl_s=60)
    for scope in scopes:
        hit = await cache.get(key(scope))
        assert hit is not None and hit.content == scope


async def test_stats_and_clear_touch_exactly_one_project(cache: Cache) -> None:
    scopes = [project(p) for p in PROJECTS]
    counts = await fill(cache, scopes)
    total = sum(counts.values())
    # Clear `a` first: every id it is a prefix of keeps all its answers.
    assert await cache.clear(project("a")) == counts[project("a")]
    assert (await cache.stats()).entries == total - counts[project("a")]
    for scope, n in counts.items():
        stats = await cache.stats(scope)
        assert (stats.entries, stats.scope) == (0 if scope == project("a") else n, scope), scope
    assert await cache.get(key(project("a"), "q0")) is None
    for scope in counts:
        if scope != project("a"):
            assert (await cache.get(key(scope, "q0"))).content == f"{scope}/0"  # type: ignore[union-attr]
    left = total - counts[project("a")]
    for scope, n in counts.items():  # then each of the others, exactly its own
        if scope != project("a"):
            assert await cache.clear(scope) == n, scope
            left -= n
            assert (await cache.stats()).entries == left
    assert left == 0


async def test_agent_type_scopes_are_exact_too(cache: Cache) -> None:
    scopes = [scope_of("agent_type", project_id="p", agent_type=t) for t in AGENT_TYPES]
    counts = await fill(cache, [*scopes, "global"])
    for scope, n in counts.items():
        assert (await cache.stats(scope)).entries == n, scope
    untyped = scope_of("agent_type", project_id="p", agent_type=None)
    assert await cache.clear(untyped) == counts[untyped]  # not the agent type named "-"
    assert await cache.clear(scope_of("agent_type", project_id="p", agent_type="qa")) == (
        counts[scope_of("agent_type", project_id="p", agent_type="qa")])
    assert (await cache.stats()).entries == sum(counts.values()) - counts[untyped] - counts[
        scope_of("agent_type", project_id="p", agent_type="qa")]


async def test_redis_keys_of_the_old_format_are_never_a_projects(redis_url: str) -> None:
    """A key written before the encoding (`project:a:b` raw) is not project `a`'s: clearing
    or counting `a` leaves it alone; clearing everything removes it; the stats hash stays."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    cache = RedisCache(redis_url)
    try:
        old = f"{KEY_PREFIX}project:a:b:{'0' * 64}"
        await client.set(old, answer("old").model_dump_json())
        await cache.set(key(project("a")), answer("a"), ttl_s=60)
        await cache.get(key(project("a")))  # creates the stats hash
        assert (await cache.stats(project("a"))).entries == 1
        assert await cache.clear(project("a")) == 1
        assert await client.exists(old) == 1
        assert (await cache.stats()).entries == 1
        assert await cache.clear() == 1
        assert await client.exists(old) == 0 and await client.exists(STATS_KEY) == 1
    finally:
        await cache.aclose()
        await client.aclose()
