"""LedgerStore: writes usage events, one transaction per request (batched under load)."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.types import TypeEngine

from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine, sqlite_path
from llmgw.ledger.group_commit import GroupCommit, LoopCommit
from llmgw.ledger.models import USAGE_COLUMNS, UsageEvent
from llmgw.ledger.ops import Call, Op, run_sync
from llmgw.ledger.pg_async import AsyncPostgres
from llmgw.ledger.timespec import utcnow  # noqa: F401  (the ledger's clock, re-exported)
from llmgw.pipeline.context import RequestContext
from llmgw.types import Attempt

T = TypeVar("T")

# Columns of migrations 0013 and 0015 that a row may leave out (a writer older than them):
# written as these values, as the database's defaults would.
OPTIONAL_USAGE: dict[str, Any] = {
    "session_id": None, "end_user": None, "requested_model": None, "dialect": None,
    "cache_write_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "rates": None}


def _pg_value(column: str) -> str:
    default = OPTIONAL_USAGE.get(column)
    return f"COALESCE(u.{column}, {default})" if default is not None else f"u.{column}"


# PostgreSQL: the rows of many requests' writes as one statement (one JSON array, an element
# per request, one result row each), as the budget functions take a batch's settles.
_PG_INSERT_ROWS = (
    "WITH t AS (SELECT e, n FROM json_array_elements(%s::json) WITH ORDINALITY AS t(e, n)), "
    f"ins AS (INSERT INTO usage_events ({', '.join(USAGE_COLUMNS)}) "
    f"SELECT {', '.join(_pg_value(c) for c in USAGE_COLUMNS)} FROM t, "
    "json_populate_recordset(NULL::usage_events, t.e->'rows') WITH ORDINALITY AS u "
    "ORDER BY t.n, u.ordinality) "
    "SELECT n FROM t ORDER BY n")


def usage_row(ctx: RequestContext, attempt: Attempt, *, ts: datetime, saved_micros: int = 0,
              metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `usage_events` row for one attempt of a request."""
    return {
        "request_id": ctx.request_id,
        "attempt": attempt.attempt,
        "ts": ts,
        "agent_id": ctx.agent_id,
        "agent_type": ctx.agent_type,
        "project_id": ctx.project_id,
        "model_group": attempt.model_group,
        "deployment_id": attempt.deployment,
        "provider": attempt.provider,
        "model": attempt.model,
        "status": attempt.status,
        "error_class": attempt.error_class,
        "error_message": attempt.error_message,
        "prompt_tokens": attempt.usage.prompt_tokens,
        "completion_tokens": attempt.usage.completion_tokens,
        "cache_read_tokens": attempt.usage.cached_tokens,
        "cost_micros": attempt.cost_micros,
        "saved_micros": saved_micros,
        "latency_ms": attempt.latency_ms,
        "stream": ctx.stream,
        "session_id": ctx.session_id,
        "end_user": ctx.end_user,
        "requested_model": ctx.requested_model,
        "dialect": ctx.dialect,
        "cache_write_tokens": attempt.usage.cache_write_tokens,
        "cache_write_1h_tokens": attempt.usage.cache_write_1h_tokens,
        "reasoning_tokens": attempt.usage.reasoning_tokens,
        # The rates it was priced at (Attempt.rates; absent on an older Attempt).
        "rates": _rates(getattr(attempt, "rates", None)),
        "metadata": ({**(metadata or {}), "provider_details": attempt.provider_details}
                     if attempt.provider_details else metadata or None),
    }


def _rates(rates: Any) -> dict[str, str] | None:
    """The rates as the ledger keeps them: decimal strings by kind (a Decimal becomes its
    exact text), or None."""
    if not rates:
        return None
    return {str(kind): str(rate) for kind, rate in dict(rates).items()}


def bind_processor(type_: TypeEngine[Any], engine: Engine) -> Callable[[Any], Any] | None:
    """How the engine's dialect converts a Python value for this column type: exactly what
    Core sends, so driver-level writes store the same text (SQLite compares datetimes as
    strings: '...00:00:00' and '...00:00:00.000000' are different keys)."""
    return type_.dialect_impl(engine.dialect).bind_processor(engine.dialect)


def driver_sql(sql: str, engine: Engine) -> str:
    """Driver SQL written with `?` placeholders, in the engine's driver's style."""
    return sql if engine.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


class UsageInsert:
    """`INSERT INTO usage_events` for a driver cursor, values converted exactly as Core
    converts them."""

    def __init__(self, engine: Engine, columns: tuple[str, ...] = USAGE_COLUMNS) -> None:
        # `columns`: fewer only for a ledger at an older revision (tests of migrations).
        self._columns = columns
        # A column the model no longer has (an older revision's `cached_tokens`): as it is.
        model = UsageEvent.__table__.c
        processors = [bind_processor(model[name].type, engine) if name in model else None
                      for name in columns]
        self._values = operator.itemgetter(*columns)
        # Only a few columns need converting (times, JSON, flags): the rest go as they are.
        self._convert = [(i, proc) for i, proc in enumerate(processors) if proc]
        self.sql = driver_sql(f"INSERT INTO usage_events ({', '.join(columns)}) "
                              f"VALUES ({', '.join('?' for _ in columns)})", engine)

    def params(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return list(self.each(rows))

    def each(self, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
        """Each row's parameters, made as the driver takes them (an `executemany` of many
        requests' rows holds one at a time)."""
        values, convert = self._values, self._convert
        for row in rows:
            try:
                params = list(values(row))
            except KeyError:  # a row without 0013's or 0015's columns; any other key is required
                params = [row.get(c, OPTIONAL_USAGE[c]) if c in OPTIONAL_USAGE else row[c]
                          for c in self._columns]
            for i, proc in convert:
                params[i] = proc(params[i])
            yield tuple(params)


class LedgerStore:
    """The SQL cost ledger (SQLite by default, PostgreSQL for many processes).

    Rows are written before `complete()` returns, so the write sits on every request's path.
    It is a driver-level `executemany` with SQLAlchemy's own bind processors (the values are
    stored exactly as Core would store them, for less than Core's compiled statements cost).
    `transact` places each transaction: see there.
    """

    def __init__(self, url: str, *, engine: Engine | None = None,
                 max_connections: int = 15) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.local = self.engine.dialect.name == "sqlite"
        self._usage = UsageInsert(self.engine)
        self._executor = ThreadPoolExecutor(thread_name_prefix="llmgw-ledger")
        # PostgreSQL: calls on the event loop (psycopg async), no thread hop per statement.
        self._pg = (AsyncPostgres(self.engine, max_connections)
                    if self.engine.dialect.name == "postgresql" else None)
        # SQLite file: batches on the loop, the thread where the lock must be waited for.
        # In-memory SQLite lives in one connection: each transaction runs on its own.
        self._thread_commit = self._loop_commit = None
        if self.local and sqlite_path(self.engine.url) is not None:
            self._thread_commit = GroupCommit(self.engine)
            self._loop_commit = LoopCommit(self.engine, self._thread_commit,
                                           offload=self._executor.submit)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking database work (reads, the CLI's calls) in a worker thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))
        except DBAPIError as exc:
            raise _typed(exc) from exc

    async def transact(self, op: Op[T], *, alone: bool = False) -> T:
        """Run `op` in a transaction of its own, or of its batch, committed before this
        returns. PostgreSQL: its call on the event loop, with the calls of other requests
        made while the last one was out (`pg_async`). SQLite file: `LoopCommit`, one commit
        for the requests of a loop pass, or right away when the caller is `alone` (the only
        request in flight)."""
        if self._pg is not None:
            if op.call is None or op.then is None:  # not a call: a worker thread
                return await self.run(run_sync, self.engine, op)
            return await self._pg.start(op.call, op.then, alone=alone)
        if self._loop_commit is None:  # in-memory SQLite
            return run_sync(self.engine, op)
        return await self._loop_commit.submit(op.run, alone=alone)

    def start(self, op: Op[T], *, alone: bool = False) -> asyncio.Future[T]:
        """`transact` already under way: the future holds its result once committed, and
        the transaction runs to its end whether or not anyone still waits for it (SQLite
        file and PostgreSQL: no task of its own, its batch's future)."""
        if self._loop_commit is not None:
            return self._loop_commit.start(op.run, alone=alone)
        if self._pg is not None and op.call is not None and op.then is not None:
            return self._pg.start(op.call, op.then, alone=alone)
        return asyncio.ensure_future(self.transact(op, alone=alone))

    def transact_sync(self, op: Op[T]) -> T:
        return run_sync(self.engine, op)

    def write_op(self, rows: list[dict[str, Any]]) -> Op[None]:
        """The insert of one request's rows. PostgreSQL: a `Call`, so the writes made while
        the last one was out go as one statement."""
        if self._pg is not None:
            return Op.of_call(Call(_PG_INSERT_ROWS, {"rows": rows}, "insert_rows"),
                              lambda _row: None)

        def run(cur: Any) -> None:
            cur.executemany(self._usage.sql, self._usage.params(rows))
        return Op(run)

    def write_sync(self, rows: list[dict[str, Any]]) -> None:
        """Insert all rows of one request in one transaction."""
        if not rows:
            return
        try:
            self.transact_sync(self.write_op(rows))
        except Exception as exc:
            raise write_failed(len(rows), exc) from exc

    async def write(self, rows: list[dict[str, Any]], *, alone: bool = False) -> None:
        if not rows:
            return
        try:
            await self.transact(self.write_op(rows), alone=alone)
        except Exception as exc:
            raise write_failed(len(rows), exc) from exc

    def dispose(self) -> None:
        if self._loop_commit is not None:
            self._loop_commit.close()
        if self._thread_commit is not None:
            self._thread_commit.close()
        if self._pg is not None:
            self._pg.forget()
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def write_failed(count: int, exc: BaseException) -> LedgerError:
    return LedgerError(
        f"Could not write {count} usage row(s) to the ledger: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:300]}",
        hint="Check that the database is reachable and migrated (`llmgw db upgrade`).")


def _typed(exc: DBAPIError) -> LedgerError:
    """A driver's error as the ledger's: the server gone (a restart) or a statement refused
    (a schema behind the code), each with what to do."""
    cause = f"{type(exc.orig).__name__}: {str(exc.orig).splitlines()[0][:200] if exc.orig else ''}"
    if isinstance(exc, SAOperationalError | SAInterfaceError) or exc.connection_invalidated:
        return LedgerError(f"The ledger database was unreachable ({cause}).",
                           hint="Check that the ledger database is up; retry shortly.")
    return LedgerError(f"The ledger database refused a statement ({cause}).",
                       hint="Check the ledger's schema: `llmgw db upgrade` brings it current.")
