"""LedgerStore: writes usage events, one transaction per request (batched under load)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.types import TypeEngine

from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine, sqlite_path
from llmgw.ledger.models import USAGE_COLUMNS, UsageEvent
from llmgw.ledger.timespec import utcnow  # noqa: F401  (the ledger's clock, re-exported)
from llmgw.ledger.pg_async import AsyncPostgres
from llmgw.ledger.steps import COMMIT, Op, Steps, run_steps
from llmgw.types import Attempt

T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked and for which group: the same on every row of one request."""

    request_id: str
    agent_id: str
    agent_type: str | None
    project_id: str
    stream: bool = False


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
        "cached_tokens": attempt.usage.cached_tokens,
        "cost_micros": attempt.cost_micros,
        "saved_micros": saved_micros,
        "latency_ms": attempt.latency_ms,
        "stream": ctx.stream,
        "metadata": ({**(metadata or {}), "provider_details": attempt.provider_details}
                     if attempt.provider_details else metadata or None),
    }


def bind_processor(type_: TypeEngine[Any], engine: Engine) -> Callable[[Any], Any] | None:
    """How the engine's dialect converts a Python value for this column type: exactly what
    Core sends, so driver-level writes store the same text (SQLite compares datetimes as
    strings: '...00:00:00' and '...00:00:00.000000' are different keys)."""
    return type_.dialect_impl(engine.dialect).bind_processor(engine.dialect)


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


def driver_sql(sql: str, engine: Engine) -> str:
    """Driver SQL written with `?` placeholders, in the engine's driver's style."""
    return sql if engine.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


class UsageInsert:
    """`INSERT INTO usage_events` for a driver cursor, values converted exactly as Core
    converts them."""

    def __init__(self, engine: Engine) -> None:
        self._names = USAGE_COLUMNS
        self._processors = [bind_processor(UsageEvent.__table__.c[name].type, engine)
                            for name in USAGE_COLUMNS]
        self.sql = driver_sql(f"INSERT INTO usage_events ({', '.join(USAGE_COLUMNS)}) "
                              f"VALUES ({', '.join('?' for _ in USAGE_COLUMNS)})", engine)

    def params(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple(proc(row[name]) if proc else row[name]
                      for name, proc in zip(self._names, self._processors)) for row in rows]


class LedgerStore:
    """The SQL cost ledger (SQLite by default, PostgreSQL for many processes).

    Rows are written before `complete()` returns, so the write sits on every request's path.
    It is a driver-level `executemany` with SQLAlchemy's own bind processors (the values are
    stored exactly as Core would store them, at a third of Core's cost). `transact` places
    each transaction: see there.
    """

    def __init__(self, url: str, *, engine: Engine | None = None,
                 max_connections: int = 15) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.local = self.engine.dialect.name == "sqlite"
        self._usage = UsageInsert(self.engine)
        self._executor = ThreadPoolExecutor(thread_name_prefix="llmgw-ledger")
        # PostgreSQL: transactions on the event loop (psycopg async), no thread hop per
        # statement: half the CPU of the same SQL through worker threads.
        self._pg = (AsyncPostgres(self.engine, max_connections)
                    if self.engine.dialect.name == "postgresql" else None)
        # In-memory SQLite lives in one connection: its work stays on the loop's thread.
        self._memory = self.local and sqlite_path(self.engine.url) is None
        self._batcher = GroupCommit(self.engine) if self.local and not self._memory else None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking database work (reads, the CLI's calls) in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def transact(self, op: Op[T], *, inline: bool = False) -> T:
        """Run `op`'s SQL steps in a transaction of its own, or of its batch, committed
        before this returns. PostgreSQL: psycopg's async driver on the event loop. SQLite:
        `inline` when the caller is alone (a local WAL commit, ~0.1 ms, is cheaper than a
        thread hop); under concurrency, `GroupCommit` (one commit for many requests)."""
        if self._pg is not None:
            return await self._pg.transact(op)
        if self._batcher is None or inline:  # in-memory SQLite, or a request alone
            return self.transact_sync(op)
        return await asyncio.wrap_future(self._batcher.submit(lambda cur: run_steps(cur, op())))

    def transact_sync(self, op: Op[T]) -> T:
        with driver_transaction(self.engine) as cur:
            return run_steps(cur, op())

    def write_op(self, rows: list[dict[str, Any]]) -> Op[None]:
        """The insert of one request's rows, as SQL steps."""
        def steps() -> Steps[None]:
            params = self._usage.params(rows)
            # One row (the usual case) as a plain statement: on PostgreSQL, one round trip.
            yield [(self._usage.sql, params[0], False) if len(params) == 1 else
                   (self._usage.sql, params, True), COMMIT]
        return steps

    def write_sync(self, rows: list[dict[str, Any]]) -> None:
        """Insert all rows of one request in one transaction."""
        if not rows:
            return
        try:
            self.transact_sync(self.write_op(rows))
        except Exception as exc:
            raise _write_failed(len(rows), exc) from exc

    async def write(self, rows: list[dict[str, Any]], *, inline: bool = False) -> None:
        if not rows:
            return
        try:
            await self.transact(self.write_op(rows), inline=inline)
        except Exception as exc:
            raise _write_failed(len(rows), exc) from exc

    def dispose(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        if self._pg is not None:
            self._pg.forget()
        self._executor.shutdown(wait=True)
        self.engine.dispose()


class GroupCommit:
    """SQLite's writes under concurrency: one thread runs the operations queued meanwhile in
    one transaction, each in a savepoint (a failing or refused one undoes only itself), then
    commits once. SQLite has one writer anyway; this makes it pay one commit per batch, not
    per request. Every operation's future resolves only after its batch has committed."""

    MAX_BATCH = 64

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, op: Callable[[Any], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llmgw-group-commit",
                                                daemon=True)
                self._thread.start()
        self._queue.put((op, future))
        return future

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[Any], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with driver_transaction(self.engine) as cur:
                cur.execute("BEGIN IMMEDIATE")  # the write lock now, not mid-batch
                for op, future in batch:
                    cur.execute("SAVEPOINT op")
                    try:
                        outcomes.append((future, op(cur), None))
                    except Exception as exc:
                        cur.execute("ROLLBACK TO op")
                        outcomes.append((future, None, exc))
                    cur.execute("RELEASE op")
        except Exception as exc:  # the batch did not commit: nothing of it was written
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _write_failed(count: int, exc: BaseException) -> LedgerError:
    return LedgerError(
        f"Could not write {count} usage row(s) to the ledger: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:300]}",
        hint="Check that the database is reachable and migrated (`llmgw db upgrade`).")
