"""A ledger transaction, written once per dialect.

An `Op` runs on a DBAPI cursor inside its caller's transaction (SQLite's committers, and any
sync caller on either database). On PostgreSQL a budget transaction is also one call of a
batch function (`Call`): `pg_async` sends the calls made while the last one was out as one
statement, one round trip and one commit for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic_core import to_json
from sqlalchemy import Engine

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One request's element (`item`) of the JSON array that `sql` takes (`%s`); `sql` returns
    one row `(index, *result)` per element, 1-based. `name` says what it does, for logs."""

    sql: str
    item: dict[str, Any]
    name: str


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """`run(cursor)`: the transaction's work, raising to undo it. PostgreSQL ops are a
    `call` and what its result row means (`then`); their `run` sends the call alone."""

    run: Callable[[Any], T]
    call: Call | None = None
    then: Callable[[Any], T] | None = None

    @classmethod
    def of_call(cls, call: Call, then: Callable[[Any], T]) -> Op[T]:
        def run(cur: Any) -> T:
            cur.execute(call.sql, (json_text([call.item]),))
            return then(cur.fetchone()[1:])
        return cls(run, call, then)


def json_text(value: Any) -> str:
    """JSON parameter text, datetimes in ISO 8601 (pydantic-core: cheaper than
    `json.dumps(default=)` for a batch of settles with their ledger rows)."""
    return to_json(value).decode()


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[Any]:
    """A DBAPI cursor in one transaction: committed if the block succeeds, else rolled back."""
    conn = engine.raw_connection()
    try:
        yield conn.cursor()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def run_sync(engine: Engine, op: Op[T]) -> T:
    """`op` in a transaction of its own, committed before this returns."""
    with driver_transaction(engine) as cur:
        return op.run(cur)
