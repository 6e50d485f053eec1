"""Budgets per agent run: `llmgw.budgets.sessions` caps a session's whole run, exactly, on
both databases; requests of other runs, or of none, are not held against it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from llmgw.budgets.rules import TOTAL_START, BudgetPolicy, Rule
from llmgw.config.loading import config_from_dict
from llmgw.config.models import BudgetSettings
from llmgw.errors import BudgetExceeded
from llmgw.sim import FaultPlan
from tests.budgets.conftest import ANSWER_USAGE, budget_config, sums
from tests.support import expected_cost_micros, ledger_rows

ASK = [{"role": "user", "content": "Estimate the migration effort."}]
ACTUAL = expected_cost_micros("solo-openai", 10, 100)  # 164 micros


def gateway_for(sims, url, budgets, clock=None):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    cfg = config_from_dict(budget_config(openai_sim.base_url, anthropic_sim.base_url, url,
                                         budgets))
    return LLMGateway(cfg, **({"clock": clock} if clock else {}))


def ask(gw, session: str | None, agent: str = "dev-1"):
    return gw.complete(agent, "proj-a", ASK, model_group="solo", max_tokens=100,
                       session_id=session)


async def test_50_concurrent_requests_of_one_run_never_overspend_its_cap(sims,
                                                                         migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    gw = gateway_for(sims, migrated_ledger_url, {"sessions": {"*": {"total_usd": "0.0042"}}})
    try:
        worst = gw.worst_case_micros("solo", [_message()], 100)
        assert 160 < worst < 190  # ~25 holds fit into $0.0042 at once: 50 must refuse some
        results = await asyncio.gather(*(ask(gw, "run-1", agent=f"dev-{i % 5}")
                                         for i in range(50)), return_exceptions=True)
        other = await ask(gw, "run-2")  # another run has its own cap
        anonymous = await ask(gw, None)  # a request without a session has none
    finally:
        await gw.aclose()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) + len(refused) == 50 and refused
    assert 20 <= len(ok) <= 4200 // ACTUAL
    s = sums(migrated_ledger_url)
    spent, reserved = s["counters"][("session", "run-1", "total")]
    rows = ledger_rows(migrated_ledger_url)
    run_1 = [r for r in rows if r["session_id"] == "run-1"]
    assert spent == sum(r["cost_micros"] for r in run_1) == len(ok) * ACTUAL
    assert spent == sum(c.cost_micros for c in ok) <= 4200
    assert reserved == 0 and s["open"] == 0
    assert s["counters"][("session", "run-2", "total")] == (other.cost_micros, 0) == (ACTUAL, 0)
    assert anonymous.cost_micros == ACTUAL
    assert {k for k in s["counters"] if k[0] == "session"} == {("session", "run-1", "total"),
                                                              ("session", "run-2", "total")}
    assert len(openai_sim.requests) == len(ok) + 2  # a refused request reached no provider
    for e in refused:
        assert (e.scope, e.scope_id, e.window, e.limit_micros) == ("session", "run-1", "total",
                                                                   4200)
        assert e.spent_micros + e.reserved_micros + e.requested_micros > 4200
        assert e.resets_at is None  # a run's cap never resets
        assert "session 'run-1'" in str(e) and "resets at" not in e.message
    refusal_rows = [r for r in run_1 if r["status"] == "refused"]
    assert len(refusal_rows) == len(refused)
    for row in refusal_rows:
        assert row["error_class"] == "BudgetExceeded" and "session 'run-1'" in row["error_message"]
        assert row["metadata"]["llmgw"]["budget"]["scope"] == "session"
        assert row["metadata"]["llmgw"]["budget"]["scope_id"] == "run-1"
        assert row["metadata"]["llmgw"]["budget"]["period"] == "total"


async def test_a_runs_cap_is_for_the_whole_run_and_never_resets(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    now = [datetime(2026, 11, 30, 23, 0)]
    gw = gateway_for(sims, migrated_ledger_url,
                     {"agents": {"*": {"daily_usd": 1}}, "sessions": {"*": {"total_usd": "0.0003"}}},
                     clock=lambda: now[0])
    try:
        await ask(gw, "run-long")
        now[0] += timedelta(days=40)  # a new day and a new month: the day's budget resets
        with pytest.raises(BudgetExceeded) as info:
            await ask(gw, "run-long")
        await ask(gw, "run-next")  # a new run starts afresh
    finally:
        await gw.aclose()
    assert (info.value.scope, info.value.scope_id) == ("session", "run-long")
    assert "never resets" in info.value.message and "Start a new run" in info.value.hint
    s = sums(migrated_ledger_url)
    assert s["counters"][("session", "run-long", "total")] == (ACTUAL, 0)
    assert s["statuses"] == {"ok": 2, "refused": 1}
    windows = _windows(migrated_ledger_url)
    assert windows["agent"] == [datetime(2026, 11, 30), datetime(2027, 1, 9)]  # a day each
    assert windows["session"] == [TOTAL_START, TOTAL_START]  # one window per run, ever


async def test_a_named_runs_own_entry_wins_over_the_default(sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    gw = gateway_for(sims, migrated_ledger_url,
                     {"sessions": {"*": {"total_usd": "0.0001"}, "big-run": {"total_usd": 1}}})
    try:
        await ask(gw, "big-run")
        with pytest.raises(BudgetExceeded) as info:
            await ask(gw, "small-run")
    finally:
        await gw.aclose()
    assert (info.value.scope_id, info.value.limit_micros) == ("small-run", 100)
    assert sums(migrated_ledger_url)["counters"][("session", "big-run", "total")] == (ACTUAL, 0)


def test_policy_holds_a_request_to_its_session_only_when_it_names_one() -> None:
    policy = BudgetPolicy(BudgetSettings.model_validate(
        {"projects": {"*": {"daily_usd": 5}}, "sessions": {"*": {"total_usd": 2, "warn_at": 0.5},
                                                           "s-1": {"total_usd": 3}}}))
    plain = policy.limits(agent_id="a", agent_type=None, project_id="p", rules=[])
    assert [(x.scope, x.period) for x in plain] == [("project", "day")]
    run = policy.limits(agent_id="a", agent_type=None, project_id="p", rules=[], session_id="s-2")
    assert [(x.scope, x.scope_id, x.period, x.limit_micros, x.warn_ratio) for x in run][1:] == [
        ("session", "s-2", "total", 2_000_000, 0.5)]
    own = policy.limits(agent_id="a", agent_type=None, project_id="p", rules=[], session_id="s-1")
    assert own[-1].limit_micros == 3_000_000 and own[-1].warn_ratio == 0.8
    # a database rule (`llmgw budgets set --session`) wins over the config file
    rules = [Rule("session", "s-1", "total", 7, 0.9)]
    ruled = policy.limits(agent_id="a", agent_type=None, project_id="p", rules=rules,
                          session_id="s-1")
    assert (ruled[-1].limit_micros, ruled[-1].warn_ratio) == (7, 0.9)
    # one window for the whole run: the same start whenever, no end
    key = policy.counter_key(own[-1], datetime(2031, 5, 6, 7, 8))
    assert key.period_start == TOTAL_START == policy.period_start(datetime(2026, 1, 1), "total")
    assert policy.period_end(key.period_start, "total") is None


def _windows(url: str) -> dict[str, list[datetime]]:
    """Every counter's window start, per scope, straight from SQL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT scope, period_start FROM budget_counters "
                                     "ORDER BY scope, period_start, scope_id")).all()
    finally:
        engine.dispose()
    out: dict[str, list[datetime]] = {}
    for scope, start in rows:
        out.setdefault(scope, []).append(start if isinstance(start, datetime)
                                         else datetime.fromisoformat(start))
    return out


def _message():
    from llmgw.types import Message

    return Message(**ASK[0])
