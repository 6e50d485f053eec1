"""Reserve and settle on both databases (SQLite: `BudgetStore`'s statements on one cursor;
PostgreSQL: its budget functions, `llmgw_reserve_many` and `llmgw_settle_many`, one call each):
a refusal holds nothing, a hold settles once, a counter warns once, and settled rows read back
as the plain ledger write (`LedgerStore.write`) stores them."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import select, text

from llmgw.budgets.rules import CounterKey, Limit
from llmgw.ledger.budgets import BudgetStore, RefusedError
from llmgw.ledger.models import UsageEvent
from llmgw.ledger.store import LedgerStore

NOW = datetime(2026, 11, 23, 12, 0)
DAY = datetime(2026, 11, 23)


# SQLite also as before 3.35 (no RETURNING: one settle statement per counter, then the
# warn check), so that path stays tested; PostgreSQL runs the budget functions either way.
pytestmark = pytest.mark.parametrize(
    ("ledger_url", "sqlite_returning"),
    [("sqlite", True), ("sqlite", False), ("postgresql", True)], indirect=True,
    ids=["sqlite", "sqlite<3.35", "postgresql"])


@pytest.fixture
def sqlite_returning(request) -> bool:
    return request.param


@pytest.fixture
async def stores(migrated_ledger_url: str, sqlite_returning: bool):
    ledger = LedgerStore(migrated_ledger_url)
    budgets = BudgetStore(ledger.engine)
    if not sqlite_returning:
        budgets.db._returning = False
    yield ledger, budgets
    ledger.dispose()


def limits(agent_micros: int = 10_000, project_micros: int = 10_000,
           month_micros: int = 10_000) -> tuple[list[Limit], list[CounterKey]]:
    lims = [Limit("agent", "a1", "day", agent_micros, 0.8),
            Limit("project", "p1", "day", project_micros, 0.8),
            Limit("project", "p1", "month", month_micros, 0.8)]
    starts = [DAY, DAY, datetime(2026, 11, 1)]
    return lims, [CounterKey(lim.scope, lim.scope_id, lim.period, start)
                  for lim, start in zip(lims, starts, strict=True)]


def row(request_id: str, cost: int) -> dict:
    return dict(request_id=request_id, attempt=1, ts=NOW, agent_id="a1", agent_type="qa",
                project_id="p1", model_group="g", deployment_id="d", provider="openai",
                model="m", status="ok", error_class=None, error_message=None,
                prompt_tokens=10, completion_tokens=5, cache_read_tokens=0, cost_micros=cost,
                saved_micros=0, latency_ms=1.0, stream=False, metadata=None)


async def reserve(ledger: LedgerStore, budgets: BudgetStore, amount: int, lims, keys):
    return await ledger.transact(budgets.reserve_op(
        request_id=uuid.uuid4().hex, amount_micros=amount, limits=lims, keys=keys,
        created_at=NOW, agent_id="a1", agent_type="qa", project_id="p1", model_group="g"))


def ledger_sum(ledger: LedgerStore) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(text("SELECT COALESCE(SUM(cost_micros), 0) FROM usage_events")
                            ).scalar_one()


async def test_a_refusal_on_a_middle_counter_undoes_the_holds_before_and_after_it(stores):
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # the project's day is the one that is full
    with pytest.raises(RefusedError) as refused:
        await reserve(ledger, budgets, 5_000, lims, keys)
    assert refused.value.refusal.limit == lims[1]
    assert (refused.value.refusal.spent_micros, refused.value.refusal.reserved_micros) == (0, 0)
    assert set(budgets.counters(keys).values()) <= {(0, 0)}  # nothing held, nothing spent
    assert budgets.open_reservations() == []
    # Room on every counter again: the same amount now holds on all three.
    hold = await reserve(ledger, budgets, 900, lims, keys)
    assert set(budgets.counters(keys).values()) == {(0, 900)}
    assert [r.request_id for r in budgets.open_reservations()] == [hold.request_id]


async def test_a_hold_settles_once_and_a_second_settle_writes_rows_but_moves_nothing(stores):
    ledger, budgets = stores
    lims, keys = limits()
    hold = await reserve(ledger, budgets, 3_000, lims, keys)
    await ledger.transact(budgets.settle_op(hold, spent_micros=1_200,
                                            rows=[row(hold.request_id, 1_200)]))
    assert set(budgets.counters(keys).values()) == {(1_200, 0)}
    again = row(hold.request_id, 0) | {"attempt": 2}
    await ledger.transact(budgets.settle_op(hold, spent_micros=1_200, rows=[again]))
    assert set(budgets.counters(keys).values()) == {(1_200, 0)}
    assert ledger_sum(ledger) == 1_200
    assert budgets.open_reservations() == []


async def test_a_counter_crossing_its_warn_ratio_is_reported_once(stores):
    ledger, budgets = stores
    lims, keys = limits(agent_micros=1_000)  # warns at 800
    crossed = []
    for spent in (500, 400, 50):
        hold = await reserve(ledger, budgets, spent, lims, keys)
        result = await ledger.transact(budgets.settle_op(
            hold, spent_micros=spent, rows=[row(hold.request_id, spent)]))
        crossed.append([(c.key, c.spent_micros) for c in result.crossings])
    assert crossed == [[], [(keys[0], 900)], []]


async def test_a_counter_thought_known_but_gone_is_made_again(stores):
    ledger, budgets = stores
    lims, keys = limits()
    hold = await reserve(ledger, budgets, 100, lims, keys)  # the counters are now "known"
    await ledger.transact(budgets.settle_op(hold, spent_micros=0, rows=[], state="released"))
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM budget_counters WHERE scope = 'project'"))
    await reserve(ledger, budgets, 100, lims, keys)
    assert set(budgets.counters(keys).values()) == {(0, 100)}


async def test_settled_rows_read_back_exactly_as_the_plain_ledger_write_stores_them(stores):
    ledger, budgets = stores
    lims, keys = limits()
    hold = await reserve(ledger, budgets, 3_000, lims, keys)
    meta = {"llmgw": {"route": "agent_type"}, "note": "café ✓", "nested": {"n": [1, 2.5]}}
    failed = row(hold.request_id, 0) | {
        "status": "error", "error_class": "RateLimited", "error_message": "429 'quoted'",
        "ts": datetime(2026, 11, 23, 12, 0, 0, 123456), "latency_ms": None, "metadata": meta,
        "prompt_tokens": 0, "completion_tokens": 0}
    served = row(hold.request_id, 1_500) | {"attempt": 2, "metadata": meta, "stream": True,
                                            "deployment_id": None, "latency_ms": 0.1 + 0.2}
    await ledger.transact(budgets.settle_op(hold, spent_micros=1_500, rows=[failed, served]))
    plain = [r | {"request_id": "plain"} for r in (failed, served)]
    await ledger.write(plain)
    with ledger.engine.connect() as conn:
        c = UsageEvent.__table__.c
        stored = conn.execute(select(
            c.request_id, c.attempt, c.ts, c.agent_type, c.deployment_id, c.status,
            c.error_class, c.error_message, c.prompt_tokens, c.cost_micros, c.latency_ms,
            c.stream, c.metadata).order_by(c.request_id, c.attempt)).all()
    by_request = {}
    for r in stored:
        by_request.setdefault(r[0], []).append(r[1:])
    assert by_request[hold.request_id] == by_request["plain"]
    assert [r[1] for r in by_request["plain"]] == [failed["ts"], served["ts"]]
    assert by_request["plain"][0][-1] == meta
    assert set(budgets.counters(keys).values()) == {(1_500, 0)}
