"""The lifecycle rule (docs/architecture.md): whatever ends a request, its hold is settled or
released, its counters hold nothing, the ledger agrees with them, and `request.finished` is
emitted exactly once. Every way a caller can stop a request, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.sim import Fault, FaultPlan
from llmgw.types import ContentDelta, WireEvent
from tests.budgets.conftest import budget_config, sums
from tests.support import ANTHROPIC_KEY

ASK = [{"role": "user", "content": "Plan the release."}]
# Chat completions, the Anthropic Messages dialect (on a native Anthropic deployment) and the
# Responses dialect (LiteLLM's bridge to that deployment).
OPS = ("complete", "stream", "messages", "messages_stream", "responses", "responses_stream")
POINTS = ("provider", "first_byte", "mid_stream", "wait_for", "reserve", "settle", "cache")


class Gate:
    """Holds the `nth` call of one of our own async methods until opened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    def wrap(self, fn: Callable[..., Awaitable[Any]], nth: int = 1) -> Callable[..., Any]:
        calls = 0

        async def gated(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == nth:
                self.entered.set()
                await self.opened.wait()
            return await fn(*args, **kwargs)
        return gated

    def wrap_start(self, fn: Callable[..., Awaitable[Any]], nth: int = 1) -> Callable[..., Any]:
        """`wrap` for `LedgerStore.start`, which returns its transaction's future."""
        calls = 0

        def gated(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls != nth:
                return fn(*args, **kwargs)

            async def later() -> Any:
                self.entered.set()
                await self.opened.wait()
                return await fn(*args, **kwargs)
            return asyncio.ensure_future(later())
        return gated


def _plan(point: str, op: str) -> FaultPlan:
    if point in ("provider", "wait_for"):
        return FaultPlan(faults=[Fault(kind="latency", delay_s=120)])
    if point == "first_byte":  # headers sent, then nothing
        return FaultPlan(faults=[Fault(kind="timeout", after_chunks=0)])
    if point == "mid_stream":  # a few chunks, then nothing (a JSON answer: nothing at all)
        # Anthropic's first text delta is its fourth event (message_start, block start, ping)
        after = 3 if op in ("complete", "stream") else 5
        return FaultPlan(faults=[Fault(kind="timeout", after_chunks=after)])
    return FaultPlan()


def _shows_text(event: object) -> bool:
    return isinstance(event, ContentDelta) or (
        isinstance(event, WireEvent)
        and event.event in ("content_block_delta", "response.output_text.delta"))


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("op", OPS)
async def test_a_cancelled_request_holds_nothing(sims, migrated_ledger_url, op, point):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                         {"projects": {"*": {"daily_usd": 1}}, "agents": {"*": {"daily_usd": 1}}})
    data["llmgw"]["cache"] = {"backend": "memory"}
    # An Anthropic group with no fallback: the Messages dialect's native path, alone.
    data["model_list"].append({
        "model_name": "anth", "litellm_params": {
            "model": "anthropic/claude-sim", "api_base": anthropic_sim.base_url,
            "api_key": ANTHROPIC_KEY},
        "model_info": {"id": "anth-solo", "input_cost_per_token": 0.000003,
                       "output_cost_per_token": 0.000015}})
    gw = LLMGateway(config_from_dict(data))
    finished: list[dict[str, Any]] = []
    gw.on("request.finished", lambda _event, payload: finished.append(payload))
    sim = openai_sim if op in ("complete", "stream") else anthropic_sim
    sim.set_plan(_plan(point, op))
    gate = Gate()
    if point == "reserve":
        gw.ledger.start = gate.wrap_start(gw.ledger.start, nth=1)  # type: ignore[method-assign]
    elif point == "settle":
        gw.ledger.start = gate.wrap_start(gw.ledger.start, nth=2)  # type: ignore[method-assign]
    elif point == "cache":
        gw.cache.get = gate.wrap(gw.cache.get)  # type: ignore[union-attr,method-assign]
    shown = asyncio.Event()

    async def run() -> None:
        body = {"model": "anth", "max_tokens": 50, "messages": ASK}
        if op == "complete":
            await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=50)
            return
        asked = {"model": "anth", "max_output_tokens": 50, "input": ASK}
        if op == "messages":
            await gw.anthropic_messages("dev-1", "p", body)
            return
        if op == "responses":
            await gw.responses("dev-1", "p", asked)
            return
        events = (gw.stream("dev-1", "p", ASK, model_group="solo", max_tokens=50)
                  if op == "stream" else gw.anthropic_messages_stream("dev-1", "p", body)
                  if op == "messages_stream" else gw.responses_stream("dev-1", "p", asked))
        async for event in events:
            if _shows_text(event):
                shown.set()

    try:
        if point == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(run(), timeout=0.5)
        else:
            task = asyncio.ensure_future(run())
            if point in ("reserve", "settle", "cache"):
                await _first(gate.entered.wait(), task)
            elif point == "mid_stream" and op.endswith("stream"):
                await _first(shown.wait(), task)
            else:
                await asyncio.to_thread(sim.wait_for_requests, 1, 30)
            assert not task.done(), "the request ended before it could be cancelled"
            task.cancel()
            # A gated reserve or settle carries on after the cancellation, as a real
            # one in flight would.
            gate.opened.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        await gw.drain()
        s = sums(migrated_ledger_url)
        assert s["open"] == 0
        assert all(reserved == 0 for _, reserved in s["counters"].values()), s["counters"]
        spent = {k: v[0] for k, v in s["counters"].items()}
        ledger_total = s["ledger"].get("p", 0)
        for key in (("project", "p", "day"), ("agent", "dev-1", "day")):
            assert spent.get(key, 0) == ledger_total
        assert len(finished) == 1, finished
        assert finished[0]["request_id"] not in gw._started
        assert not gw._recorder.traces
    finally:
        gate.opened.set()
        await gw.aclose()


async def _first(signal: Awaitable[Any], task: asyncio.Future[Any]) -> None:
    """Wait for `signal`, or fail if the request ended first."""
    waiter = asyncio.ensure_future(signal)
    done, _ = await asyncio.wait({waiter, task}, timeout=60,
                                 return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        raise AssertionError(f"never reached the cancellation point (task done: {task.done()})")


def test_a_stream_open_when_its_event_loop_ends_is_settled(sims, migrated_ledger_url):
    """`asyncio.run` returning with a stream half read: the loop's shutdown closes the
    generator, and the lifecycle settles what was generated before the loop is gone."""
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                         {"projects": {"*": {"daily_usd": 1}}})
    gw = LLMGateway(config_from_dict(data))
    finished: list[dict[str, Any]] = []
    gw.on("request.finished", lambda _event, payload: finished.append(payload))
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="timeout", after_chunks=3)]))
    stream = gw.stream("dev-1", "p", ASK, model_group="solo", max_tokens=50)

    async def read_one_delta_and_leave() -> None:
        async for event in stream:
            if isinstance(event, ContentDelta):
                return

    try:
        asyncio.run(read_one_delta_and_leave())
        s = sums(migrated_ledger_url)
        assert s["open"] == 0 and s["statuses"] == {"partial": 1}
        spent, reserved = s["counters"][("project", "p", "day")]
        assert reserved == 0 and spent == s["ledger"]["p"] > 0
        assert [f["status"] for f in finished] == ["partial"]
    finally:
        gw.close()
