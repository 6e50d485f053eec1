"""GroupCommit: many requests' SQLite transactions in one commit, each isolated by a
savepoint."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from llmgw.ledger.engine import make_engine
from llmgw.ledger.group_commit import GroupCommit


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    yield engine
    engine.dispose()


def values(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT v FROM t ORDER BY v"))]


def insert(v: int):
    return lambda cur: cur.execute("INSERT INTO t (v) VALUES (?)", (v,)) and v


def test_a_failing_operation_undoes_only_itself_and_the_rest_commit_together(engine) -> None:
    group = GroupCommit(engine)
    gate, started = threading.Event(), threading.Event()

    def hold_the_writer(cur) -> str:
        started.set()
        gate.wait(5)
        return "first"

    def half_then_fail(cur) -> None:
        cur.execute("INSERT INTO t (v) VALUES (99)")
        raise ValueError("refused")

    try:
        first = group.submit(hold_the_writer)
        assert started.wait(5)
        # Queued while the writer is busy: these three share the next batch and its commit.
        a, bad, b = group.submit(insert(1)), group.submit(half_then_fail), group.submit(insert(2))
        gate.set()
        assert first.result(5) == "first" and (a.result(5), b.result(5)) == (1, 2)
        with pytest.raises(ValueError, match="refused"):
            bad.result(5)
        assert values(engine) == [1, 2]  # 99 was rolled back with its savepoint
    finally:
        group.close()


def test_an_operations_database_error_reaches_its_caller_and_the_writer_goes_on(engine) -> None:
    group = GroupCommit(engine)
    try:
        ok = group.submit(insert(5))
        assert ok.result(5) == 5
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE t"))
        missing = group.submit(insert(6))
        with pytest.raises(Exception, match="no such table"):
            missing.result(5)
        assert group.submit(lambda cur: "still serving").result(5) == "still serving"
    finally:
        group.close()
    group.close()  # idempotent
