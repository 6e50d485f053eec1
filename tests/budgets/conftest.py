"""Budget tests: the integration simulators plus a config with budgets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from tests.integration.conftest import anthropic_sim, openai_sim, sims  # noqa: F401  (fixtures)
from tests.support import sim_config_dict

# The OpenAI simulator answers 10 prompt + 100 completion tokens: at $1/$2 per M on the
# "solo" deployment ($0.4/$1.6 per M) ... see costs below.
ANSWER_USAGE = dict(prompt_tokens=10, completion_tokens=100)


def budget_config(openai_url: str, anthropic_url: str, ledger_url: str, budgets: dict[str, Any],
                  **router_settings: Any) -> dict[str, Any]:
    data = sim_config_dict(openai_url, anthropic_url, ledger_url, **router_settings)
    data["llmgw"]["budgets"] = budgets
    return data


def sums(url: str) -> dict[str, Any]:
    """Ledger and counter totals, straight from SQL."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            ledger = dict(conn.execute(text(
                "SELECT project_id, COALESCE(SUM(cost_micros), 0) FROM usage_events "
                "GROUP BY project_id")).all())
            statuses = dict(conn.execute(text(
                "SELECT status, COUNT(*) FROM usage_events GROUP BY status")).all())
            counters = {(r[0], r[1], r[2]): (r[3], r[4]) for r in conn.execute(text(
                "SELECT scope, scope_id, period, spent_micros, reserved_micros "
                "FROM budget_counters"))}
            open_holds = conn.execute(text(
                "SELECT COUNT(*) FROM reservations WHERE state = 'open'")).scalar_one()
    finally:
        engine.dispose()
    return {"ledger": ledger, "statuses": statuses, "counters": counters, "open": open_holds}


def assert_counters_match_ledger(url: str) -> None:
    """Every agent and project counter: spent == the ledger's sum for it, nothing reserved,
    no reservation open (one day's counters: the tests run within one window)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            by = {scope: dict(conn.execute(text(
                f"SELECT {scope}_id, COALESCE(SUM(cost_micros), 0) FROM usage_events "
                f"GROUP BY {scope}_id")).all()) for scope in ("agent", "project")}
    finally:
        engine.dispose()
    s = sums(url)
    assert s["open"] == 0
    for (scope, scope_id, period), (spent, reserved) in s["counters"].items():
        assert (spent, reserved) == (by[scope].get(scope_id, 0), 0), (scope, scope_id, period)
