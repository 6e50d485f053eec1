"""Ledger transactions written once as SQL steps, run by any driver, sync or async.

A transaction is a generator. It yields a step `(sql, params, many)` and is sent back
`(rowcount, first row or None)`, or yields a batch (a list of steps) and is sent back the
list of their results. So the same transaction runs on SQLite's cursor, in a group commit's
batches and on psycopg's async connection, where a batch is pipelined: one round trip for
all of its statements, not one each.

On SQLite a step may be a `Merge`: work that Python does on the cursor for every request of
a batch at once (SQLite's counterpart of a `Call`).

`COMMIT` as the last step of a batch says the transaction may commit there, in the same
round trip: the steps yielded after it only need what came before to be durable (they may
run in a transaction of their own). SQLite runners skip it (their transaction, or their
batch's, commits when the op ends).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic_core import to_json

T = TypeVar("T")

Step = tuple[str, Any, bool]
StepResult = tuple[int, Any]
Steps = Generator[Step | list[Step], Any, T]
Op = Callable[[], Steps[T]]

COMMIT: Step = ("COMMIT", None, False)


@dataclass(frozen=True, slots=True)
class Call:
    """A function call that runs alone as `sql(params())`, or merged with the other calls of
    the same `batch_sql` as one statement: `item` is its element of the JSON array that
    statement takes, and its result row is `(index, *what sql returns)`, 1-based.
    Yielded as `[Call, COMMIT]`; `pg_async` merges the calls queued in one loop pass."""

    sql: str
    params: Callable[[], tuple[Any, ...]]
    batch_sql: str
    item: dict[str, Any]
    name: str = "batch"  # what the batch statement does, for logs

    def step(self) -> Step:
        return self.sql, self.params(), False


@dataclass(frozen=True, slots=True)
class Merge:
    """SQLite's `Call`: `many(cursor, items)` does the work of several requests' items in one
    go (a few statements for all of them, not each one's own) and returns one result per item,
    in order: a value, or the exception that item alone failed with. A runner gives it the
    items of one batch, or a list of one. It is its operation's last step: sent its result,
    the operation returns or raises. `group_commit.run_batch` merges them."""

    many: Callable[[Any, list[Any]], list[Any]]
    item: Any


def json_text(value: Any) -> str:
    """A steps' JSON parameter as text, datetimes in ISO 8601. pydantic-core's encoder: a
    batch of settles with their ledger rows costs a third of `json.dumps(default=)`."""
    return to_json(value).decode()


def mergeable(step: Any) -> Call | None:
    """The call of a `[Call, COMMIT]` batch, else None."""
    if (isinstance(step, list) and len(step) == 2 and step[1] is COMMIT
            and isinstance(step[0], Call)):
        return step[0]
    return None


def run_steps(cur: Any, steps: Steps[T], *, first: Any = None) -> T:
    """Run SQL steps on a DBAPI cursor (inside the caller's transaction); `first`: the step
    the caller already took from `steps`."""
    result: Any = None
    while True:
        try:
            step, first = (steps.send(result) if first is None else first), None
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Merge):
            result = step.many(cur, [step.item])[0]
            if isinstance(result, Exception):
                raise result
        elif isinstance(step, list):
            result = [_run_one(cur, s.step() if isinstance(s, Call) else s) for s in step]
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


async def run_steps_async(conn: Any, steps: Steps[T], *, first: Any = None) -> T:
    """`run_steps` on a psycopg `AsyncConnection` in autocommit mode (`first`: the step the
    caller already took from `steps`).

    A batch of one statement then `COMMIT`, outside a transaction, is sent alone: its own
    transaction, one round trip (the budget functions and plain statements). Anything else
    runs in an explicit transaction, each batch pipelined: one round trip for its
    statements, the BEGIN before them and the COMMIT after them included.
    """
    result: Any = None
    open_tx = False
    while True:
        try:
            step, first = (steps.send(result) if first is None else first), None
        except StopIteration as done:
            if open_tx:
                await conn.execute("COMMIT")
            return done.value  # type: ignore[no-any-return]
        batch = step if isinstance(step, list) else [step]
        batch = [one.step() if isinstance(one, Call) else one for one in batch]
        if not open_tx and len(batch) == 2 and batch[1] is COMMIT and not batch[0][2]:
            sql, params, _ = batch[0]
            cur = await conn.execute(sql, params)
            out = [(cur.rowcount, await cur.fetchone() if cur.description else None), (0, None)]
        else:
            out = await _pipelined(conn, batch, begin=not open_tx)
            open_tx = batch[-1] is not COMMIT
        result = out if isinstance(step, list) else out[0]


async def _pipelined(conn: Any, batch: list[Step], *, begin: bool) -> list[StepResult]:
    cursors: list[Any] = []
    async with conn.pipeline() as pipeline:
        if begin:
            await conn.execute("BEGIN")
        for one in batch:
            sql, params, many = one  # COMMIT too: a plain statement here
            cur = conn.cursor()
            if many:
                await cur.executemany(sql, params)
            else:
                await cur.execute(sql, params)
            cursors.append(None if one is COMMIT else cur)
        await pipeline.sync()
    return [(0, None) if cur is None else
            (cur.rowcount, await cur.fetchone() if cur.description is not None else None)
            for cur in cursors]
