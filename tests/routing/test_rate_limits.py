"""Rate-limit compliance (docs/routing.md): deployments' `max_parallel_requests`, `rpm` and `tpm`
are never exceeded, across processes sharing Redis; a call with no capacity waits first
come first served up to `llmgw.routing.max_queue_wait_s`, then raises `RateLimited` with
`retry_after`; no simulator ever answers 429. The simulators count what they receive
(`sim.load`: in flight at most, requests per minute, per model)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from llmgw.errors import RateLimited
from llmgw.sim import Fault, FaultPlan
from tests.routing.fleet import dep, fleet, fleet_dict, run_workers
from tests.support import eventually, ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

ASK = [{"role": "user", "content": "Check the rate limits."}]
SLOW = 0.3  # simulator latency: requests overlap, so in-flight limits bind


def limited(openai_sim, **limits) -> list[dict]:
    return [dep("rl", "rl-a", openai_sim, "gpt-rl-a", **limits),
            dep("rl", "rl-b", openai_sim, "gpt-rl-b", **limits)]


def slow(openai_sim) -> None:
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="latency", delay_s=SLOW)]))


def no_429(*sims) -> None:
    assert all(r.status != 429 for sim in sims for r in sim.responses)


def waited(url: str) -> list[float]:
    out = []
    for row in ledger_rows(url):
        meta = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(
            row["metadata"])
        ms = (meta["llmgw"].get("routing") or {}).get("waited_ms")
        if ms is not None:
            out.append(ms)
    return out


def away_from_a_minute_boundary(margin_s: float = 5.0) -> None:
    """rpm counts per wall-clock minute: keep a short test inside one minute, so that the
    gate's minute and the simulator's are the same for every request."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


async def test_max_parallel_is_never_exceeded_and_excess_calls_wait(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    slow(openai_sim)
    gw = LLMGateway(fleet(limited(openai_sim, max_parallel_requests=2), migrated_ledger_url,
                          num_retries=0))
    try:
        done = await asyncio.gather(*(gw.complete("a", "p", ASK, model_group="rl")
                                      for _ in range(12)))
    finally:
        await gw.aclose()
    assert len(done) == 12 and {c.deployment for c in done} == {"rl-a", "rl-b"}
    load = openai_sim.load
    assert load["gpt-rl-a"].max_in_flight <= 2 and load["gpt-rl-b"].max_in_flight <= 2
    assert len(openai_sim.requests) == 12
    no_429(openai_sim)
    # 4 run at once, the other 8 queued for a slot; their rows say for how long
    assert len(waited(migrated_ledger_url)) >= 8


async def test_no_capacity_within_the_wait_raises_rate_limited_without_a_request(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    away_from_a_minute_boundary()
    gw = LLMGateway(fleet(limited(openai_sim, rpm=2), migrated_ledger_url, num_retries=0,
                          llmgw={"routing": {"max_queue_wait_s": 0.2}}))
    try:
        for _ in range(4):  # the minute's 2 + 2
            await gw.complete("a", "p", ASK, model_group="rl")
        with pytest.raises(RateLimited) as caught:
            await gw.complete("a", "p", ASK, model_group="rl")
    finally:
        await gw.aclose()
    err = caught.value
    assert 0 < err.retry_after <= 60 and "max_queue_wait_s" in err.hint
    assert len(openai_sim.requests) == 4  # nothing sent to collect a 429
    assert max(load.max_per_minute for load in openai_sim.load.values()) == 2
    no_429(openai_sim)
    row = ledger_rows(migrated_ledger_url)[-1]
    assert (row["status"], row["error_class"]) == ("error", "RateLimited")
    assert waited(migrated_ledger_url)[-1] >= 200


async def test_waiters_are_served_first_come_first_served(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    slow(openai_sim)
    gw = LLMGateway(fleet([dep("one", "one-a", openai_sim, "gpt-one", max_parallel_requests=1)],
                          migrated_ledger_url, num_retries=0))
    order: list[int] = []

    async def call(i: int) -> None:
        await gw.complete("a", "p", [{"role": "user", "content": f"request {i}"}],
                          model_group="one")
        order.append(i)

    def queued() -> int:  # callers waiting behind the one that polls for the slot
        lock = gw._recorder.gate._locks.get((id(asyncio.get_running_loop()), "one"))
        return len(lock._waiters or ()) if lock is not None else 0

    try:
        tasks = [asyncio.create_task(call(0))]
        await eventually(lambda: len(openai_sim.requests) == 1, "the first call to hold the slot")
        for i in range(1, 5):  # each one queued behind the ones before it
            tasks.append(asyncio.create_task(call(i)))
            if i == 1:
                await eventually(lambda: gw._recorder.gate._lock("one").locked(),
                                 "the second call to wait for the slot")
            else:
                await eventually(lambda i=i: queued() == i - 1, f"call {i} to queue")
        await asyncio.gather(*tasks)
    finally:
        await gw.aclose()
    assert order == [0, 1, 2, 3, 4]
    assert openai_sim.load["gpt-one"].max_in_flight == 1


async def test_a_full_group_falls_back_at_once_to_a_group_with_capacity(
        sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    slow(openai_sim)
    deployments = [dep("busy", "busy-a", openai_sim, "gpt-busy", max_parallel_requests=1),
                   dep("spare", "spare-a", openai_sim, "gpt-spare")]
    gw = LLMGateway(fleet(deployments, migrated_ledger_url, num_retries=0,
                          fallbacks=[{"busy": ["spare"]}]))
    try:
        done = await asyncio.gather(*(gw.complete("a", "p", ASK, model_group="busy")
                                      for _ in range(3)))
    finally:
        await gw.aclose()
    assert Counter(c.deployment for c in done) == Counter({"busy-a": 1, "spare-a": 2})
    assert openai_sim.load["gpt-busy"].max_in_flight == 1
    no_429(openai_sim)


def test_two_processes_sharing_redis_never_exceed_the_limits(
        sims, migrated_ledger_url: str, redis_servers, tmp_path: Path) -> None:
    """60 requests from 2 processes against 2 deployments with max_parallel_requests 2 and
    rpm 10 each: at most 2 in flight and 10 in the minute at each simulator model; the rest
    wait, then are answered or raise RateLimited."""
    openai_sim, _ = sims
    slow(openai_sim)
    away_from_a_minute_boundary(margin_s=15)
    config = fleet_dict(limited(openai_sim, max_parallel_requests=2, rpm=10),
                        migrated_ledger_url, num_retries=0, redis_url=redis_servers().url,
                        llmgw={"routing": {"max_queue_wait_s": 2}})
    outputs = run_workers(config, tmp_path, 2, "rl", "30", "30")
    lines = [line for out in outputs for line in out]
    assert len(lines) == 60
    answered = [line for line in lines if "deployment" in line]
    refused = [line for line in lines if "error" in line]
    assert len(answered) + len(refused) == 60
    # at most the minute's rpm of both deployments; more than fit at once: waiters answered
    assert 4 < len(answered) <= 20
    assert {r["error"] for r in refused} == {"RateLimited"}
    assert all(0 < r["retry_after"] <= 60 and r["attempts"] == [[None, "error"]]
               for r in refused)
    load = openai_sim.load
    for model in ("gpt-rl-a", "gpt-rl-b"):
        assert load[model].max_in_flight <= 2
        assert load[model].max_per_minute <= 10
    assert len(openai_sim.requests) == len(answered)
    no_429(openai_sim)
    # every refused call waited for capacity first, and its row says so
    assert len(waited(migrated_ledger_url)) >= len(refused) >= 40


async def test_a_stream_holds_its_slot_until_it_ends(sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway
    from llmgw.types import StreamDone

    openai_sim, _ = sims
    slow(openai_sim)
    gw = LLMGateway(fleet([dep("one", "one-a", openai_sim, "gpt-one", max_parallel_requests=1)],
                          migrated_ledger_url, num_retries=0))

    async def stream() -> StreamDone:
        events = [e async for e in gw.stream("a", "p", ASK, model_group="one")]
        assert isinstance(events[-1], StreamDone)
        return events[-1]

    try:
        done = await asyncio.gather(*(stream() for _ in range(3)))
    finally:
        await gw.aclose()
    assert [d.completion.deployment for d in done] == ["one-a"] * 3
    assert openai_sim.load["gpt-one"].max_in_flight == 1
    assert len(waited(migrated_ledger_url)) == 2
    no_429(openai_sim)
