"""Every attempt is a row: retries on one deployment, and a call cancelled mid-flight."""

from __future__ import annotations

import asyncio

import pytest

from llmgw.sim import FaultPlan
from tests.support import ledger_rows, sim_config

HELLO = [{"role": "user", "content": "hello"}]


async def test_retry_on_the_same_deployment_is_its_own_row(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan.error(500, times=1))
    cfg = sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                     num_retries=1)
    gw = LLMGateway(cfg)
    try:
        done = await gw.complete("a", "p", HELLO, model_group="solo")
    finally:
        await gw.aclose()
    assert [(a.status, a.deployment) for a in done.attempts] == [("error", "solo-openai"),
                                                                   ("ok", "solo-openai")]
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "error"), (2, "ok")]
    assert len(openai_sim.requests) == 2


async def test_cancelled_call_is_recorded(gateway, sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.timeout())
    task = asyncio.create_task(gateway.complete("a", "p", HELLO, model_group="solo"))
    await asyncio.to_thread(openai_sim.wait_for_requests, 1)  # the provider has the request
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["error_class"], row["model_group"]) == ("error", "Cancelled", "solo")
