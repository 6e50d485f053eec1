"""The cache backends: an in-process LRU and Redis, and `make_cache` to pick one from config.

Both implement `llmgw.cache.Cache`. The Redis backend never fails a request: when Redis
cannot be reached it logs one warning, answers every `get` with a miss and drops every
`set` for `retry_after_s`, then tries again (one request probes; the rest stay uncached).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from llmgw.cache import KEY_PREFIX, Cache, CachedAnswer, CacheStats, in_scope, scope_prefix
from llmgw.cache.coalesce import Coalesce
from llmgw.errors import ConfigError, LLMGatewayError

if TYPE_CHECKING:
    from llmgw.config.models import CacheSettings

log = logging.getLogger("llmgw.cache")

Clock = Callable[[], float]

ENV_CACHE_URL = "LLMGW_CACHE_URL"
STATS_KEY = f"{KEY_PREFIX}stats"  # a hash: hits, misses (every process's totals)

# Failures that mean "Redis is not usable right now". Any RedisError counts: a server that
# answers OOM or READONLY must not fail requests either.
_UNAVAILABLE = (RedisError, OSError)

# One round trip for many gets: the values (nil for a miss) and the hit/miss counters
# together. KEYS: the entries, then the stats hash.
_GET_AND_COUNT = """
local out, hits, n = {}, 0, #KEYS - 1
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if v then hits = hits + 1; out[i] = v else out[i] = false end
end
if hits > 0 then redis.call('HINCRBY', KEYS[n + 1], 'hits', hits) end
if hits < n then redis.call('HINCRBY', KEYS[n + 1], 'misses', n - hits) end
return out
"""
# Many answers in one call: one command for the client to pack, not a pipeline of SETs,
# each of which the client packs on the event loop.
_SET_MANY = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
end
return #KEYS
"""


class CacheUnavailable(LLMGatewayError):
    """An explicit cache operation (clear, stats) could not reach the cache backend."""


def _matcher(scope: str | None) -> Callable[[str], bool]:
    """Whether a key is an entry of `scope` (of any scope when None). A scope matches its own
    keys only: `scope_of` encodes ids, and a key must be that prefix plus just the hash."""
    if scope is None:
        return lambda key: key.startswith(KEY_PREFIX) and key != STATS_KEY
    prefix = scope_prefix(scope)
    return lambda key: in_scope(key, prefix)


class MemoryCache:
    """An in-process LRU bounded by entry count, with a TTL per entry.

    Answers are kept as JSON, as Redis keeps them: a full cache then adds no objects for
    Python's garbage collector to walk (an answer as objects is several of them, and each
    pass walked them all), and every hit is a fresh copy.
    Nothing here awaits, so each method is atomic under asyncio.
    """

    name = "memory"

    def __init__(self, max_entries: int = 10_000, clock: Clock = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return CachedAnswer.model_validate_json(entry[1])

    async def set(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, answer.model_dump_json())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def clear(self, scope: str | None = None) -> int:
        if scope is None:
            n = len(self._entries)
            self._entries.clear()
            return n
        mine = _matcher(scope)
        doomed = [k for k in self._entries if mine(k)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    async def stats(self, scope: str | None = None) -> CacheStats:
        mine = _matcher(scope)  # a bad scope fails before anything changes
        now = self._clock()
        for k in [k for k, (expires, _) in self._entries.items() if now >= expires]:
            del self._entries[k]
        entries = len(self._entries) if scope is None else sum(map(mine, self._entries))
        return CacheStats(backend=self.name, entries=entries, scope=scope, hits=self.hits,
                          misses=self.misses)

    async def aclose(self) -> None:
        self._entries.clear()


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, fit for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH wildcards so a scope is matched literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCache:
    """Answers in Redis as JSON with a TTL Redis enforces; shared by every gateway process."""

    name = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 0.5, retry_after_s: float = 5.0,
                 clock: Clock = time.monotonic) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.retry_after_s = retry_after_s
        self._clock = clock
        # No client-side retries: a retry with backoff on every request is exactly the
        # per-request cost of a dead Redis this class exists to avoid.
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._get_script = self._client.register_script(_GET_AND_COUNT)
        self._set_script = self._client.register_script(_SET_MANY)
        # Under load the gets (and sets) made while one round trip is out go in the next.
        self._get_many: Coalesce[str, bytes | None] = Coalesce(self._send_gets)
        self._set_many: Coalesce[tuple[str, str, int], None] = Coalesce(self._send_sets)
        self._down = False
        self._retry_at = 0.0
        self.hits = 0  # this process's; stats() reports every process's from Redis
        self.misses = 0
        self.errors = 0

    # -- availability ---------------------------------------------------------------

    def _usable(self) -> bool:
        """False while Redis is known down; past the wait, this caller becomes the probe."""
        if not self._down:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_after_s  # concurrent callers skip while we probe
        return True

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._retry_at = self._clock() + self.retry_after_s
        if self._down:
            log.debug("Redis cache at %s still unavailable: %s", self.safe_url, exc)
            return
        self._down = True
        log.warning("Redis cache at %s is unavailable (%s: %s); requests continue uncached, "
                    "retrying in %.0f s.", self.safe_url, type(exc).__name__, exc,
                    self.retry_after_s)

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis cache at %s is reachable again.", self.safe_url)

    # -- the Cache protocol -------------------------------------------------------------

    async def get(self, key: str) -> CachedAnswer | None:
        if not self._usable():
            self.misses += 1
            return None
        try:
            raw = await self._get_many(key)
        except _UNAVAILABLE as exc:
            self._failed(exc)
            self.misses += 1
            return None
        self._ok()
        if raw is None:
            self.misses += 1
            return None
        try:
            answer = CachedAnswer.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            log.warning("Dropping an unreadable cache entry %s: %s", key, exc)
            await self._drop_corrupt(key)
            self.misses += 1
            return None
        self.hits += 1
        return answer

    async def _drop_corrupt(self, key: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.unlink(key)
                pipe.hincrby(STATS_KEY, "hits", -1)  # the script counted it as a hit
                pipe.hincrby(STATS_KEY, "misses", 1)
                await pipe.execute()
        except _UNAVAILABLE as exc:
            self._failed(exc)

    async def set(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        if not self._usable():
            return
        try:
            await self._set_many((key, answer.model_dump_json(), max(1, round(ttl_s * 1000))))
        except _UNAVAILABLE as exc:
            self._failed(exc)
            return
        self._ok()

    async def _send_gets(self, keys: list[str]) -> list[bytes | None]:
        return list(await self._get_script(keys=[*keys, STATS_KEY]))

    async def _send_sets(self, entries: list[tuple[str, str, int]]) -> list[None]:
        if len(entries) == 1:
            key, value, px = entries[0]
            await self._client.set(key, value, px=px)
        else:
            await self._set_script(keys=[key for key, _, _ in entries],
                                   args=[a for _, value, px in entries for a in (value, px)])
        return [None] * len(entries)

    async def _scan(self, scope: str | None) -> AsyncIterator[bytes]:
        """The keys of `scope`'s entries (every entry's when None). MATCH narrows the scan to
        the scope's prefix; each key is then checked exactly (see `_matcher`)."""
        mine = _matcher(scope)
        pattern = _glob_escape(scope_prefix(scope)) + "*"
        async for key in self._client.scan_iter(match=pattern, count=1000):
            if mine(key.decode(errors="replace")):
                yield key

    async def clear(self, scope: str | None = None) -> int:
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in self._scan(scope):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self._client.unlink(*batch)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return deleted

    async def stats(self, scope: str | None = None) -> CacheStats:
        try:
            entries = 0
            async for _ in self._scan(scope):
                entries += 1
            totals = await self._client.hgetall(STATS_KEY)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return CacheStats(backend=self.name, entries=entries, scope=scope,
                          hits=int(totals.get(b"hits", 0)), misses=int(totals.get(b"misses", 0)),
                          errors=self.errors)

    def _unavailable(self, exc: BaseException) -> CacheUnavailable:
        return CacheUnavailable(f"The Redis cache at {self.safe_url} is unavailable: "
                                f"{type(exc).__name__}: {exc}",
                                hint="Start Redis or fix llmgw.cache.url / LLMGW_CACHE_URL.")

    async def aclose(self) -> None:
        await self._client.aclose()


def make_cache(settings: CacheSettings, shared_url: str | None = None) -> Cache | None:
    """The backend the config asks for; None when caching is off.

    For Redis the URL is `LLMGW_CACHE_URL` when set (the environment overrides the file),
    else `llmgw.cache.url`, else `shared_url` (the Router's `redis_url`, so one Redis set
    once serves both). The variables never switch the backend on by themselves.
    """
    if settings.backend == "none":
        return None
    if settings.backend == "memory":
        return MemoryCache(max_entries=settings.max_entries)
    url = os.environ.get(ENV_CACHE_URL) or settings.url or shared_url
    if not url:
        raise ConfigError("llmgw.cache.url: backend redis needs a URL.", key="llmgw.cache.url",
                          hint=f"Set llmgw.cache.url (redis://host:6379/0), {ENV_CACHE_URL} "
                                "or LLMGW_REDIS_URL.")
    try:
        return RedisCache(url)
    except ValueError as exc:  # redis-py's verdict on a malformed URL
        raise ConfigError(f"llmgw.cache.url: {exc}", key="llmgw.cache.url",
                          hint="Use redis://[:password@]host:port/db, rediss://... or unix://...") \
            from None
