"""Coalesce: one round trip in flight; the calls made meanwhile go together in the next."""

from __future__ import annotations

import asyncio

import pytest

from llmgw.cache.coalesce import Coalesce


class Server:
    """Answers each round trip when the test releases it; records what each carried."""

    def __init__(self) -> None:
        self.trips: list[list[int]] = []
        self.release: list[asyncio.Event] = []
        self.fail_next = False

    async def send_many(self, args: list[int]) -> list[int]:
        self.trips.append(args)
        gate = asyncio.Event()
        self.release.append(gate)
        await gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("server gone")
        return [a * 10 for a in args]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_at_once_and_calls_made_meanwhile_go_together() -> None:
    server = Server()
    call = Coalesce(server.send_many)
    first = asyncio.ensure_future(call(1))
    await settle()
    assert server.trips == [[1]]  # sent without waiting for company
    rest = [asyncio.ensure_future(call(n)) for n in (2, 3, 4)]
    await settle()
    assert server.trips == [[1]]  # queued while the first is out
    server.release[0].set()
    assert await first == 10
    await settle()
    assert server.trips == [[1], [2, 3, 4]]
    server.release[1].set()
    assert await asyncio.gather(*rest) == [20, 30, 40]
    # Idle again: the next call goes alone, at once.
    last = asyncio.ensure_future(call(5))
    await settle()
    assert server.trips[-1] == [5]
    server.release[-1].set()
    assert await last == 50


async def test_a_failed_round_trip_fails_its_calls_only() -> None:
    server = Server()
    call = Coalesce(server.send_many)
    first = asyncio.ensure_future(call(1))
    await settle()
    batch = [asyncio.ensure_future(call(n)) for n in (2, 3)]
    await settle()
    server.fail_next = True
    server.release[0].set()
    with pytest.raises(ConnectionError):
        await first
    await settle()
    later = asyncio.ensure_future(call(4))
    server.release[1].set()
    assert await asyncio.gather(*batch) == [20, 30]
    await settle()
    server.release[2].set()
    assert await later == 40
    assert server.trips == [[1], [2, 3], [4]]


async def test_a_cancelled_caller_s_call_is_still_made_and_the_rest_answered() -> None:
    server = Server()
    call = Coalesce(server.send_many)
    first = asyncio.ensure_future(call(1))
    await settle()
    gone, kept = asyncio.ensure_future(call(2)), asyncio.ensure_future(call(3))
    await settle()
    gone.cancel()
    server.release[0].set()
    await first
    await settle()
    assert server.trips[1] == [2, 3]
    server.release[1].set()
    assert await kept == 30
    assert gone.cancelled()
