"""AsyncPostgres: the ledger's PostgreSQL transactions awaited on the event loop."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

import llmgw.ledger.pg_async as pg_async
from llmgw.ledger.engine import make_engine
from llmgw.ledger.pg_async import AsyncPostgres
from llmgw.ledger.steps import COMMIT, Steps

pytestmark = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)


@pytest.fixture
def engine(ledger_url: str):
    engine = make_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    yield engine
    engine.dispose()


@pytest.fixture
def make_pool(engine):
    """AsyncPostgres pools on the test table's database, all forgotten after the test."""
    pools: list[AsyncPostgres] = []

    def make(max_connections: int) -> AsyncPostgres:
        pools.append(AsyncPostgres(engine, max_connections=max_connections))
        return pools[-1]

    yield make
    for pool in pools:
        pool.forget()


def insert_then(v: int):
    def steps() -> Steps[int]:
        yield "INSERT INTO t (v) VALUES (%s)", (v,), False
        _, row = yield "SELECT pg_backend_pid()", (), False
        return row[0]
    return steps


def values(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT v FROM t ORDER BY v"))]


async def test_more_transactions_than_connections_all_commit_first_come_first_served(
        engine, make_pool):
    pool = make_pool(3)
    pids = await asyncio.gather(*(pool.transact(insert_then(i)) for i in range(40)))
    assert values(engine) == list(range(40))
    assert len(set(pids)) <= 3  # max_connections


async def test_a_failing_transaction_rolls_back_and_its_connection_is_reused(engine, make_pool):
    pool = make_pool(3)

    def half_then_fail() -> Steps[None]:
        yield "INSERT INTO t (v) VALUES (%s)", (99,), False
        yield "SELECT * FROM no_such_table", (), False

    with pytest.raises(Exception, match="no_such_table"):
        await pool.transact(half_then_fail)
    await pool.transact(insert_then(1))
    assert values(engine) == [1]


async def test_a_batch_runs_its_statements_in_order_and_returns_each_result(engine, make_pool):
    pool = make_pool(3)

    def batch() -> Steps[list]:
        return (yield [
            ("INSERT INTO t (v) VALUES (%s)", (1,), False),
            ("INSERT INTO t (v) VALUES (%s), (%s)", (2, 3), False),
            ("SELECT count(*), max(v) FROM t", (), False),
            ("INSERT INTO t (v) VALUES (%s)", [(4,), (5,)], True),
            COMMIT])

    assert await pool.transact(batch) == [(1, None), (2, None), (1, (3, 3)), (2, None),
                                          (0, None)]
    assert values(engine) == [1, 2, 3, 4, 5]


async def test_a_failing_statement_mid_batch_rolls_back_the_whole_transaction(engine, make_pool):
    pool = make_pool(1)

    def fails_mid_batch() -> Steps[None]:
        yield "INSERT INTO t (v) VALUES (%s)", (1,), False
        yield [("INSERT INTO t (v) VALUES (%s)", (2,), False),
               ("INSERT INTO t (v) VALUES (NULL)", (), False),  # NOT NULL
               ("INSERT INTO t (v) VALUES (%s)", (3,), False), COMMIT]

    with pytest.raises(Exception, match="null value"):
        await pool.transact(fails_mid_batch)
    assert values(engine) == []
    await pool.transact(insert_then(9))  # the connection is usable again
    assert values(engine) == [9]


async def test_steps_after_a_commit_run_in_a_transaction_of_their_own(engine, make_pool):
    pool = make_pool(1)

    def commit_then_fail() -> Steps[None]:
        yield [("INSERT INTO t (v) VALUES (%s)", (1,), False), COMMIT]
        yield "INSERT INTO t (v) VALUES (%s)", (2,), False
        yield "SELECT * FROM no_such_table", (), False

    with pytest.raises(Exception, match="no_such_table"):
        await pool.transact(commit_then_fail)
    assert values(engine) == [1]


async def test_a_connection_dropped_while_idle_is_replaced(engine, monkeypatch, make_pool):
    pool = make_pool(3)
    pid = await pool.transact(insert_then(1))
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT pg_terminate_backend({pid})")).scalar()
    monkeypatch.setattr(pg_async, "IDLE_PING_AFTER_S", 0.0)
    assert await pool.transact(insert_then(2)) != pid
    assert values(engine) == [1, 2]


async def test_a_cancelled_transaction_writes_nothing_and_frees_its_slot(engine, make_pool):
    pool = make_pool(3)
    inserted = asyncio.Event()

    def slow() -> Steps[None]:
        yield "INSERT INTO t (v) VALUES (%s)", (7,), False
        inserted.set()
        yield "SELECT pg_sleep(30)", (), False

    task = asyncio.ensure_future(pool.transact(slow))
    await inserted.wait()  # mid-transaction, holding its connection
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*(pool.transact(insert_then(i)) for i in range(5)))
    assert values(engine) == [0, 1, 2, 3, 4]


def test_a_new_event_loop_gets_new_connections(engine, make_pool):
    pool = make_pool(3)
    asyncio.run(pool.transact(insert_then(1)))
    asyncio.run(pool.transact(insert_then(2)))  # complete_sync: a new loop per call
    assert values(engine) == [1, 2]
