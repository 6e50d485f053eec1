"""PostgreSQL: the reserves (migration 0005) and the settles (0006) queued in one loop pass
go as one statement each, each request answered as if it ran alone."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from sqlalchemy import text

from llmgw.budgets import CounterKey, Limit
from llmgw.ledger.budget_store import BudgetStore, Hold, RefusedError
from llmgw.ledger.store import LedgerStore
from tests.ledger.test_budget_steps import DAY, NOW, limits, row

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


async def test_a_loop_pass_of_settles_is_one_transaction_and_warns_once(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # warns at 800 spent
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                   for _ in range(3)))
    results = await asyncio.gather(*(ledger.transact(budgets.settle_op(
        hold, spent_micros=290, rows=[row(hold.request_id, 290)])) for hold in holds))
    ids = [h.request_id for h in holds]
    assert transactions(ledger, "usage_events", ids) == 1
    assert transactions(ledger, "reservations", ids) == 1  # closed by that same transaction
    assert budgets.counters(keys)[keys[1]] == (870, 0)
    # The project's day crossed 800 with the third settle, in batch order: one warning.
    crossings = [c for r in results for c in r.crossings]
    assert [(c.key, c.spent_micros) for c in crossings] == [(keys[1], 870)]
    assert budgets.open_reservations() == []
    with ledger.engine.connect() as conn:  # the rollup trigger saw every row of the batch
        assert conn.execute(text("SELECT sum(cost_micros), sum(attempts) FROM usage_rollup")
                            ).one() == (870, 3)


async def test_a_batch_settles_each_hold_once_as_lone_calls_would(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    hold = await ledger.transact(reserve_op(budgets, 300, lims, keys))
    rows = [row(hold.request_id, 100), {**row(hold.request_id, 0), "attempt": 2}]
    await asyncio.gather(
        ledger.transact(budgets.settle_op(hold, spent_micros=100, rows=rows[:1])),
        ledger.transact(budgets.settle_op(hold, spent_micros=50, rows=rows[1:],
                                          state="released")))
    assert transactions(ledger, "usage_events", [hold.request_id]) == 1  # one batch
    assert set(budgets.counters(keys).values()) == {(100, 0)}  # the first settle moved it
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT state, settled_micros FROM reservations")).one() == (
            "settled", 100)
        assert conn.execute(text("SELECT attempt FROM usage_events ORDER BY attempt")
                            ).scalars().all() == [1, 2]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_a_settle_takes_its_reservation_and_counters_before_rollup_rows(
        stores, batched: bool) -> None:
    # Every writer locks reservations, then counters, then rollup rows: a settle that waits
    # for a rollup row already holds the rest, so nobody can hold a rollup row it needs
    # while waiting for one of its counters (the deadlock of lone vs batched settles).
    ledger, budgets = stores
    lims, keys = limits()
    first = await ledger.transact(reserve_op(budgets, 100, lims, keys))
    await ledger.transact(budgets.settle_op(first, spent_micros=10,
                                            rows=[row(first.request_id, 10)]))
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, lims, keys))
                                   for _ in range(2 if batched else 1)))
    ids = [h.request_id for h in holds]
    conninfo = ledger.engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo) as blocker, \
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe:
        await blocker.execute("SELECT 1 FROM usage_rollup FOR UPDATE")  # the one rollup row
        settling = asyncio.gather(*(ledger.transact(budgets.settle_op(
            h, spent_micros=10, rows=[row(h.request_id, 10)]), alone=not batched)
            for h in holds))
        while not (await (await probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).fetchone())[0]:
            await asyncio.sleep(0.005)  # polls a condition: the settle is waiting
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await probe.execute("SELECT 1 FROM budget_counters FOR UPDATE NOWAIT")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await probe.execute("SELECT 1 FROM reservations WHERE request_id = ANY(%s) "
                                "FOR UPDATE NOWAIT", (ids,))
        await blocker.rollback()
        await settling
    assert transactions(ledger, "usage_events", ids) == 1
    assert set(budgets.counters(keys).values()) == {(10 + 10 * len(holds), 0)}


async def test_a_reserve_batch_makes_its_new_counters_in_the_global_order(stores) -> None:
    # At a window's start the counters are new. A batch makes and locks them one at a time
    # in the one global order, as a lone reserve does: while it waits for a counter someone
    # else is making, it has made every counter before it and none after.
    ledger, budgets = stores
    late, early = (CounterKey("agent", name, "day", DAY) for name in ("zed", "ann"))
    limit = Limit("agent", "x", "day", 10_000, 0.8)
    conninfo = ledger.engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False)
    make = ("INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros, "
            "reserved_micros, warned) VALUES (%s, %s, %s, %s, 0, 0, FALSE) "
            "ON CONFLICT DO NOTHING")
    async with await psycopg.AsyncConnection.connect(conninfo) as blocker, \
            await psycopg.AsyncConnection.connect(conninfo) as probe, \
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as watch:
        await blocker.execute(make, ("agent", "zed", "day", DAY))  # not committed yet
        # The request needing the late counter comes first in the batch.
        reserving = asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, [limit], [key]))
                                     for key in (late, early)))
        while not (await (await watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).fetchone())[0]:
            await asyncio.sleep(0.005)  # polls a condition: the batch is waiting
        await probe.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):  # the batch made "ann" already
            await probe.execute(make, ("agent", "ann", "day", DAY))
        await probe.rollback()
        await blocker.commit()
        holds = await reserving
    assert transactions(ledger, "reservations", [h.request_id for h in holds]) == 1
    assert budgets.counters([late, early]) == {late: (0, 100), early: (0, 100)}


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
