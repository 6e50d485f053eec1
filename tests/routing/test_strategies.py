"""Every routing strategy a config may name picks as documented, over the simulators.

Calls go through the Router the gateway built from the config (`gw.router`), answered by
the loopback simulators; deployments are told apart by model name."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from llmgw.routing.capacity import window
from llmgw.sim import Fault, FaultPlan
from tests.routing.fleet import dep, fleet
from tests.support import eventually_async

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

ASK = [{"role": "user", "content": "Which deployment answers?"}]


async def served(gw, count: int, concurrency: int = 1) -> Counter[str]:
    """Which deployment served each of `count` calls to group `g`."""
    gate = asyncio.Semaphore(concurrency)
    seen: Counter[str] = Counter()

    async def one() -> None:
        async with gate:
            r = await gw.router.acompletion(model="g", messages=ASK, max_tokens=8)
            seen[r._hidden_params["model_id"]] += 1
    await asyncio.gather(*(one() for _ in range(count)))
    return seen


def two(openai_sim, ledger_url: str, a: dict | None = None, b: dict | None = None,
        prices=(("0.000001", "0.000002"), ("0.000001", "0.000002")), **settings):
    return fleet([dep("g", "g-a", openai_sim, "gpt-a", prices[0], **(a or {})),
                  dep("g", "g-b", openai_sim, "gpt-b", prices[1], **(b or {}))], ledger_url,
                 num_retries=0, **settings)


async def gateway(cfg):
    from llmgw.gateway import LLMGateway

    return LLMGateway(cfg)


async def test_simple_shuffle_follows_weights(sims, migrated_ledger_url: str) -> None:
    openai_sim, _ = sims
    gw = await gateway(two(openai_sim, migrated_ledger_url, {"weight": 3}, {"weight": 1},
                           routing_strategy="simple-shuffle"))
    try:
        seen = await served(gw, 1000, concurrency=20)
    finally:
        await gw.aclose()
    assert sum(seen.values()) == 1000
    assert 0.68 <= seen["g-a"] / 1000 <= 0.82  # 75 % ± 7 %


async def test_latency_based_prefers_the_faster_after_warm_up(
        sims, migrated_ledger_url: str) -> None:
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="latency", delay_s=0.05, model="gpt-a")]))
    gw = await gateway(two(openai_sim, migrated_ledger_url,
                           routing_strategy="latency-based-routing"))
    try:
        await served(gw, 10)  # warm-up: LiteLLM's provider code loaded (a cold first call)
        gw.router.cache.flush_cache()  # forget the cold call's latency, then measure again
        await served(gw, 10)
        seen = await served(gw, 100)
    finally:
        await gw.aclose()
    assert seen["g-b"] >= 80  # g-b is 50 ms faster


async def test_usage_based_v2_keeps_to_each_deployments_rpm(
        sims, migrated_ledger_url: str) -> None:
    openai_sim, _ = sims
    gw = await gateway(two(openai_sim, migrated_ledger_url, {"rpm": 5}, {"rpm": 1000},
                           routing_strategy="usage-based-routing-v2"))
    answers: list[tuple[str, int, int]] = []  # deployment, minute window at start and end
    try:
        for _ in range(30):
            start = window(time.time())
            r = await gw.router.acompletion(model="g", messages=ASK, max_tokens=8)
            answers.append((r._hidden_params["model_id"], start, window(time.time())))
    finally:
        await gw.aclose()
    # rpm counts per wall-clock minute (LiteLLM's and llmgw's alike): a run that crosses a
    # minute may use g-a's 5 again in the next one.
    minutes = {w for _, start, end in answers for w in (start, end)}
    for w in minutes:
        assert sum(1 for d, start, end in answers if d == "g-a" and start == end == w) <= 5
    on_a = sum(1 for d, _, _ in answers if d == "g-a")
    assert on_a <= 5 * len(minutes)
    assert len(answers) - on_a >= 30 - 5 * len(minutes)  # the rest went to g-b


async def test_cost_based_sends_everything_to_the_cheapest(
        sims, migrated_ledger_url: str) -> None:
    openai_sim, _ = sims
    gw = await gateway(two(openai_sim, migrated_ledger_url,
                           prices=(("0.00001", "0.00003"), ("0.000001", "0.000002")),
                           routing_strategy="cost-based-routing"))
    try:
        seen = await served(gw, 40)
    finally:
        await gw.aclose()
    assert seen == Counter({"g-b": 40})


async def test_least_busy_sends_new_calls_to_the_deployment_with_fewer_in_flight(
        sims, migrated_ledger_url: str) -> None:
    """LiteLLM's least-busy counts calls in flight per deployment (`<group>_request_count:<id>`)
    and picks the lowest. Eight calls spread 4 and 4 while both are held; g-b's end, g-a's stay
    in flight; every new call then goes to the idle g-b (a random pick would send half to g-a)."""
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[
        Fault(kind="latency", delay_s=60, model="gpt-a"),  # held for the whole test
        Fault(kind="latency", delay_s=0.5, model="gpt-b", times=4)]))
    gw = await gateway(two(openai_sim, migrated_ledger_url, routing_strategy="least-busy"))
    held: list[asyncio.Task] = []

    async def in_flight(dep_id: str) -> int:
        return int(await gw.router.cache.async_get_cache(key=f"g_request_count:{dep_id}") or 0)

    try:
        for n in range(1, 9):  # one at a time: each pick sees the previous one in flight
            held.append(asyncio.create_task(
                gw.router.acompletion(model="g", messages=ASK, max_tokens=8)))
            await asyncio.to_thread(openai_sim.wait_for_requests, n)
        assert Counter(r.model for r in openai_sim.requests) == {"gpt-a": 4, "gpt-b": 4}
        await asyncio.to_thread(openai_sim.wait_for_responses, 4)  # g-b's four are answered
        async def g_b_idle() -> bool:  # LiteLLM counts them down in its success callback
            return not await in_flight("g-b")

        await eventually_async(g_b_idle, "g-b's calls to leave its in-flight count")
        assert await in_flight("g-a") == 4
        seen = await served(gw, 30)
        assert seen == Counter({"g-b": 30})
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await gw.aclose()
