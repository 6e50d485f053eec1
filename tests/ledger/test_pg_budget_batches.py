"""PostgreSQL: the reserves queued in one loop pass go as one statement (migration 0005),
each request answered as if it ran alone."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from sqlalchemy import text

from llmgw.ledger.budget_store import BudgetStore, Hold, RefusedError
from llmgw.ledger.store import LedgerStore
from tests.ledger.test_budget_steps import NOW, limits, row

pytestmark = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)


@pytest.fixture
async def stores(migrated_ledger_url: str):
    ledger = LedgerStore(migrated_ledger_url)
    yield ledger, BudgetStore(ledger.engine)
    ledger.dispose()


def reserve_op(budgets: BudgetStore, amount: int, lims, keys, request_id: str | None = None):
    return budgets.reserve_op(
        request_id=request_id or uuid.uuid4().hex, amount_micros=amount, limits=lims,
        keys=keys, created_at=NOW, agent_id="a1", agent_type="qa", project_id="p1",
        model_group="g")


def transactions(ledger: LedgerStore, table: str, request_ids: list[str]) -> int:
    """How many transactions wrote these requests' rows (xmin: the writing transaction)."""
    with ledger.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(DISTINCT xmin::text) FROM {table} "
                                 "WHERE request_id = ANY(:ids)"), {"ids": request_ids}
                            ).scalar_one()


async def test_a_loop_pass_of_reserves_is_one_transaction_each_answered_alone(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # room for three holds of 300, not four
    outcomes = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                      for _ in range(4)), return_exceptions=True)
    holds = [o for o in outcomes if isinstance(o, Hold)]
    [refused] = [o for o in outcomes if isinstance(o, RefusedError)]
    assert len(holds) == 3
    assert refused.refusal.limit == lims[1]
    assert (refused.refusal.spent_micros, refused.refusal.reserved_micros) == (0, 900)
    assert transactions(ledger, "reservations", [h.request_id for h in holds]) == 1
    assert set(budgets.counters(keys).values()) == {(0, 900)}  # the refusal held nothing
    assert sorted(r.request_id for r in budgets.open_reservations()) == sorted(
        h.request_id for h in holds)


async def test_settles_are_not_batched(stores) -> None:
    # Their usage rows' rollup trigger locks rollup rows before the counters: a batch
    # locking the counters first would deadlock with a lone settle.
    ledger, budgets = stores
    lims, keys = limits()
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                   for _ in range(3)))
    await asyncio.gather(*(ledger.transact(budgets.settle_op(
        hold, spent_micros=290, rows=[row(hold.request_id, 290)])) for hold in holds))
    assert transactions(ledger, "usage_events", [h.request_id for h in holds]) == 3
    assert budgets.counters(keys)[keys[1]] == (870, 0)


async def test_a_bad_call_fails_alone_and_the_rest_of_its_batch_commits(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    outcomes = await asyncio.gather(
        ledger.transact(reserve_op(budgets, 100, lims, keys, request_id="same")),
        ledger.transact(reserve_op(budgets, 100, lims, keys, request_id="same")),
        ledger.transact(reserve_op(budgets, 100, lims, keys)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [Hold, psycopg.errors.UniqueViolation, Hold]
    assert set(budgets.counters(keys).values()) == {(0, 200)}  # the duplicate held nothing
    assert len(budgets.open_reservations()) == 2


async def test_a_caller_alone_is_sent_at_once_in_a_transaction_of_its_own(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, lims, keys),
                                                   alone=True) for _ in range(3)))
    assert transactions(ledger, "reservations", [h.request_id for h in holds]) == 3
    assert set(budgets.counters(keys).values()) == {(0, 300)}
