"""Per-key limits of the HTTP fronts: a runaway agent is bounded by its API key (rpm, tpm,
max_parallel), not only by money.

A key's limits are its own (`llmgw keys create --rpm/--tpm/--max-parallel`), else, field by
field, its agent type's entry of `llmgw.key_limits`, else its "*" entry. They hold across
workers and hosts through the Redis the Router shares its state in
(`router_settings.shared_state_url()`), in process memory without one: the same stores,
key layout, minute windows and crash-expiring leases as the deployments' capacity gate
(llmgw.routing.capacity), but with one check-and-take script of its own and no queue: a key over its
limit is refused at once (HTTP 429 with Retry-After, a `refused` row naming the limit), since
waiting would only hide a runaway agent and hold its connection.

tpm is counted when the request is admitted: its prompt estimate (the JSON body's size / 4)
plus the max tokens it asks for. A limit counted after the answer lets a burst of parallel
requests all pass and overshoot before the first one settles; counting up front keeps the
minute's tokens under the limit, and a caller can see why from the request itself.

A key and its rotation successors share one set of counters (`KeyInfo.limit_id`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from redis.exceptions import RedisError

from llmgw.config.models import Config
from llmgw.errors import RateLimited
from llmgw.ids import new_request_id
from llmgw.ledger.api_keys import KeyInfo
from llmgw.routing.capacity import (
    _KEY_TTL_S,
    Lease,
    Limits,
    MemoryStore,
    RedisStore,
    Usage,
    _keys,
    seconds_to_next_window,
    window,
)
from llmgw.server.auth import Caller

_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
log = logging.getLogger("llmgw.server.key_limits")
_LEASE_SLACK_S = 60.0  # a lease outlives the longest request by this much (a crashed worker's)

# KEYS: in-flight zset (lease -> expiry), requests counter, tokens counter (this minute).
# ARGV: now, lease expiry, lease id, max_parallel, rpm, tpm (-1: none), tokens.
# Returns 0 (taken) or the limit in the way: 1 max_parallel, 2 rpm, 3 tpm.
_TAKE = """
local now = tonumber(ARGV[1])
local par, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if par >= 0 and redis.call('ZCARD', KEYS[1]) >= par then return 1 end
if rpm >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= rpm then return 2 end
if tpm >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') + tokens > tpm then return 3 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], KEY_TTL)
if tokens > 0 then
  redis.call('INCRBY', KEYS[3], tokens)
  redis.call('EXPIRE', KEYS[3], KEY_TTL)
end
return 0
""".replace("KEY_TTL", str(_KEY_TTL_S))


class KeyRedisStore(RedisStore):
    async def take(self, name: str, limits: Limits, lease_id: str, lease_s: float, tokens: int,
                   now: float) -> int:
        keys = _keys(name, now)
        return int(await self._client().eval(_TAKE, len(keys), *keys, now, now + lease_s,
                                             lease_id, *limits.args(), tokens))


class KeyMemoryStore(MemoryStore):
    async def take(self, name: str, limits: Limits, lease_id: str, lease_s: float, tokens: int,
                   now: float) -> int:
        w = window(now)
        with self._lock:
            st = self._state(name)
            st.leases = {k: t for k, t in st.leases.items() if t > now}
            if limits.max_parallel is not None and len(st.leases) >= limits.max_parallel:
                return 1
            if limits.rpm is not None and st.requests.get(w, 0) >= limits.rpm:
                return 2
            if limits.tpm is not None and st.tokens.get(w, 0) + tokens > limits.tpm:
                return 3
            st.leases[lease_id] = now + lease_s
            st.requests = {w: st.requests.get(w, 0) + 1}
            st.tokens = {w: st.tokens.get(w, 0) + tokens}
            return 0


class KeyLimited(RateLimited):
    """An API key is at one of its limits; nothing was sent to a provider."""

    limit = "limit"


class KeyRateLimited(KeyLimited):
    limit = "rpm"


class KeyTokenRateLimited(KeyLimited):
    limit = "tpm"


class KeyConcurrencyLimited(KeyLimited):
    limit = "max_parallel"


_REFUSALS: dict[int, type[KeyLimited]] = {
    1: KeyConcurrencyLimited, 2: KeyRateLimited, 3: KeyTokenRateLimited}


@dataclass
class KeyPass:
    """A request admitted under its key's limits: its lease ends with `release` (idempotent),
    or, once handed over with `wrap`, when the stream ends."""

    limiter: KeyLimiter | None
    lease: Lease | None
    handed_off: bool = False
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if self._released or self.lease is None or self.limiter is None:
            return
        self._released = True
        self.limiter.release(self.lease)

    async def wrap(self, events: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """`events`, holding the lease until the stream ends however it ends."""
        self.handed_off = True
        try:
            async for event in events:
                yield event
        finally:
            try:
                await events.aclose()
            finally:
                self.release()


class KeyLimiter:
    """Checks and takes a key's limits, one atomic step per request."""

    def __init__(self, config: Config, redis_url: str | None = None) -> None:
        self.defaults = config.llmgw.key_limits
        self.lease_s = config.llmgw.request_timeout_s + _LEASE_SLACK_S
        self.store: KeyRedisStore | KeyMemoryStore = (KeyRedisStore(redis_url) if redis_url
                                                      else KeyMemoryStore())
        self.shared = redis_url is not None
        # While the shared Redis is unreachable, each worker keeps the limits in its own
        # memory: an outage of Redis must not become an outage of the gateway.
        self._local = KeyMemoryStore()
        self._local_leases: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def limits_of(self, key: KeyInfo) -> Limits:
        entries = [e for e in (self.defaults.get(key.agent_type or ""), self.defaults.get("*"))
                   if e is not None]

        def pick(name: str) -> int | None:
            own = getattr(key, name)
            if own is not None:
                return int(own)
            return next((getattr(e, name) for e in entries if getattr(e, name) is not None), None)

        return Limits(rpm=pick("rpm"), tpm=pick("tpm"), max_parallel=pick("max_parallel"))

    async def admit(self, key: KeyInfo, tokens: int, *, now: float | None = None) -> Lease | None:
        """A lease for one request (None: the key has no limits), or a `KeyLimited`."""
        limits = self.limits_of(key)
        if not limits.any:
            return None
        now = time.time() if now is None else now
        lease = Lease(counter_name(key), new_request_id())
        try:
            got = await self.store.take(lease.deployment, limits, lease.lease_id, self.lease_s,
                                        tokens, now)
        except (RedisError, OSError) as exc:
            log.warning("per-key limits: the shared Redis is unreachable (%s); this worker "
                        "counts alone until it is back", type(exc).__name__)
            got = await self._local.take(lease.deployment, limits, lease.lease_id,
                                         self.lease_s, tokens, now)
            if got == 0:
                self._local_leases.add(lease.lease_id)
        if got == 0:
            return lease
        cls = _REFUSALS[got]
        wait = 1.0 if cls is KeyConcurrencyLimited else seconds_to_next_window(now)
        raise cls(_refusal_text(key, cls.limit, limits, tokens), retry_after=wait,
                  hint=_hint(cls.limit, limits, tokens, wait))

    def release(self, lease: Lease) -> None:
        if lease.lease_id in self._local_leases:
            self._local_leases.discard(lease.lease_id)
            self._spawn(self._local.release(lease))
            return
        self._spawn(self._released(lease))

    async def _released(self, lease: Lease) -> None:
        try:
            await self.store.release(lease)
        except (RedisError, OSError):  # Redis is down: the lease expires by itself
            log.warning("per-key limits: could not give a slot back to Redis; it expires "
                        "after %.0f s", self.lease_s)

    async def usage(self, keys: Iterable[KeyInfo]) -> dict[int, Usage]:
        """Each key's use this minute (shared by its rotation chain), by key id."""
        keys = list(keys)
        found = await self.store.usage({counter_name(k) for k in keys}, time.time())
        return {k.id: found[counter_name(k)] for k in keys}

    def _spawn(self, work: Any) -> None:
        # a hang-up cancels the request: the release still runs to its end
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.store.aclose()


def counter_name(key: KeyInfo) -> str:
    return f"apikey:{key.limit_id}"


def _refusal_text(key: KeyInfo, limit: str, limits: Limits, tokens: int) -> str:
    what = {"rpm": f"its {limits.rpm} requests per minute",
            "tpm": f"its {limits.tpm} tokens per minute (this request counts {tokens})",
            "max_parallel": f"its {limits.max_parallel} requests in flight"}[limit]
    return f"API key {key.id} ({key.prefix}...) is at {what}; nothing was sent to a provider."


def _hint(limit: str, limits: Limits, tokens: int, wait: float) -> str:
    if limit == "tpm" and limits.tpm is not None and tokens > limits.tpm:
        return (f"This request alone counts {tokens} tokens (prompt estimate + max tokens), over "
                f"the key's tpm: lower max_tokens, or raise the key's tpm "
                "(`llmgw keys create --tpm`, llmgw.key_limits).")
    return (f"Retry after {math.ceil(wait)} s, or raise the key's {limit} "
            "(`llmgw keys create --rpm/--tpm/--max-parallel`, or llmgw.key_limits for its "
            "agent type).")


def estimate_tokens(body: Any) -> int:
    """What a request counts against tpm: its JSON body's size / 4 (a prompt estimate that
    needs no tokenizer) plus the max tokens it asks for."""
    if not isinstance(body, dict):
        return 0
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    most = next((body[f] for f in _MAX_TOKEN_FIELDS if isinstance(body.get(f), int)), 0)
    return math.ceil(len(text) / 4) + max(0, int(most))


def limiter_of(request: Request) -> KeyLimiter:
    """This worker's limiter, made on first use from the app's config."""
    state = request.app.state
    limiter: KeyLimiter | None = getattr(state, "key_limiter", None)
    if limiter is None:
        config: Config = state.config
        limiter = state.key_limiter = KeyLimiter(config,
                                                 config.router_settings.shared_state_url())
    return limiter


@contextlib.asynccontextmanager
async def key_pass(request: Request, caller: Caller, *, dialect: str,
                   stream: bool) -> AsyncIterator[KeyPass]:
    """Around a front's gateway call: admit it under its key's limits, or refuse (a `refused`
    row, then `KeyLimited`: a 429 with Retry-After in the endpoint's shape). The lease ends
    when the block does, unless a stream took it over (`KeyPass.wrap`)."""
    limiter = limiter_of(request)
    if not limiter.limits_of(caller.key).any:
        yield KeyPass(None, None)
        return
    body = await request.json()
    try:
        lease = await limiter.admit(caller.key, estimate_tokens(body))
    except KeyLimited as exc:
        model = body.get("model") if isinstance(body, dict) else None
        exc.request_id = await request.app.state.gateway.record_refusal(
            caller.agent_id, caller.project_id, error_class=type(exc).__name__,
            message=exc.message, model_group=None if model in (None, "", "auto") else str(model),
            agent_type=caller.agent_type, session_id=caller.session_id,
            end_user=caller.end_user, dialect=dialect, stream=stream,
            metadata={"llmgw": {"key_limit": {"key_id": caller.key.id, "limit": exc.limit,
                                              "retry_after_s": exc.retry_after}}})
        raise
    held = KeyPass(limiter, lease)
    try:
        yield held
    finally:
        if not held.handed_off:
            held.release()
