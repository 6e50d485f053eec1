"""The reserves and the settles queued in one loop pass run as one batch, each request
answered as if it ran alone. PostgreSQL: one statement each (migrations 0005-0006); a batch
that fails runs each call alone. SQLite: one commit, each request in a savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text

from llmgw.budgets.rules import CounterKey, Limit
from llmgw.errors import LedgerError
from llmgw.ledger import fallbacks
from llmgw.ledger.budgets import BudgetStore, Hold, RefusedError
from llmgw.ledger.store import LedgerStore
from tests.ledger.test_budget_steps import DAY, NOW, limits, row

BOTH = pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)


def reserve_op(budgets: BudgetStore, amount: int, lims, keys, request_id: str | None = None):
    return budgets.reserve_op(
        request_id=request_id or uuid.uuid4().hex, amount_micros=amount, limits=lims,
        keys=keys, created_at=NOW, agent_id="a1", agent_type="qa", project_id="p1",
        model_group="g")


def transactions(ledger: LedgerStore, table: str, request_ids: list[str]) -> int:
    """How many transactions wrote these requests' rows (PostgreSQL: xmin, the writing
    transaction; SQLite keeps no such thing: see `statements`)."""
    with ledger.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(DISTINCT xmin::text) FROM {table} "
                                 "WHERE request_id = ANY(:ids)"), {"ids": request_ids}
                            ).scalar_one()


@contextmanager
def statements(ledger: LedgerStore) -> Iterator[list[str]]:
    """SQLite: the statements the ledger's batches run meanwhile (an executemany's rows
    each count)."""
    seen: list[str] = []
    conn = ledger._loop_commit._connection()
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def one_transaction(ledger: LedgerStore, seen: list[str], table: str, ids: list[str]) -> bool:
    if ledger.local:
        return seen.count("COMMIT") == 1 and seen[0].startswith("BEGIN")
    return transactions(ledger, table, ids) == 1


def nothing() -> Any:
    return contextmanager(lambda: iter([None]))()


def counting(ledger: LedgerStore) -> Iterator[list[str]]:
    return statements(ledger) if ledger.local else contextmanager(lambda: iter([[]]))()


@contextmanager
def fell_back(caplog: pytest.LogCaptureFixture, batch: str, size: int) -> Iterator[None]:
    """The block makes `batch` (of `size` calls) fail as one statement, exactly once: one
    warning that says so, and the count goes up by one. The bad input is not logged.
    PostgreSQL only: SQLite runs each request of a batch in a savepoint of its own."""
    before = fallbacks.counts().get(batch, 0)
    with caplog.at_level("WARNING", logger="llmgw.ledger"):
        yield
    warnings = [r for r in caplog.records if r.name == "llmgw.ledger"]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert f"batch {batch} of {size} calls failed" in warnings[0].getMessage()
    assert "no such status" not in caplog.text and "same" not in caplog.text
    assert fallbacks.counts()[batch] == before + 1


@BOTH
async def test_a_loop_pass_of_reserves_is_one_transaction_each_answered_alone(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # room for three holds of 300, not four
    with counting(ledger) as seen:
        outcomes = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                          for _ in range(4)), return_exceptions=True)
    holds = [o for o in outcomes if isinstance(o, Hold)]
    [refused] = [o for o in outcomes if isinstance(o, RefusedError)]
    assert len(holds) == 3
    assert refused.refusal.limit == lims[1]
    assert (refused.refusal.spent_micros, refused.refusal.reserved_micros) == (0, 900)
    assert one_transaction(ledger, seen, "reservations", [h.request_id for h in holds])
    assert set(budgets.counters(keys).values()) == {(0, 900)}  # the refusal held nothing
    assert sorted(r.request_id for r in budgets.open_reservations()) == sorted(
        h.request_id for h in holds)


@BOTH
async def test_a_loop_pass_of_settles_is_one_transaction_and_warns_once(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # warns at 800 spent
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                   for _ in range(3)))
    with counting(ledger) as seen:
        results = await asyncio.gather(*(ledger.transact(budgets.settle_op(
            hold, spent_micros=290, rows=[row(hold.request_id, 290)])) for hold in holds))
    ids = [h.request_id for h in holds]
    assert one_transaction(ledger, seen, "usage_events", ids)
    assert one_transaction(ledger, seen, "reservations", ids)  # closed by that transaction
    assert budgets.counters(keys)[keys[1]] == (870, 0)
    # The project's day crossed 800 in this batch: one warning, with the batch's spend.
    crossings = [c for r in results for c in r.crossings]
    assert [(c.key, c.spent_micros) for c in crossings] == [(keys[1], 870)]
    assert budgets.open_reservations() == []
    with ledger.engine.connect() as conn:  # the rollup trigger saw every row of the batch
        assert conn.execute(text("SELECT sum(cost_micros), sum(attempts) FROM usage_rollup")
                            ).one() == (870, 3)


@BOTH
async def test_a_batch_settles_each_hold_once_as_lone_calls_would(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    hold = await ledger.transact(reserve_op(budgets, 300, lims, keys))
    rows = [row(hold.request_id, 100), {**row(hold.request_id, 0), "attempt": 2}]
    with counting(ledger) as seen:
        await asyncio.gather(
            ledger.transact(budgets.settle_op(hold, spent_micros=100, rows=rows[:1])),
            ledger.transact(budgets.settle_op(hold, spent_micros=50, rows=rows[1:],
                                              state="released")))
    assert one_transaction(ledger, seen, "usage_events", [hold.request_id])  # one batch
    assert set(budgets.counters(keys).values()) == {(100, 0)}  # the first settle moved it
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT state, settled_micros FROM reservations")).one() == (
            "settled", 100)
        assert conn.execute(text("SELECT attempt FROM usage_events ORDER BY attempt")
                            ).scalars().all() == [1, 2]


@BOTH
async def test_a_bad_call_fails_alone_and_the_rest_of_its_batch_commits(stores, caplog) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    with fell_back(caplog, "reserve_many", 3) if not ledger.local else nothing():
        outcomes = await asyncio.gather(
            ledger.transact(reserve_op(budgets, 100, lims, keys, request_id="same")),
            ledger.transact(reserve_op(budgets, 100, lims, keys, request_id="same")),
            ledger.transact(reserve_op(budgets, 100, lims, keys)), return_exceptions=True)
    duplicate = sqlite3.IntegrityError if ledger.local else __import__(
        "psycopg").errors.UniqueViolation
    assert [type(o) for o in outcomes] == [Hold, duplicate, Hold]
    assert set(budgets.counters(keys).values()) == {(0, 200)}  # the duplicate held nothing
    assert len(budgets.open_reservations()) == 2


@BOTH
async def test_a_bad_settle_fails_alone_and_the_rest_of_its_batch_commits(stores, caplog) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, lims, keys))
                                   for _ in range(3)))
    bad = {**row(holds[1].request_id, 40), "status": "no such status"}  # a CHECK fails
    with fell_back(caplog, "settle_many", 3) if not ledger.local else nothing():
        outcomes = await asyncio.gather(*(ledger.transact(budgets.settle_op(
            hold, spent_micros=40, rows=[bad if hold is holds[1] else row(hold.request_id, 40)]))
            for hold in holds), return_exceptions=True)
    assert isinstance(outcomes[1], Exception)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
    # The bad one is still open and held; the others moved to spend with their rows.
    assert set(budgets.counters(keys).values()) == {(80, 100)}
    assert [r.request_id for r in budgets.open_reservations()] == [holds[1].request_id]
    with ledger.engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT request_id FROM usage_events")).scalars()) == \
            sorted([holds[0].request_id, holds[2].request_id])


@BOTH
async def test_a_loop_pass_of_plain_row_writes_is_one_transaction(stores) -> None:
    ledger, _ = stores
    ids = [uuid.uuid4().hex for _ in range(3)]
    with counting(ledger) as seen:
        await asyncio.gather(*(ledger.write([row(i, 10), row(i, 20) | {"attempt": 2}])
                               for i in ids))
    assert one_transaction(ledger, seen, "usage_events", ids)
    with ledger.engine.connect() as conn:
        stored = conn.execute(text("SELECT request_id, attempt, cost_micros FROM usage_events "
                                   "ORDER BY id")).all()
    assert [tuple(r) for r in stored] == [(i, a, c) for i in ids for a, c in ((1, 10), (2, 20))]


@BOTH
async def test_a_bad_row_write_fails_alone_and_the_rest_of_its_batch_is_written(
        stores, caplog) -> None:
    ledger, _ = stores
    ids = [uuid.uuid4().hex for _ in range(3)]
    bad = row(ids[1], 10) | {"status": "no such status"}  # a CHECK fails
    # PostgreSQL merges the writes into one statement; SQLite runs each in a savepoint.
    with fell_back(caplog, "insert_rows", 3) if not ledger.local else nothing():
        outcomes = await asyncio.gather(*(ledger.write([bad if i == ids[1] else row(i, 10)])
                                          for i in ids), return_exceptions=True)
    assert isinstance(outcomes[1], LedgerError) and "1 usage row" in str(outcomes[1])
    assert outcomes[0] is None and outcomes[2] is None
    with ledger.engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT request_id FROM usage_events")).scalars()) == \
            sorted([ids[0], ids[2]])


@BOTH
async def test_a_caller_alone_is_run_at_once_in_a_transaction_of_its_own(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    with counting(ledger) as seen:
        holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, lims, keys),
                                                       alone=True) for _ in range(3)))
    if ledger.local:
        assert seen.count("COMMIT") == 3
    else:
        assert transactions(ledger, "reservations", [h.request_id for h in holds]) == 3
    assert set(budgets.counters(keys).values()) == {(0, 300)}


@SQLITE
async def test_sqlite_a_batch_on_shared_counters_holds_and_settles_each_request(stores) -> None:
    ledger, budgets = stores
    lims, keys = limits()
    # Two agents of one project: the project's counters are shared, the agents' are not.
    other_agent = [Limit("agent", "a2", "day", 10_000, 0.8), *lims[1:]]
    other_keys = [CounterKey("agent", "a2", "day", DAY), *keys[1:]]
    asks = [(lims, keys)] * 3 + [(other_agent, other_keys)] * 2
    await ledger.transact(reserve_op(budgets, 1, lims, keys))  # counters made: none is new
    await ledger.transact(reserve_op(budgets, 1, other_agent, other_keys))
    with statements(ledger) as seen:
        holds = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 100, lim, key))
                                       for lim, key in asks))
    assert seen.count("COMMIT") == 1
    assert budgets.counters(keys) == {keys[0]: (0, 301), keys[1]: (0, 502), keys[2]: (0, 502)}
    assert budgets.counters(other_keys)[other_keys[0]] == (0, 201)
    with statements(ledger) as seen:
        await asyncio.gather(*(ledger.transact(budgets.settle_op(
            hold, spent_micros=30, rows=[row(hold.request_id, 30)])) for hold in holds))
    assert seen.count("COMMIT") == 1
    assert budgets.counters(keys) == {keys[0]: (90, 1), keys[1]: (150, 2), keys[2]: (150, 2)}
    assert budgets.counters(other_keys)[other_keys[0]] == (60, 1)


@SQLITE
async def test_sqlite_a_batch_without_room_for_all_refuses_exactly_whom_lone_calls_would(
        stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(agent_micros=1_000)
    other_agent = [Limit("agent", "a2", "day", 2_000, 0.8), *lims[1:]]
    other_keys = [CounterKey("agent", "a2", "day", DAY), *keys[1:]]
    # a1 has room for two of 400, a2 for all three: only a1's third is refused.
    asks = [(lims, keys), (other_agent, other_keys)] * 3
    outcomes = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 400, lim, key))
                                      for lim, key in asks), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["Hold"] * 4 + ["RefusedError", "Hold"]
    refusal = outcomes[4].refusal
    assert (refusal.limit, refusal.spent_micros, refusal.reserved_micros) == (lims[0], 0, 800)
    assert budgets.counters(keys) == {keys[0]: (0, 800), keys[1]: (0, 2_000),
                                      keys[2]: (0, 2_000)}
    assert budgets.counters(other_keys)[other_keys[0]] == (0, 1_200)
    assert len(budgets.open_reservations()) == 5


@SQLITE
async def test_sqlite_a_batch_waiting_for_another_process_runs_in_the_writer_thread(
        stores) -> None:
    ledger, budgets = stores
    lims, keys = limits(project_micros=1_000)  # room for three holds of 300, not four
    other = sqlite3.connect(ledger.engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        reserving = asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                     for _ in range(4)), return_exceptions=True)
        for _ in range(3):  # the loop runs on: the batch went to the writer thread
            await asyncio.sleep(0)
        assert not reserving.done() and ledger._thread_commit._thread is not None
    finally:
        other.execute("COMMIT")
        other.close()
    outcomes = await reserving
    assert [type(o).__name__ for o in outcomes].count("Hold") == 3
    [refused] = [o for o in outcomes if isinstance(o, RefusedError)]
    assert (refused.refusal.spent_micros, refused.refusal.reserved_micros) == (0, 900)
    assert set(budgets.counters(keys).values()) == {(0, 900)}
