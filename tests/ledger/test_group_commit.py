"""GroupCommit: many requests' SQLite transactions in one commit, each isolated by a savepoint
(or merged with the others of its kind: `Merging`)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from llmgw.ledger.engine import make_engine
from llmgw.ledger.group_commit import GroupCommit, Merging, driver_transaction, run_batch
from llmgw.ledger.steps import Merge


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


def merging(many, item, then=lambda result: result):
    """A `Merging` operation: its one step is a Merge of `item`, then it returns `then(...)`."""
    def steps():
        result = yield Merge(many, item)
        return then(result)
    gen = steps()
    return Merging(next(gen), gen)


def test_a_batch_runs_the_merges_of_one_many_in_one_call_where_the_first_stood(engine) -> None:
    calls: list[list[int]] = []

    def many(cur, items):
        calls.append(list(items))
        cur.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in items])
        return [v * 10 if v != 3 else ValueError("three fails alone") for v in items]

    with driver_transaction(engine) as cur:
        outcomes = run_batch(cur, [insert(1), merging(many, 2), insert(5), merging(many, 3),
                                   merging(many, 4, then=lambda r: r + 1)])
    assert calls == [[2, 3, 4]]  # one call, the items in batch order
    assert [o[0] for o in outcomes] == [1, 20, 5, None, 41]
    assert isinstance(outcomes[3][1], ValueError)
    assert values(engine) == [1, 2, 3, 4, 5]  # `many` decides what its failures undo


def test_a_merge_that_fails_as_a_whole_leaves_nothing_of_its_items(engine) -> None:
    def many(cur, items):
        cur.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in items])
        raise RuntimeError("disk on fire")

    with driver_transaction(engine) as cur:
        outcomes = run_batch(cur, [merging(many, 7), insert(8), merging(many, 9)])
    assert [type(o[1]) for o in outcomes] == [RuntimeError, type(None), RuntimeError]
    assert values(engine) == [8]


def test_a_merge_alone_runs_as_a_batch_of_one(engine) -> None:
    with driver_transaction(engine) as cur:
        assert merging(lambda cur, items: [len(items)], "x", then=lambda r: ("ran", r))(cur) == (
            "ran", 1)
