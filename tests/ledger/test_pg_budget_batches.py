"""PostgreSQL's batches (migrations 0005-0006) take their locks in the one global order.
What batches do on both databases: `test_budget_batches.py`."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest

from llmgw.budgets.rules import CounterKey, Limit
from tests.ledger.test_budget_batches import reserve_op, transactions
from tests.ledger.test_budget_steps import DAY, limits, row

pytestmark = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)

LOCK_WAITS = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
              "AND datname = current_database()")


async def until_a_lock_wait(count, timeout: float = 30.0) -> None:
    """Poll until a session of this database waits for a lock, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (await (await count()).fetchone())[0]:
        assert time.monotonic() < deadline, f"no session waited for a lock within {timeout}s"
        await asyncio.sleep(0.005)


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
        await until_a_lock_wait(lambda: probe.execute(LOCK_WAITS))  # the settle is waiting
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
        await until_a_lock_wait(lambda: watch.execute(LOCK_WAITS))  # the batch is waiting
        await probe.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):  # the batch made "ann" already
            await probe.execute(make, ("agent", "ann", "day", DAY))
        await probe.rollback()
        await blocker.commit()
        holds = await reserving
    assert transactions(ledger, "reservations", [h.request_id for h in holds]) == 1
    assert budgets.counters([late, early]) == {late: (0, 100), early: (0, 100)}


async def test_calls_made_while_their_statements_round_trip_is_out_go_together_next(
        stores) -> None:
    # At most one round trip per batch statement is out: the calls made meanwhile, over any
    # number of loop passes, wait for it and then go together, as one statement.
    ledger, _ = stores
    first, later = uuid.uuid4().hex, [uuid.uuid4().hex for _ in range(3)]
    conninfo = ledger.engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo) as blocker, \
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe:
        await blocker.execute("LOCK TABLE usage_events IN SHARE ROW EXCLUSIVE MODE")
        writes = [asyncio.ensure_future(ledger.write([row(first, 10)]))]
        await until_a_lock_wait(lambda: probe.execute(LOCK_WAITS))  # the first write waits
        for request_id in later:  # each in loop passes of its own
            writes.append(asyncio.ensure_future(ledger.write([row(request_id, 10)])))
            for _ in range(3):
                await asyncio.sleep(0)
        await blocker.rollback()
        await asyncio.gather(*writes)
    assert transactions(ledger, "usage_events", [first]) == 1
    assert transactions(ledger, "usage_events", later) == 1
    assert transactions(ledger, "usage_events", [first, *later]) == 2
