"""AsyncPostgres: the ledger's PostgreSQL pool (`psycopg_pool`) on the event loop."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

import llmgw.ledger.pg_async as pg_async
from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine
from llmgw.ledger.pg_async import AsyncPostgres

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
    """Pools on the test table's database, all closed after the test."""
    pools: list[AsyncPostgres] = []

    def make(max_connections: int, **options) -> AsyncPostgres:
        pools.append(AsyncPostgres(engine, max_connections=max_connections, **options))
        return pools[-1]

    yield make
    for pool in pools:
        pool.forget()


async def insert(pool: AsyncPostgres, v: int) -> int:
    """Insert `v`; the server process that did it."""
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO t (v) VALUES (%s)", (v,))
        return (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]


def values(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT v FROM t ORDER BY v"))]


async def test_more_callers_than_connections_are_all_served(engine, make_pool):
    pool = make_pool(3)
    pids = await asyncio.gather(*(insert(pool, i) for i in range(40)))
    assert values(engine) == list(range(40))
    assert len(set(pids)) <= 3  # max_connections


async def test_a_caller_gets_no_connection_after_the_acquire_timeout(engine, make_pool):
    pool = make_pool(1, acquire_timeout=0.2)
    release = asyncio.Event()

    async def hold_the_only_connection() -> None:
        async with pool.connection():
            await release.wait()

    holder = asyncio.ensure_future(hold_the_only_connection())
    await asyncio.sleep(0)
    with pytest.raises(LedgerError, match="No ledger connection was free within 0.2 s") as info:
        await insert(pool, 1)
    assert "PostgreSQL server is reachable" in (info.value.hint or "")
    release.set()
    await holder
    await insert(pool, 2)  # the connection is back
    assert values(engine) == [2]


async def test_a_failing_transaction_rolls_back_and_its_connection_is_reused(engine, make_pool):
    pool = make_pool(1)
    with pytest.raises(Exception, match="no_such_table"):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO t (v) VALUES (99)")
            await conn.execute("SELECT * FROM no_such_table")
    await insert(pool, 1)
    assert values(engine) == [1]


async def test_a_connection_the_server_dropped_is_replaced(engine, monkeypatch, make_pool):
    pool = make_pool(1)
    pid = await insert(pool, 1)
    with engine.connect() as conn:  # the server (or a proxy) drops the idle connection
        assert conn.execute(text(f"SELECT pg_terminate_backend({pid})")).scalar()
    monkeypatch.setattr(pg_async, "IDLE_CHECK_AFTER_S", 0.0)  # it has sat idle long enough
    assert await insert(pool, 2) != pid
    assert values(engine) == [1, 2]


async def test_a_cancelled_statement_frees_its_connection(engine, make_pool):
    pool = make_pool(1)
    started = asyncio.Event()

    async def slow() -> None:
        async with pool.connection() as conn:
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.ensure_future(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*(insert(pool, i) for i in range(3)))
    assert values(engine) == [0, 1, 2]


def test_a_new_event_loop_gets_a_new_pool(engine, make_pool):
    pool = make_pool(3)
    asyncio.run(insert(pool, 1))
    asyncio.run(insert(pool, 2))  # complete_sync: a new loop per call
    assert values(engine) == [1, 2]
