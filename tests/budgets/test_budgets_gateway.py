"""Budgets through LLMGateway: exact under concurrency, windows, warnings, downgrade, caps."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded, ProviderUnavailable
from llmgw.sim import FaultPlan
from tests.budgets.conftest import ANSWER_USAGE, budget_config, sums
from tests.support import expected_cost_micros, ledger_rows

ASK = [{"role": "user", "content": "Estimate the migration effort."}]
ACTUAL = expected_cost_micros("solo-openai", 10, 100)  # 10 * 0.4 + 100 * 1.6 = 164 micros


def gateway_for(sims, url, budgets, clock=None, **rs):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    cfg = config_from_dict(budget_config(openai_sim.base_url, anthropic_sim.base_url, url,
                                         budgets, **rs))
    return LLMGateway(cfg, **({"clock": clock} if clock else {}))


async def test_200_concurrent_requests_never_overspend(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    gw = gateway_for(sims, migrated_ledger_url, {"projects": {"*": {"daily_usd": "0.0084"}}})
    try:
        worst = gw.worst_case_micros("solo", gw_messages(), 100)
        assert 160 < worst < 190  # ~50 holds fit into $0.0084 at once
        results = await asyncio.gather(
            *(gw.complete(f"dev-{i % 7}", "proj-a", ASK, model_group="solo", max_tokens=100)
              for i in range(200)), return_exceptions=True)
    finally:
        await gw.aclose()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) + len(refused) == 200
    # ~50 holds fit at once; a settled hold frees its unused part (worst - actual), so a
    # request that starts after some have settled can fit too: never more than the money.
    assert 40 <= len(ok) <= 8400 // ACTUAL
    s = sums(migrated_ledger_url)
    spent, reserved = s["counters"][("project", "proj-a", "day")]
    assert spent == s["ledger"]["proj-a"] == len(ok) * ACTUAL == sum(c.cost_micros for c in ok)
    assert spent <= 8400 and reserved == 0 and s["open"] == 0
    assert s["statuses"] == {"ok": len(ok), "refused": len(refused)}
    assert len(openai_sim.requests) == len(ok)  # a refused request never reached the provider
    e = refused[0]
    assert (e.scope, e.scope_id, e.window, e.limit_micros) == ("project", "proj-a", "day", 8400)
    assert e.spent_micros + e.reserved_micros + e.requested_micros > 8400


def gw_messages():
    from llmgw.types import Message

    return [Message(**m) for m in ASK]


async def test_daily_window_rolls_over_at_midnight_in_the_budget_timezone(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    now = [datetime(2026, 11, 23, 22, 30)]  # UTC; 23:30 in Paris
    gw = gateway_for(sims, migrated_ledger_url,
                     {"timezone": "Europe/Paris", "agents": {"dev-1": {"daily_usd": "0.0003"}}},
                     clock=lambda: now[0])
    try:
        await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
        with pytest.raises(BudgetExceeded) as info:
            await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
        assert info.value.resets_at == datetime(2026, 11, 23, 23, 0)  # Paris midnight, in UTC
        now[0] = datetime(2026, 11, 23, 23, 0, 1)  # a new day in Paris
        await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
    finally:
        await gw.aclose()
    s = sums(migrated_ledger_url)
    assert s["statuses"] == {"ok": 2, "refused": 1}
    rows = ledger_rows(migrated_ledger_url)
    assert [r["ts"] for r in rows if r["status"] == "ok"] == [datetime(2026, 11, 23, 22, 30),
                                                              datetime(2026, 11, 23, 23, 0, 1)]


async def test_a_rule_set_while_running_applies_once_the_gateway_rereads_the_rules(
        sims, migrated_ledger_url):
    from llmgw.budgets.rules import Rule

    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    gw = gateway_for(sims, migrated_ledger_url, {"projects": {"*": {"daily_usd": "1"}}})
    try:
        await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
        gw.budget_store.set_rule(Rule("project", "p", "day", 100, 0.8), gw.clock())
        gw.planner._rules_at = -math.inf  # as if `_RULES_TTL_S` had passed
        with pytest.raises(BudgetExceeded) as info:
            await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
        assert (info.value.scope, info.value.limit_micros) == ("project", 100)
        await gw.complete("dev-1", "q", ASK, model_group="solo", max_tokens=100)  # not p's
        gw.budget_store.delete_rule("project", "p", "day")
        gw.planner._rules_at = -math.inf
        await gw.complete("dev-1", "p", ASK, model_group="solo", max_tokens=100)
    finally:
        await gw.aclose()
    assert sums(migrated_ledger_url)["statuses"] == {"ok": 3, "refused": 1}


async def test_warning_fires_once_per_window(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    events = []
    gw = gateway_for(sims, migrated_ledger_url,
                     {"projects": {"p": {"monthly_usd": "0.001", "warn_at": 0.5}}})
    gw.on("budget.warning", lambda name, payload: events.append(payload))
    try:
        for _ in range(5):
            await gw.complete("a", "p", ASK, model_group="solo", max_tokens=100)
    finally:
        await gw.aclose()
    assert len(events) == 1
    assert (events[0]["scope"], events[0]["period"], events[0]["spent_micros"]) == (
        "project", "month", 4 * ACTUAL)  # 3 * 164 = 492 < 500 <= 656


async def test_downgrade_past_warn_ratio_says_why(sims, migrated_ledger_url):
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(prompt_tokens=10, completion_tokens=100))
    gw = gateway_for(sims, migrated_ledger_url, {"agent_types": {"software-architect": {
        "daily_usd": "0.01", "warn_at": 0.25, "downgrade_to": "backup"}}})
    try:
        groups = []
        for _ in range(4):
            c = await gw.complete("arch-1", "p", ASK, agent_type="software-architect",
                                  max_tokens=100)
            groups.append(c.model_group)
    finally:
        await gw.aclose()
    # primary costs 10 * 3 + 100 * 15 = 1530 micros: 2 calls pass 25 % of 10000
    assert groups == ["primary", "primary", "backup", "backup"]
    rows = ledger_rows(migrated_ledger_url)
    reasons = [r["metadata"]["llmgw"]["route"] for r in rows]
    assert reasons[:2] == ["agent_type", "agent_type"]
    assert reasons[2].startswith("downgrade: agent_type software-architect day budget past 25%")
    assert "primary -> backup" in reasons[2]


async def test_per_request_cap_refuses_before_any_counter(sims, migrated_ledger_url):
    gw = gateway_for(sims, migrated_ledger_url, {"per_request_usd": "0.0001"})
    try:
        with pytest.raises(BudgetExceeded) as info:
            await gw.complete("a", "p", ASK, model_group="solo", max_tokens=1000)
        small = await gw.complete("a", "p", ASK, model_group="solo", max_tokens=20)
    finally:
        await gw.aclose()
    assert (info.value.scope, info.value.window, info.value.resets_at) == ("request", "request",
                                                                           None)
    assert small.content
    assert sums(migrated_ledger_url)["statuses"] == {"refused": 1, "ok": 1}


async def test_failures_release_the_hold(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.error(500))
    gw = gateway_for(sims, migrated_ledger_url, {"projects": {"*": {"daily_usd": 1}}})
    try:
        for _ in range(3):
            with pytest.raises(ProviderUnavailable):
                await gw.complete("a", "p", ASK, model_group="solo", max_tokens=100)
    finally:
        await gw.aclose()
    s = sums(migrated_ledger_url)
    assert s["counters"][("project", "p", "day")] == (0, 0) and s["open"] == 0
    assert s["statuses"] == {"error": 3}


def test_default_max_tokens_bounds_the_call(sims, migrated_ledger_url):
    openai_sim, _ = sims
    gw = gateway_for(sims, migrated_ledger_url,
                     {"default_max_tokens": 64, "projects": {"*": {"daily_usd": 1}}})
    try:
        gw.complete_sync("a", "p", ASK, model_group="solo")
    finally:
        gw.close()
    assert openai_sim.requests[0].json["max_tokens"] == 64


