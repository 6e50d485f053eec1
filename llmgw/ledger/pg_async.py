"""PostgreSQL ledger calls on the event loop: psycopg's async driver, `psycopg_pool`'s pool.

Awaited on the loop, a budget call costs less CPU than through worker threads (no GIL
hand-over, no thread wake-up per statement). Each call is one element of a batch function
(`ops.Call`): the calls of one loop pass go as one statement, and `Coalesce` keeps at most
one round trip out per statement (the passes made meanwhile go together, next), so a busy
gateway pays one round trip and one commit for many requests. A batch that fails runs each
call alone, so a bad call fails only itself (`fallbacks`).

The pool gives an acquire timeout, a connection lifetime, reconnect backoff and a check of
connections that sat idle. A pool belongs to one event loop: a gateway used from a new loop
(`complete_sync`, `asyncio.run` twice) starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from psycopg import AsyncConnection, InterfaceError, OperationalError
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Engine

from llmgw.cache.coalesce import Coalesce
from llmgw.errors import LedgerError
from llmgw.ledger.fallbacks import fell_back
from llmgw.ledger.ops import Call, json_text

T = TypeVar("T")

IDLE_CHECK_AFTER_S = 5.0  # a connection idle this long is pinged before use


class AsyncPostgres:
    """The process's async PostgreSQL pool (at most `max_connections`) and its merged calls."""

    def __init__(self, engine: Engine, max_connections: int = 15, *,
                 acquire_timeout: float = 10.0, max_lifetime: float = 1800.0) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._max, self._timeout, self._lifetime = max_connections, acquire_timeout, max_lifetime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opened: asyncio.Task[None] | None = None
        # By batch statement: the calls of this loop pass with what each result means and
        # who waits for it, and the `Coalesce` that keeps one round trip out at a time.
        self._passing: dict[str, list[tuple[Call, Callable[[Any], Any], asyncio.Future[Any]]]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._calls: dict[str, Coalesce[list[Call], list[Any]]] = {}
        # When each connection was last used, so that only one that sat idle is pinged.
        self._used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()

    def start(self, call: Call, then: Callable[[Any], T], *,
              alone: bool = False) -> asyncio.Future[T]:
        """`then(call's result row)`, as a future. A caller `alone` (the only request in
        flight) sends it at once. Others wait for the end of the loop pass and go with the
        calls made in it; `Coalesce` sends the passes made while the last batch's round trip
        is out together, next. The call stands if its waiter is cancelled."""
        loop = self._bind()
        if alone:
            return loop.create_task(self._alone(call, then))
        passing = self._passing.get(call.sql)
        if passing is None:
            passing = self._passing[call.sql] = []
            task = loop.create_task(self._send_pass(call.sql))
            self._sending.add(task)  # a reference until it has run
            task.add_done_callback(self._sending.discard)
        future: asyncio.Future[T] = loop.create_future()
        passing.append((call, then, future))
        return future

    async def _alone(self, call: Call, then: Callable[[Any], T]) -> T:
        result = (await self.send([call]))[0]
        if isinstance(result, Exception):
            raise result
        return then(result)

    async def _send_pass(self, sql: str) -> None:
        waiting = self._passing.pop(sql)  # a task's first step: the loop pass has ended
        try:
            results = await self._coalesce(sql)([call for call, _, _ in waiting])
        except BaseException as exc:
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, then, future), result in zip(waiting, results, strict=True):
            if future.done():  # its waiter was cancelled; the call was made
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
                continue
            try:
                future.set_result(then(result))
            except Exception as exc:  # what the row means: a refusal, say
                future.set_exception(exc)

    def _coalesce(self, sql: str) -> Coalesce[list[Call], list[Any]]:
        coalesce = self._calls.get(sql)
        if coalesce is None:
            coalesce = self._calls[sql] = Coalesce(self._send_passes)
        return coalesce

    async def _send_passes(self, passes: list[list[Call]]) -> list[list[Any]]:
        results = iter(await self.send([call for calls in passes for call in calls]))
        return [[next(results) for _ in calls] for calls in passes]

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit (`conn.transaction()` for more than a statement);
        `LedgerError` if none is free within the acquire timeout."""
        self._bind()
        assert self._pool is not None and self._opened is not None
        if not self._opened.done():
            await asyncio.shield(self._opened)
        try:
            async with self._pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._used[conn] = time.monotonic()
        except PoolTimeout as exc:
            raise LedgerError(
                f"No ledger connection was free within {self._timeout:g} s ({exc}).",
                hint="Check that the PostgreSQL server is reachable and not overloaded; "
                     "`max_connections` of the ledger bounds the connections in use.") from exc

    async def send(self, calls: list[Call]) -> list[Any]:
        """One statement for `calls`; if it fails (it changed nothing), each call alone, in
        order: its row, or the exception it failed with."""
        if len(calls) > 1:
            try:
                return [row[1:] for row in sorted(await self._fetch(calls))]
            except Exception as exc:  # a bad call, most likely
                fell_back(calls[0].name, len(calls), exc)
        results: list[Any] = []
        for call in calls:
            try:
                results.append((await self._fetch([call]))[0][1:])
            except Exception as exc:
                results.append(exc)
        return results

    async def _fetch(self, calls: list[Call]) -> list[Any]:
        try:
            async with self.connection() as conn:
                cur = await conn.execute(calls[0].sql, (json_text([c.item for c in calls]),))
                return await cur.fetchall()
        except (OperationalError, InterfaceError) as exc:  # the server went away (a restart)
            raise LedgerError(
                f"The ledger database was unreachable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}).",
                hint="Check that PostgreSQL is up; the pool reconnects by itself, and "
                     "`llmgw db reconcile` settles what a failed request left open.") from exc

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, with a pool of its own: what another loop left cannot be
        awaited here."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._pool is None:
            self.forget()
            self._loop, self._calls, self._passing = loop, {}, {}
            self._pool = AsyncConnectionPool(
                self._conninfo, min_size=0, max_size=self._max, timeout=self._timeout,
                max_lifetime=self._lifetime, open=False, configure=self._fresh,
                check=self._check_idle, kwargs={"autocommit": True, "connect_timeout": 10})
            self._opened = loop.create_task(self._pool.open())
        return loop

    async def _fresh(self, conn: Any) -> None:
        self._used[conn] = time.monotonic()

    async def _check_idle(self, conn: Any) -> None:
        """Ping a connection that sat idle (the server or a proxy may have dropped it); a busy
        one is alive, and a ping per use would be a round trip per call."""
        if time.monotonic() - self._used.get(conn, 0.0) >= IDLE_CHECK_AFTER_S:
            await conn.execute("")

    def forget(self) -> None:
        """Close the pool: on its loop if that loop is running here, else its connections
        close as they are collected (their loop has ended)."""
        pool, self._pool, loop = self._pool, None, self._loop
        if pool is None:
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                task = loop.create_task(pool.close())
                self._closing.add(task)  # a reference until it has run
                task.add_done_callback(self._closing.discard)
