"""Ledger transactions written once as SQL steps, run by any driver, sync or async.

A transaction is a generator. It yields a step `(sql, params, many)` and is sent back
`(rowcount, first row or None)`, or yields a batch (a list of steps) and is sent back the
list of their results. So the same budget logic runs on SQLite's cursor, in `GroupCommit`'s
batches and on psycopg's async connection, where a batch is pipelined: one round trip for
all of its statements, not one each.

`COMMIT` as the last step of a batch says the transaction may commit there, in the same
round trip: the steps yielded after it only need what came before to be durable (they may
run in a transaction of their own). SQLite runners skip it (their transaction, or their
batch's, commits when the op ends).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

Step = tuple[str, Any, bool]
StepResult = tuple[int, Any]
Steps = Generator[Step | list[Step], Any, T]
Op = Callable[[], Steps[T]]

COMMIT: Step = ("COMMIT", None, False)


def run_steps(cur: Any, steps: Steps[T]) -> T:
    """Run SQL steps on a DBAPI cursor (inside the caller's transaction)."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, list):
            result = [_run_one(cur, s) for s in step]
        else:
            result = _run_one(cur, step)


def _run_one(cur: Any, step: Step) -> StepResult:
    if step is COMMIT:
        return 0, None
    sql, params, many = step
    if many:
        cur.executemany(sql, params)
        return cur.rowcount, None
    cur.execute(sql, params)
    return cur.rowcount, cur.fetchone() if cur.description is not None else None


async def run_steps_pipelined(conn: Any, pipeline: Any, steps: Steps[T]) -> T:
    """`run_steps` on a psycopg `AsyncConnection` in pipeline mode (`pipeline` is its
    `conn.pipeline()`): each batch, or lone step, is sent at once and costs one round trip,
    its `COMMIT` included."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        batch = step if isinstance(step, list) else [step]
        cursors: list[Any] = []
        for one in batch:
            if one is COMMIT:
                cursors.append(None)
                continue
            sql, params, many = one
            cur = conn.cursor()
            if many:
                await cur.executemany(sql, params)
            else:
                await cur.execute(sql, params)
            cursors.append(cur)
        if batch[-1] is COMMIT:
            await conn.commit()  # queues COMMIT, then syncs: every result of the batch arrives
        else:
            await pipeline.sync()
        out = [(0, None) if cur is None else
               (cur.rowcount, await cur.fetchone() if cur.description is not None else None)
               for cur in cursors]
        result = out if isinstance(step, list) else out[0]
