"""SQLite's writes under concurrency: many requests' transactions in one commit.

SQLite has one writer, and a commit costs more than a request's statements, so both
committers run the operations queued meanwhile in one transaction, each in a savepoint (a
failing or refused one undoes only itself), and commit once. A caller hears its result only
after its batch has committed.

- `LoopCommit` runs a batch on the event loop, at the end of the loop pass that queued it:
  no thread hop, no waiting for the lock (it is taken with `busy_timeout=0`).
- `GroupCommit` runs batches in a thread of its own: where the lock must be waited for
  (another process is writing) and for callers on another event loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from llmgw.ledger.ops import driver_transaction

T = TypeVar("T")
Operation = Callable[[Any], Any]  # runs its statements on a DBAPI cursor, returns a result


def run_batch(cur: Any, batch: list[Operation]) -> list[tuple[Any, Exception | None]]:
    """Each operation in a savepoint of the cursor's open transaction: (result, error) each;
    a failing one undoes only itself."""
    outcomes: list[tuple[Any, Exception | None]] = []
    for op in batch:
        cur.execute("SAVEPOINT op")
        try:
            outcomes.append((op(cur), None))
        except Exception as exc:
            cur.execute("ROLLBACK TO op")
            outcomes.append((None, exc))
        cur.execute("RELEASE op")
    return outcomes


class GroupCommit:
    """Batches in a writer thread, which waits for SQLite's write lock off the event loop."""

    MAX_BATCH = 64

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[tuple[Operation, Future[Any]] | None] = (
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

    def _commit(self, batch: list[tuple[Operation, Future[Any]]]) -> None:
        try:
            with driver_transaction(self.engine) as cur:
                cur.execute("BEGIN IMMEDIATE")  # the write lock now, not mid-batch
                outcomes = run_batch(cur, [op for op, _ in batch])
        except Exception as exc:  # the batch did not commit: nothing of it was written
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), (result, error) in zip(batch, outcomes, strict=True):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class LoopCommit:
    """Batches on the event loop: the operations queued during one pass of the loop run
    right after it, in one transaction on a connection of their own.

    The statements of a batch cost less than handing them to a thread and back (under load,
    many requests share a commit). The lock is taken without waiting: if another process
    holds it, the batch goes to `GroupCommit`'s thread, which waits. WAL checkpoints (file
    copies and an fsync) run through `offload`, off the loop. Bound to one loop at a time;
    callers on another live loop use the thread.
    """

    CHECKPOINT_EVERY = 256  # commits; ~a few hundred WAL pages

    def __init__(self, engine: Engine, fallback: GroupCommit,
                 offload: Callable[[Callable[[], None]], Any]) -> None:
        self.engine = engine
        self._fallback = fallback
        self._offload = offload
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._commits = 0
        self._lock = threading.Lock()  # binding to a loop; only its thread touches the rest

    async def submit(self, op: Callable[[Any], T], *, alone: bool = False) -> T:
        """`op`'s result once its batch committed (`start`)."""
        return await self.start(op, alone=alone)

    def start(self, op: Callable[[Any], T], *, alone: bool = False) -> asyncio.Future[T]:
        """Queue `op`; the future holds its result once its batch committed. The batch runs
        whether or not anyone still waits. `alone`: the caller is the only request in flight,
        so `op` runs now, in the caller's turn (waiting a loop pass would let other work on
        the loop, such as LiteLLM's logging, run first and delay it)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            with self._lock:
                if self._loop is None or self._loop.is_closed():
                    self._loop = loop  # the last loop ended (asyncio.run, complete_sync)
            if loop is not self._loop:  # two live loops: this one uses the thread
                return asyncio.wrap_future(self._fallback.submit(op))
        future: asyncio.Future[T] = loop.create_future()
        if alone and not self._pending:
            outcomes = self._commit([op])
            if outcomes is None:
                return asyncio.wrap_future(self._fallback.submit(op))
            result, error = outcomes[0]
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
            return future
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((op, future))
        return future

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.engine.raw_connection()
            conn.detach()  # its pragmas are its own: it never goes back to the pool
            cur = conn.cursor()
            cur.execute("PRAGMA busy_timeout=0")
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()
            self._conn = conn
        return self._conn

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            outcomes = self._commit([op for op, _ in batch])
        except Exception as exc:  # the batch did not commit: nothing of it was written
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if outcomes is None:
            self._to_thread(batch)
            return
        for (_, future), (result, error) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled; the work stands, as in a thread
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _commit(self, ops: list[Operation]) -> list[tuple[Any, Exception | None]] | None:
        """Run and commit `ops` as one batch; None if the write lock is not free now."""
        try:
            conn = self._connection()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
        except Exception:  # locked by another process; any other error, the thread reports
            return None
        try:
            outcomes = run_batch(cur, ops)
            conn.commit()
        except Exception:
            conn.rollback()
            raise
        self._commits += 1
        if self._commits % self.CHECKPOINT_EVERY == 0:
            try:
                self._offload(self._checkpoint)
            except RuntimeError:  # executor shut down: the batch committed all the same
                pass
        return outcomes

    def _to_thread(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        for op, future in batch:
            done = asyncio.wrap_future(self._fallback.submit(op))
            done.add_done_callback(partial(_copy, target=future))

    def _checkpoint(self) -> None:
        with driver_transaction(self.engine) as cur:
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
