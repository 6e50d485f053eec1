"""`llmgw serve --workers 2` on one PostgreSQL ledger: 200 concurrent `openai` SDK clients
against one project budget. Budgets stay exact across worker processes (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import signal

import openai
import pytest
from sqlalchemy import create_engine, text

from llmgw.budgets.rules import Rule
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.timespec import utcnow
from llmgw.sim import FaultPlan
from tests.server.conftest import open_reservations
from tests.server.test_lifecycle import start_serve
from tests.support import ledger_rows

LIMIT_MICROS = 1000  # about half of the 200 answers' worth
CLIENTS = 200
MAX_TOKENS = 5


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_200_clients_on_2_workers_keep_one_budget_exact(tmp_path, sims, migrated_ledger_url):
    url = migrated_ledger_url
    openai_sim, _ = sims
    # answers as long as max_tokens: each costs about what it holds, so the limit binds on
    # spend as well as on holds
    openai_sim.set_plan(FaultPlan(completion_tokens=MAX_TOKENS))
    engine = make_engine(url)
    try:
        BudgetStore(engine).set_rule(Rule("project", "proj-a", "day", LIMIT_MICROS, 0.8),
                                     utcnow())
        key = ApiKeyStore(engine).create(project_id="proj-a").secret  # any agent
    finally:
        engine.dispose()
    process, base = start_serve(tmp_path, sims, url, "--workers", "2")
    outcomes: list[str] = []
    try:
        async def one(i: int) -> None:
            async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0,
                                          timeout=300) as client:
                try:
                    await client.chat.completions.create(
                        model="solo", max_tokens=MAX_TOKENS, user=f"agent-{i % 20}",
                        messages=[{"role": "user", "content": f"Task {i}"}])
                    outcomes.append("ok")
                except openai.RateLimitError as exc:
                    outcomes.append(exc.code or "?")

        async def all_clients() -> None:
            await asyncio.gather(*(one(i) for i in range(CLIENTS)))

        asyncio.run(all_clients())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert len(outcomes) == CLIENTS
    assert set(outcomes) == {"ok", "budget_exceeded"}
    rows = ledger_rows(url)
    spent = sum(r["cost_micros"] for r in rows)
    assert 0 < spent <= LIMIT_MICROS
    assert sum(r["status"] == "ok" for r in rows) == outcomes.count("ok")
    assert sum(r["status"] == "refused" for r in rows) == outcomes.count("budget_exceeded")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            counter = conn.execute(text(
                "SELECT spent_micros, reserved_micros FROM budget_counters "
                "WHERE scope = 'project' AND scope_id = 'proj-a' AND period = 'day'")).one()
    finally:
        engine.dispose()
    assert (counter.spent_micros, counter.reserved_micros) == (spent, 0)
    assert open_reservations(url) == 0
