"""Circuit breaking is LiteLLM's cooldown (`allowed_fails`, `allowed_fails_policy`,
`cooldown_time`): open after the allowed failures, no traffic while cooling down, traffic
again after, open again if it still fails; a stream that fails counts (docs/routing.md)."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmgw._litellm import cooldown_statuses
from llmgw.sim import Fault, FaultPlan
from tests.routing.fleet import dep, fleet, hops

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

ASK = [{"role": "user", "content": "List edge cases for partial refunds."}]


def pair(openai_sim, ledger_url: str, **settings):
    # `order`: cb-a takes all the traffic whenever it is not cooling down
    return fleet([dep("cb", "cb-a", openai_sim, "gpt-a", order=1),
                  dep("cb", "cb-b", openai_sim, "gpt-b", order=2)], ledger_url, **settings)


async def cooling(gw) -> set[str]:
    return set(await cooldown_statuses(gw.router, ["cb-a", "cb-b"]))


async def until_closed(gw, timeout: float = 10.0) -> None:
    """Poll LiteLLM's cooldown store until cb-a is out of cooldown."""
    deadline = time.monotonic() + timeout
    while "cb-a" in await cooling(gw):
        assert time.monotonic() < deadline, "cb-a never left its cooldown"
        await asyncio.sleep(0.05)


def sent_to_a(openai_sim) -> int:
    return sum(1 for r in openai_sim.requests if r.model == "gpt-a")


async def test_open_cool_down_reopen_and_recover(sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=503, model="gpt-a")]))
    gw = LLMGateway(pair(openai_sim, migrated_ledger_url, allowed_fails=0, cooldown_time=1))
    try:
        done = await gw.complete("a", "p", ASK, model_group="cb")
        assert hops(done) == [("cb-a", "error"), ("cb-b", "ok")]
        assert await cooling(gw) == {"cb-a"}  # open
        for _ in range(3):  # no traffic while open
            assert hops(await gw.complete("a", "p", ASK, model_group="cb")) == [("cb-b", "ok")]
        assert sent_to_a(openai_sim) == 1
        await until_closed(gw)  # half-open: traffic again, still failing -> open again
        done = await gw.complete("a", "p", ASK, model_group="cb")
        assert hops(done) == [("cb-a", "error"), ("cb-b", "ok")]
        assert await cooling(gw) == {"cb-a"}
        openai_sim.set_plan(FaultPlan())  # recovered
        await until_closed(gw)
        assert hops(await gw.complete("a", "p", ASK, model_group="cb")) == [("cb-a", "ok")]
        assert await cooling(gw) == set()
    finally:
        await gw.aclose()


async def test_allowed_fails_policy_counts_per_error_type(sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=500, model="gpt-a")]))
    gw = LLMGateway(pair(openai_sim, migrated_ledger_url, cooldown_time=30, allowed_fails_policy={
        "InternalServerErrorAllowedFails": 5, "RateLimitErrorAllowedFails": 0}))
    try:
        for _ in range(3):  # three 500s: within the five allowed
            done = await gw.complete("a", "p", ASK, model_group="cb")
            assert hops(done) == [("cb-a", "error"), ("cb-b", "ok")]
        assert await cooling(gw) == set()
        openai_sim.set_plan(FaultPlan(faults=[Fault(kind="http_error", status=429,
                                                    model="gpt-a")]))
        done = await gw.complete("a", "p", ASK, model_group="cb")  # one 429: none allowed
        assert hops(done) == [("cb-a", "error"), ("cb-b", "ok")]
        assert await cooling(gw) == {"cb-a"}
        assert hops(await gw.complete("a", "p", ASK, model_group="cb")) == [("cb-b", "ok")]
    finally:
        await gw.aclose()


async def test_a_stream_that_fails_counts_as_a_failure(sims, migrated_ledger_url: str) -> None:
    from llmgw.gateway import LLMGateway
    from llmgw.types import StreamDone, StreamError

    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="drop", after_chunks=2, model="gpt-a")]))
    gw = LLMGateway(pair(openai_sim, migrated_ledger_url, allowed_fails=0, cooldown_time=30))
    try:
        events = [e async for e in gw.stream("a", "p", ASK, model_group="cb")]
        assert isinstance(events[-1], StreamError)  # cut mid-stream: no repeated text
        assert await cooling(gw) == {"cb-a"}
        events = [e async for e in gw.stream("a", "p", ASK, model_group="cb")]
        assert isinstance(events[-1], StreamDone) and events[-1].completion.deployment == "cb-b"
        assert sent_to_a(openai_sim) == 1
    finally:
        await gw.aclose()
