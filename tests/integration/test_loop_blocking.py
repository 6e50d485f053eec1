"""No blocking database call runs on the event loop's thread during `complete()`
(docs/architecture.md): budget rules, downgrade counters and every Core statement go to the ledger's
worker threads. (SQLite's loop batches use a raw connection that never waits for a lock,
by design: they are not Core statements and are not counted here.)"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event

from llmgw.config.loading import config_from_dict
from llmgw.sim import FaultPlan
from tests.budgets.conftest import budget_config, sums

ASK = [{"role": "user", "content": "Review the pull request."}]


async def test_complete_runs_no_sync_sql_on_the_loop(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(prompt_tokens=10, completion_tokens=100))
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url, {
        "per_request_usd": 1,
        "projects": {"*": {"daily_usd": 5}},
        "agents": {"*": {"daily_usd": 5}},
        "agent_types": {"software-architect": {"daily_usd": "0.01", "warn_at": 0.25,
                                               "downgrade_to": "backup"}}})
    data["llmgw"]["cache"] = {"backend": "memory"}
    gw = LLMGateway(config_from_dict(data))
    loop_thread = threading.get_ident()
    on_loop: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if threading.get_ident() == loop_thread:
            on_loop.append(statement.split()[0] + " " + statement[:80])

    event.listen(gw.ledger.engine, "before_cursor_execute", seen)
    try:
        served = []
        for round_ in range(3):
            gw.planner._rules_at = float("-inf")  # the rules are due to be read again
            answers = await asyncio.gather(*(
                gw.complete(f"arch-{i}", "p", [{"role": "user", "content": f"Q{round_}-{i}"}],
                            agent_type="software-architect", max_tokens=100)
                for i in range(3)))
            served += [a.model_group for a in answers]
            cached = await gw.complete("arch-0", "p", [{"role": "user", "content": "Q0-0"}],
                                       agent_type="software-architect", max_tokens=100)
        estimate = await gw.estimate("arch-0", "p", ASK, agent_type="software-architect")
    finally:
        event.remove(gw.ledger.engine, "before_cursor_execute", seen)
        await gw.aclose()
    assert on_loop == []
    # The checks above ran for real: rules were read, the downgrade fired, the cache hit.
    assert "backup" in served and "primary" in served
    assert cached.cached and estimate.budgets
    assert sums(migrated_ledger_url)["open"] == 0
