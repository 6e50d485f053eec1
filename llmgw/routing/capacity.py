"""Rate-limit compliance across processes: deployments' `rpm`, `tpm`, `max_parallel_requests`
are never exceeded, and a call with no capacity waits first come first served (docs/routing.md).

Ours, because LiteLLM 1.106.2 does not keep these promises across processes (verified in its
source): its `max_parallel_requests` slot (`MaxParallelRequestsLimit`) is per process and
answers a full slot with a 429 instead of waiting; usage-based-routing-v2 counts rpm in
process memory and syncs it to Redis in batches every 0.1 s (`BaseRoutingStrategy`), so two
processes can both spend the same minute's requests; and nothing waits for capacity.

`CapacityGate.admit` runs in the attempt recorder's deployment filter (LiteLLM's hook before
each pick). When a deployment it may pick declares a limit, the gate atomically chooses one
with capacity (least loaded; in `prefer` order for a call with `prefer`) and takes a lease
on it: one Redis script (`_ADMIT`) over the shared Router Redis, or a lock in process memory
without one. The Router then gets only that deployment. With no capacity the call queues,
first come first served per group (one waiter per process at a time, then by ticket across
processes), until capacity frees up, a fallback group it may use has some (it falls back at
once), or `llmgw.routing.max_queue_wait_s` passes: then `NoCapacity`, which the gateway
reports as `RateLimited` with `retry_after`. No request is sent only to collect a 429.

A lease ends when its attempt fails (the recorder's failure hook) or the request ends (its
trace closes; a stream at its end); a lease a crashed process left expires. Tokens are
counted after each answer (LiteLLM's success hook), as LiteLLM counts tpm.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmgw.config.models import Config
from llmgw.ids import new_request_id

POLL_S = 0.02  # how often a waiting call looks for capacity again
_WINDOW_S = 60  # rpm and tpm are per wall-clock minute, as LiteLLM counts them
_KEY_TTL_S = 2 * _WINDOW_S
_QUEUE_ALIVE_S = 5.0  # a queued waiter that stops refreshing its place (crashed) loses it
_PREFIX = "llmgw:capacity:"

BLOCKED_BY = {1: "max_parallel_requests", 2: "rpm", 3: "tpm"}


@dataclass(frozen=True, slots=True)
class Limits:
    """A deployment's limits; max_parallel is what LiteLLM derives it as
    (`calculate_max_parallel_requests`: max_parallel_requests, else rpm, else tpm/1000*6)."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_parallel))

    def args(self) -> list[int]:
        return [-1 if v is None else int(v) for v in (self.max_parallel, self.rpm, self.tpm)]


def limits_of(litellm_params: Mapping[str, Any],
              default_max_parallel: int | None = None) -> Limits:
    rpm, tpm = litellm_params.get("rpm"), litellm_params.get("tpm")
    par = litellm_params.get("max_parallel_requests")
    if par is None and rpm is not None:
        par = rpm
    elif par is None and tpm is not None:
        par = max(1, int(tpm / 1000 * 6))
    elif par is None:
        par = default_max_parallel
    return Limits(rpm=rpm, tpm=tpm, max_parallel=par)


@dataclass(frozen=True, slots=True)
class Usage:
    """One deployment's use now: requests and tokens this minute, requests in flight."""

    requests: int
    tokens: int
    in_flight: int


@dataclass
class Lease:
    deployment: str
    lease_id: str


class NoCapacity(Exception):
    """No deployment the call may use had capacity: raised to fall back (`fall_back`) or,
    after `max_queue_wait_s`, to give up with `retry_after` seconds."""

    def __init__(self, group: str, blocked: Mapping[str, str], retry_after: float,
                 fall_back: bool = False) -> None:
        what = ", ".join(f"{d} at its {why}" for d, why in blocked.items()) or "none left"
        super().__init__(f"No capacity in group {group!r} ({what}).")
        self.group, self.blocked, self.retry_after = group, dict(blocked), retry_after
        self.fall_back = fall_back


def window(now: float) -> int:
    return int(now // _WINDOW_S)


def seconds_to_next_window(now: float) -> float:
    return round(_WINDOW_S - now % _WINDOW_S, 3)


# -- stores ---------------------------------------------------------------------------------

# KEYS: queue zset (member -> ticket), alive zset (member -> expiry), ticket counter, then per
# candidate: in-flight zset (lease -> expiry), requests counter, tokens counter (this minute).
# ARGV: now, lease expiry, lease id, mode (least|first|peek), waiter id, alive expiry, then
# per candidate: max_parallel, rpm, tpm (-1: none).
# Returns {index of the chosen candidate (0-based)} or {-1} (a waiter is ahead) or
# {-2, reason per candidate} (1 max_parallel, 2 rpm, 3 tpm).
_ADMIT = """
local now = tonumber(ARGV[1])
local q, alive, tickets = KEYS[1], KEYS[2], KEYS[3]
local me, mode = ARGV[5], ARGV[4]
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now)
for _, w in ipairs(dead) do redis.call('ZREM', q, w); redis.call('ZREM', alive, w) end
if mode ~= 'peek' then
  if redis.call('ZSCORE', q, me) then redis.call('ZADD', alive, ARGV[6], me) end
  local head = redis.call('ZRANGE', q, 0, 0)[1]
  if head and head ~= me then return {-1} end
end
local n = (#KEYS - 3) / 3
local best, bestload = -1, nil
local reasons = {-2}
for i = 0, n - 1 do
  local fl, rk, tk = KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3]
  local par, rpm, tpm = tonumber(ARGV[7 + i * 3]), tonumber(ARGV[8 + i * 3]), tonumber(ARGV[9 + i * 3])
  redis.call('ZREMRANGEBYSCORE', fl, '-inf', now)
  local used = redis.call('ZCARD', fl)
  local reqs = tonumber(redis.call('GET', rk) or '0')
  local toks = tonumber(redis.call('GET', tk) or '0')
  local why = 0
  if par >= 0 and used >= par then why = 1
  elseif rpm >= 0 and reqs >= rpm then why = 2
  elseif tpm >= 0 and toks >= tpm then why = 3 end
  reasons[#reasons + 1] = why
  if why == 0 then
    local load = 0
    if par > 0 then load = math.max(load, used / par) end
    if rpm > 0 then load = math.max(load, reqs / rpm) end
    if tpm > 0 then load = math.max(load, toks / tpm) end
    if bestload == nil or load < bestload then best, bestload = i, load end
    if mode == 'first' then break end
  end
end
if mode == 'peek' then
  if best >= 0 then return {best} end
  return reasons
end
if best < 0 then
  if not redis.call('ZSCORE', q, me) then
    redis.call('ZADD', q, redis.call('INCR', tickets), me)
    redis.call('ZADD', alive, ARGV[6], me)
  end
  return reasons
end
local fl, rk = KEYS[4 + best * 3], KEYS[5 + best * 3]
redis.call('ZADD', fl, ARGV[2], ARGV[3])
redis.call('INCR', rk)
redis.call('EXPIRE', rk, KEY_TTL)
redis.call('ZREM', q, me)
redis.call('ZREM', alive, me)
return {best}
""".replace("KEY_TTL", str(_KEY_TTL_S))


def _keys(dep: str, now: float) -> list[str]:
    w = window(now)
    return [f"{_PREFIX}inflight:{dep}", f"{_PREFIX}rpm:{dep}:{w}", f"{_PREFIX}tpm:{dep}:{w}"]


def _queue_keys(group: str) -> list[str]:
    return [f"{_PREFIX}queue:{group}", f"{_PREFIX}alive:{group}", f"{_PREFIX}tickets"]


class RedisStore:
    """Leases and counters in the Redis the Router shares its state through."""

    def __init__(self, url: str) -> None:
        self.url = url
        # event loop id -> (loop, client): a client is bound to the loop it was made in
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def _client(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        known = self._clients.get(id(loop))
        if known is not None and known[0] is loop:
            return known[1]
        # a client of a loop that has ended (complete_sync) is dropped with its loop
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        client = aioredis.Redis.from_url(self.url, socket_timeout=5.0)
        self._clients[id(loop)] = (loop, client)
        return client

    async def admit(self, group: str, candidates: Sequence[tuple[str, Limits]], mode: str,
                    waiter: str, lease_id: str, lease_s: float, now: float) -> list[int]:
        keys = _queue_keys(group) + [k for dep, _ in candidates for k in _keys(dep, now)]
        args: list[Any] = [now, now + lease_s, lease_id, mode, waiter, now + _QUEUE_ALIVE_S]
        args += [a for _, lim in candidates for a in lim.args()]
        result = await self._client().eval(_ADMIT, len(keys), *keys, *args)
        return [int(x) for x in result]

    async def leave(self, group: str, waiter: str) -> None:
        q, alive, _ = _queue_keys(group)
        client = self._client()
        await client.zrem(q, waiter)
        await client.zrem(alive, waiter)

    async def release(self, lease: Lease) -> None:
        await self._client().zrem(f"{_PREFIX}inflight:{lease.deployment}", lease.lease_id)

    async def add_tokens(self, dep: str, tokens: int, now: float) -> None:
        key = _keys(dep, now)[2]
        client = self._client()
        await client.incrby(key, tokens)
        await client.expire(key, _KEY_TTL_S)

    async def usage(self, deps: Iterable[str], now: float) -> dict[str, Usage]:
        client = self._client()
        out = {}
        for dep in deps:
            fl, rk, tk = _keys(dep, now)
            in_flight = await client.zcount(fl, now, "+inf")
            reqs, toks = await client.mget(rk, tk)
            out[dep] = Usage(int(reqs or 0), int(toks or 0), int(in_flight))
        return out

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        known = self._clients.pop(id(loop), None)
        if known is not None:
            await known[1].aclose()


@dataclass
class _DepState:
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry
    requests: dict[int, int] = field(default_factory=dict)  # window -> count
    tokens: dict[int, int] = field(default_factory=dict)


class MemoryStore:
    """The same in process memory, when the Router shares no state (one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deps: dict[str, _DepState] = {}

    def _state(self, dep: str) -> _DepState:
        return self._deps.setdefault(dep, _DepState())

    async def admit(self, group: str, candidates: Sequence[tuple[str, Limits]], mode: str,
                    waiter: str, lease_id: str, lease_s: float, now: float) -> list[int]:
        # FIFO inside one process is the gate's per-group lock; no queue needed here
        w = window(now)
        with self._lock:
            best, best_load, reasons = -1, 0.0, [-2]
            for i, (dep, lim) in enumerate(candidates):
                st = self._state(dep)
                st.leases = {k: t for k, t in st.leases.items() if t > now}
                used, reqs, toks = len(st.leases), st.requests.get(w, 0), st.tokens.get(w, 0)
                why = (1 if lim.max_parallel is not None and used >= lim.max_parallel else
                       2 if lim.rpm is not None and reqs >= lim.rpm else
                       3 if lim.tpm is not None and toks >= lim.tpm else 0)
                reasons.append(why)
                if why:
                    continue
                load = max([used / lim.max_parallel if lim.max_parallel else 0.0,
                            reqs / lim.rpm if lim.rpm else 0.0,
                            toks / lim.tpm if lim.tpm else 0.0])
                if best < 0 or load < best_load:
                    best, best_load = i, load
                if mode == "first":
                    break
            if best < 0:
                return reasons
            if mode != "peek":
                st = self._state(candidates[best][0])
                st.leases[lease_id] = now + lease_s
                st.requests = {w: st.requests.get(w, 0) + 1}
            return [best]

    async def leave(self, group: str, waiter: str) -> None:
        return None

    async def release(self, lease: Lease) -> None:
        with self._lock:
            self._state(lease.deployment).leases.pop(lease.lease_id, None)

    async def add_tokens(self, dep: str, tokens: int, now: float) -> None:
        w = window(now)
        with self._lock:
            st = self._state(dep)
            st.tokens = {w: st.tokens.get(w, 0) + tokens}

    async def usage(self, deps: Iterable[str], now: float) -> dict[str, Usage]:
        w = window(now)
        with self._lock:
            out = {}
            for dep in deps:
                st = self._state(dep)
                out[dep] = Usage(st.requests.get(w, 0), st.tokens.get(w, 0),
                                 sum(1 for t in st.leases.values() if t > now))
            return out

    async def aclose(self) -> None:
        return None


# -- the gate -------------------------------------------------------------------------------

@dataclass
class Admission:
    """One request's state at the gate, kept on its trace."""

    # Unique across processes sharing the Redis queue (ids.py); made at the request's first
    # admission: most requests never meet a limited deployment.
    waiter: str = ""
    deadline: float | None = None  # monotonic; set at its first wait
    waited_s: float = 0.0
    leases: list[Lease] = field(default_factory=list)
    queued: set[str] = field(default_factory=set)  # groups it holds a place in

    @property
    def waited_ms(self) -> float | None:
        return round(self.waited_s * 1000, 3) if self.waited_s else None


class CapacityGate:
    def __init__(self, config: Config, redis_url: str | None = None) -> None:
        default_par = config.router_settings.default_max_parallel_requests
        self.limits = {d.id: limits_of(d.to_litellm()["litellm_params"], default_par)
                       for d in config.model_list}
        self.limits = {k: v for k, v in self.limits.items() if v.any}
        self.groups = {g: [d.id for d in deps] for g, deps in config.groups().items()}
        self.fallbacks = config.router_settings.fallback_map()
        self.max_wait_s = config.llmgw.routing.max_queue_wait_s
        self.lease_s = config.llmgw.request_timeout_s + _WINDOW_S
        self.store: RedisStore | MemoryStore = RedisStore(redis_url) if redis_url else MemoryStore()
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def limited(self, deployment_ids: Iterable[str | None]) -> bool:
        return any(d in self.limits for d in deployment_ids)

    def _lock(self, group: str) -> asyncio.Lock:
        key = (id(asyncio.get_running_loop()), group)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def admit(self, group: str, candidates: list[Any], adm: Admission, *,
                    ordered: bool, allowed: Mapping[str, list[str]] | None = None) -> list[Any]:
        """The one deployment of `candidates` (LiteLLM deployment dicts) this attempt may use,
        with a lease taken on it; waits for capacity; raises `NoCapacity`."""
        ids = [str((d.get("model_info") or {}).get("id")) for d in candidates]
        order = list(range(len(ids)))
        if not ordered:
            random.shuffle(order)  # ties between equally loaded deployments: any of them
        pairs = [(ids[i], self.limits.get(ids[i], Limits())) for i in order]
        mode = "first" if ordered else "least"
        lease_id = new_request_id()
        if not adm.waiter:
            adm.waiter = new_request_id()
        started = time.monotonic()
        if adm.deadline is None:
            adm.deadline = started + self.max_wait_s
        lock = self._lock(group)
        waited = lock.locked()  # another caller of this process queues for the group
        try:
            if waited:  # FIFO among this process's callers of the group (asyncio.Lock is)
                await asyncio.wait_for(lock.acquire(),
                                       max(0.001, adm.deadline - time.monotonic()))
            else:
                await lock.acquire()
        except TimeoutError:
            adm.waited_s += time.monotonic() - started
            now = time.time()
            raise NoCapacity(group, {}, 1.0,
                             fall_back=await self._fallback_has_capacity(group, allowed,
                                                                         now)) from None
        try:
            while True:
                now = time.time()
                got = await self.store.admit(group, pairs, mode, adm.waiter, lease_id,
                                             self.lease_s, now)
                if got[0] >= 0:
                    dep_id = pairs[got[0]][0]
                    adm.leases.append(Lease(dep_id, lease_id))
                    adm.queued.discard(group)
                    return [candidates[ids.index(dep_id)]]
                waited = True
                adm.queued.add(group)
                blocked = {pairs[i][0]: BLOCKED_BY.get(r, "limit")
                           for i, r in enumerate(got[1:])} if got[0] == -2 else {}
                if await self._fallback_has_capacity(group, allowed, now):
                    raise NoCapacity(group, blocked, 0.0, fall_back=True)
                if time.monotonic() >= adm.deadline:
                    raise NoCapacity(group, blocked, self._retry_after(blocked, now))
                await asyncio.sleep(POLL_S)
        finally:
            lock.release()
            if waited:
                adm.waited_s += time.monotonic() - started
            if group in adm.queued:
                adm.queued.discard(group)
                await self.store.leave(group, adm.waiter)

    async def _fallback_has_capacity(self, group: str, allowed: Mapping[str, list[str]] | None,
                                     now: float) -> bool:
        targets = [g for g in [*self.fallbacks.get(group, []), *self.fallbacks.get("*", [])]
                   if g != group and g in self.groups]
        for target in targets:
            ids = self.groups[target] if allowed is None else allowed.get(target, [])
            if not ids:
                continue
            pairs = [(d, self.limits.get(d, Limits())) for d in ids]
            got = await self.store.admit(target, pairs, "peek", "", "", 0.0, now)
            if got[0] >= 0:
                return True
        return False

    @staticmethod
    def _retry_after(blocked: Mapping[str, str], now: float) -> float:
        # a full minute's rpm/tpm frees up at the next minute; a parallel slot any moment
        if blocked and all(why in ("rpm", "tpm") for why in blocked.values()):
            return seconds_to_next_window(now)
        return 1.0

    def release(self, dep_id: str | None, adm: Admission | None) -> None:
        """The attempt on `dep_id` ended (failed): give its lease back."""
        if adm is None or dep_id is None:
            return
        for lease in adm.leases:
            if lease.deployment == dep_id:
                adm.leases.remove(lease)
                self._spawn(self.store.release(lease))
                return

    def release_all(self, adm: Admission | None) -> None:
        """The request ended: give back every lease and place it still holds."""
        if adm is None:
            return
        leases, adm.leases = adm.leases, []
        for lease in leases:
            self._spawn(self.store.release(lease))
        for group in list(adm.queued):
            self._spawn(self.store.leave(group, adm.waiter))
        adm.queued.clear()

    def count_tokens(self, dep_id: str | None, tokens: int) -> None:
        if dep_id and tokens > 0 and dep_id in self.limits:
            self._spawn(self.store.add_tokens(dep_id, tokens, time.time()))

    async def usage(self, deployment_ids: Iterable[str]) -> dict[str, Usage]:
        return await self.store.usage(list(deployment_ids), time.time())

    def _spawn(self, work: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop (a sync caller): run it to the end here
            asyncio.run(work)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for releases in flight (before a shutdown)."""
        loop = asyncio.get_running_loop()
        pending = [t for t in self._tasks if t.get_loop() is loop]
        if pending:
            await asyncio.wait(pending)
