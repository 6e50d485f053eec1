"""Coalesce: calls to one server with at most one round trip in flight; the calls made
meanwhile go together in the next round trip.

A lone call is sent at once (no added wait); under load each round trip carries every call
that arrived while the previous one was out, so the per-call cost of a client library (its
connection pool, its socket wake-ups) is paid once per batch, not once per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Coalesce(Generic[A, R]):
    """`await coalesce(arg)`: `send_many([arg, ...])[i]` for this call's `i`. If the round trip
    fails, every call of it raises that error."""

    def __init__(self, send_many: Callable[[list[A]], Awaitable[list[R]]]) -> None:
        self._send_many = send_many
        self._queued: list[tuple[A, asyncio.Future[R]]] = []
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, arg: A) -> R:
        if self._busy:
            future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            self._queued.append((arg, future))
            return await future
        self._busy = True
        try:
            return (await self._send_many([arg]))[0]
        finally:
            self._next()

    def _next(self) -> None:
        if not self._queued:
            self._busy = False
            return
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send_many([arg for arg, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its caller was cancelled; the call was made
                    future.set_result(result)
        finally:
            self._next()
