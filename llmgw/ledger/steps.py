"""Ledger transactions written once as SQL steps, run by any driver, sync or async.

A transaction is a generator: it yields `(sql, params, many)` and is sent back
`(rowcount, first row or None)`, so the same budget logic runs on SQLite's cursor, in
`GroupCommit`'s batches and on psycopg's async cursor on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

Step = tuple[str, Any, bool]
StepResult = tuple[int, Any]
Steps = Generator[Step, StepResult, T]
Op = Callable[[], Steps[T]]


def run_steps(cur: Any, steps: Steps[T]) -> T:
    """Run SQL steps on a DBAPI cursor (inside the caller's transaction)."""
    result: StepResult | None = None
    while True:
        try:
            sql, params, many = steps.send(result)  # type: ignore[arg-type]
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if many:
            cur.executemany(sql, params)
            result = (cur.rowcount, None)
        else:
            cur.execute(sql, params)
            result = (cur.rowcount, cur.fetchone() if cur.description is not None else None)


async def run_steps_async(cur: Any, steps: Steps[T]) -> T:
    """`run_steps` on an async cursor (psycopg's `AsyncCursor`)."""
    result: StepResult | None = None
    while True:
        try:
            sql, params, many = steps.send(result)  # type: ignore[arg-type]
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if many:
            await cur.executemany(sql, params)
            result = (cur.rowcount, None)
        else:
            await cur.execute(sql, params)
            result = (cur.rowcount,
                      await cur.fetchone() if cur.description is not None else None)
