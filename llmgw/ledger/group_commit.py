"""SQLite's writes under concurrency: many requests' transactions in one commit.

SQLite has one writer, and a commit costs more than a request's statements, so both
committers run the operations queued meanwhile in one transaction, each in a savepoint (a
failing or refused one undoes only itself), and commit once. Operations that end in a
`steps.Merge` (reserve, settle) run together instead, a few statements for all of them. A
caller hears its result only after its batch has committed.

- `LoopCommit` runs a batch on the event loop, at the end of the loop pass that queued it:
  no thread hop, no waiting for the lock (it is taken with `busy_timeout=0`).
- `GroupCommit` runs batches in a thread of its own: where the lock must be waited for
  (another process is writing) and for callers on another event loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine

from llmgw.ledger.steps import Merge, Steps, run_steps

T = TypeVar("T")
Operation = Callable[[Any], Any]  # runs its statements on a DBAPI cursor, returns a result


class Merging:
    """An operation whose first step is a `Merge`: alone, a cursor callable like any other;
    in a batch, run by one `many` call with the batch's other items of the same `many`."""

    __slots__ = ("merge", "steps")

    def __init__(self, merge: Merge, steps: Steps[Any]) -> None:
        self.merge = merge
        self.steps = steps

    def __call__(self, cur: Any) -> Any:
        return run_steps(cur, self.steps, first=self.merge)

    def finish(self, result: Any) -> Any:
        """The operation's result, given its item's result."""
        if isinstance(result, Exception):
            self.steps.close()
            raise result
        try:
            self.steps.send(result)
        except StopIteration as done:
            return done.value
        self.steps.close()
        raise RuntimeError("a Merge must be its operation's last step")


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


def run_batch(cur: Any, batch: list[Operation]) -> list[tuple[Any, Exception | None]]:
    """Each operation in a savepoint of the cursor's open transaction, the `Merging` ones of
    one `many` together, where the first of them stands: (result, error) each."""
    outcomes: list[tuple[Any, Exception | None]] = [(None, None)] * len(batch)
    groups: dict[Any, list[int]] = {}
    for i, op in enumerate(batch):
        if isinstance(op, Merging):
            groups.setdefault(op.merge.many, []).append(i)
    for i, op in enumerate(batch):
        if isinstance(op, Merging):
            group = groups.pop(op.merge.many, None)
            if group is not None:  # else it ran with the first of its group
                _run_merged(cur, [batch[j] for j in group], group, outcomes)  # type: ignore[misc]
            continue
        cur.execute("SAVEPOINT op")
        try:
            outcomes[i] = (op(cur), None)
        except Exception as exc:
            cur.execute("ROLLBACK TO op")
            outcomes[i] = (None, exc)
        cur.execute("RELEASE op")
    return outcomes


def _run_merged(cur: Any, ops: list[Merging], where: list[int],
                outcomes: list[tuple[Any, Exception | None]]) -> None:
    cur.execute("SAVEPOINT op")
    try:
        results = ops[0].merge.many(cur, [op.merge.item for op in ops])
    except Exception as exc:  # `many` itself failed: none of its items stands
        cur.execute("ROLLBACK TO op")
        cur.execute("RELEASE op")
        for op, i in zip(ops, where):
            op.steps.close()
            outcomes[i] = (None, exc)
        return
    cur.execute("RELEASE op")
    for op, i, result in zip(ops, where, results):
        try:
            outcomes[i] = (op.finish(result), None)
        except Exception as exc:
            outcomes[i] = (None, exc)


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
        for (_, future), (result, error) in zip(batch, outcomes):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class LoopCommit:
    """Batches on the event loop: the operations queued during one pass of the loop run
    right after it, in one transaction on a connection of their own.

    The statements of a batch cost less than handing them to a thread and back (under load,
    ~20 requests share a commit). The lock is taken without waiting: if another process
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
        """`op`'s result once its batch committed. `alone`: the caller is the only request
        in flight, so `op` runs now, in the caller's turn (waiting a loop pass would let other
        work on the loop, such as LiteLLM's logging, run first and delay it)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            with self._lock:
                if self._loop is None or self._loop.is_closed():
                    self._loop = loop  # the last loop ended (asyncio.run, complete_sync)
            if loop is not self._loop:  # two live loops: this one uses the thread
                return await asyncio.wrap_future(self._fallback.submit(op))
        if alone and not self._pending:
            outcomes = self._commit([op])
            if outcomes is None:
                return await asyncio.wrap_future(self._fallback.submit(op))
            result, error = outcomes[0]
            if error is not None:
                raise error
            return result  # type: ignore[no-any-return]
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((op, future))
        return await future

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
        for (_, future), (result, error) in zip(batch, outcomes):
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
            done.add_done_callback(lambda d, f=future: _copy(d, f))

    def _checkpoint(self) -> None:
        with driver_transaction(self.engine) as cur:
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())
