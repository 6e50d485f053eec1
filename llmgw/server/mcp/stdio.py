"""stdin for `llmgw mcp` that the event loop waits on, not a thread.

The SDK reads stdin in a worker thread; a thread blocked in `read()` cannot be cancelled, so
a SIGTERM while the client holds stdin open would never let the server stop (nor its calls in
flight settle). Here fd 0 is polled by the loop (`add_reader`), so cancelling the server
stops the reader at once. As the SDK does, fd 0 points at /dev/null while we serve, so
nothing else in the process reads the wire.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

_CHUNK = 64 * 1024


class StdinLines:
    """Lines of a non-blocking descriptor, as `async for line in ...` (UTF-8 text)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._eof = False

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 or (self._eof and self._buffer):
                cut = end + 1 if end >= 0 else len(self._buffer)
                line = bytes(self._buffer[:cut])
                del self._buffer[:cut]
                return line.decode("utf-8", errors="replace")
            if self._eof:
                raise StopAsyncIteration
            await self._readable()
            try:
                chunk = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)


@asynccontextmanager
async def stdin_lines() -> AsyncIterator[StdinLines | None]:
    """fd 0 as `StdinLines`, or None when the loop cannot poll it (a regular file: its reads
    never wait, so the SDK's own reader serves it)."""
    private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    loop = asyncio.get_running_loop()
    try:
        loop.add_reader(private, lambda: None)
    except (OSError, ValueError, NotImplementedError):
        os.close(private)
        yield None
        return
    loop.remove_reader(private)
    was_blocking = os.get_blocking(private)
    os.set_blocking(private, False)  # shared with fd 0's open file: restored on exit
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        yield StdinLines(private)
    finally:
        with suppress(OSError):
            os.set_blocking(private, was_blocking)
            os.dup2(private, 0)
        os.close(private)
