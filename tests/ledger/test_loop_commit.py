"""LoopCommit: SQLite batches on the event loop, the writer thread when the lock is taken."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from llmgw.ledger.engine import make_engine
from llmgw.ledger.group_commit import GroupCommit, LoopCommit


@pytest.fixture
def db(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    thread = GroupCommit(engine)
    offloaded: list = []
    loop_commit = LoopCommit(engine, thread, offload=offloaded.append)
    yield engine, loop_commit, offloaded, tmp_path / "l.db"
    loop_commit.close()
    thread.close()
    engine.dispose()


def values(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT v FROM t ORDER BY v"))]


def insert(v: int):
    def op(cur) -> tuple[int, int]:
        cur.execute("INSERT INTO t (v) VALUES (?)", (v,))
        return v, id(cur)
    return op


async def test_one_loop_pass_shares_a_commit_and_a_failure_undoes_only_itself(db) -> None:
    engine, loop_commit, _, _ = db

    def half_then_fail(cur) -> None:
        cur.execute("INSERT INTO t (v) VALUES (99)")
        raise ValueError("refused")

    one, bad, two = await asyncio.gather(loop_commit.submit(insert(1)),
                                         loop_commit.submit(half_then_fail),
                                         loop_commit.submit(insert(2)), return_exceptions=True)
    assert isinstance(bad, ValueError)
    assert (one[0], two[0]) == (1, 2)
    assert one[1] == two[1]  # one cursor: the same transaction and commit
    assert values(engine) == [1, 2]  # 99 was rolled back with its savepoint
    assert loop_commit._fallback._thread is None  # no thread was needed


async def test_a_request_alone_commits_in_its_own_turn_others_after_the_loop_pass(db) -> None:
    engine, loop_commit, _, _ = db
    order: list[str] = []
    loop = asyncio.get_running_loop()
    loop.call_soon(order.append, "other work")
    await loop_commit.submit(lambda cur: order.append("alone"), alone=True)
    loop.call_soon(order.append, "more work")
    await loop_commit.submit(lambda cur: order.append("batched"))
    assert order == ["alone", "other work", "more work", "batched"]


@pytest.mark.parametrize("alone", [False, True])
async def test_a_lock_held_by_another_process_sends_the_batch_to_the_thread(db, alone) -> None:
    engine, loop_commit, _, path = db
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer
    other.execute("BEGIN IMMEDIATE")
    try:
        task = asyncio.ensure_future(loop_commit.submit(insert(7), alone=alone))
        for _ in range(3):  # the loop runs on: the flush did not wait for the lock
            await asyncio.sleep(0)
        assert not task.done()
        assert loop_commit._fallback._thread is not None  # the batch went to the thread
    finally:
        other.execute("COMMIT")
        other.close()
    assert (await task)[0] == 7
    assert values(engine) == [7]
    assert (await loop_commit.submit(insert(8)))[0] == 8  # the loop commits again


def test_a_new_loop_after_the_last_one_ended_commits_on_the_loop(db) -> None:
    engine, loop_commit, _, _ = db
    first = asyncio.run(loop_commit.submit(insert(1)))
    second = asyncio.run(loop_commit.submit(insert(2)))  # as complete_sync does, twice
    assert (first[0], second[0]) == (1, 2)
    assert loop_commit._fallback._thread is None  # both on their loop, no thread
    assert values(engine) == [1, 2]


async def test_a_second_live_loop_uses_the_thread(db) -> None:
    engine, loop_commit, _, _ = db
    assert (await loop_commit.submit(insert(1)))[0] == 1  # this loop holds the binding
    out: list = []
    worker = threading.Thread(target=lambda: out.append(asyncio.run(
        loop_commit.submit(insert(2)))))
    worker.start()
    await asyncio.to_thread(worker.join)
    assert out and out[0][0] == 2
    assert loop_commit._fallback._thread is not None
    assert values(engine) == [1, 2]


async def test_checkpoints_run_through_offload_and_move_the_wal_into_the_database(db) -> None:
    engine, loop_commit, offloaded, path = db
    loop_commit.CHECKPOINT_EVERY = 3
    size_before = path.stat().st_size

    def big(cur) -> None:  # more WAL pages than SQLite's auto-checkpoint threshold (1000)
        cur.execute("CREATE TABLE IF NOT EXISTS b (x BLOB)")
        cur.executemany("INSERT INTO b (x) VALUES (zeroblob(4000))", [()] * 1100)

    await loop_commit.submit(big)
    for v in range(6):
        await loop_commit.submit(insert(v))
    assert len(offloaded) == 2  # after commits 3 and 6, never on the loop itself
    assert path.stat().st_size == size_before  # the loop's connection never checkpointed
    offloaded[-1]()
    assert path.stat().st_size > 1100 * 4000
    assert values(engine) == list(range(6))


async def test_a_refused_checkpoint_does_not_fail_a_committed_batch(db) -> None:
    engine, loop_commit, _, _ = db
    loop_commit.CHECKPOINT_EVERY = 1

    def refuse(job) -> None:  # as a shut-down executor's submit does
        raise RuntimeError("cannot schedule new futures after shutdown")

    loop_commit._offload = refuse
    assert (await loop_commit.submit(insert(1), alone=True))[0] == 1
    assert (await loop_commit.submit(insert(2)))[0] == 2
    assert values(engine) == [1, 2]
