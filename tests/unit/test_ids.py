"""Request ids: UUIDv7, so the ledger's indexes on request_id grow at their end."""

from __future__ import annotations

import os
import time
import uuid

from llmgw.ids import new_request_id


def _ms(request_id: str) -> int:
    return int(request_id[:12], 16)


def test_an_id_is_a_uuid7_carrying_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    request_id = new_request_id()
    after = time.time_ns() // 1_000_000
    assert len(request_id) == 32 and request_id == request_id.lower()
    parsed = uuid.UUID(hex=request_id)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert before <= _ms(request_id) <= after


def test_ids_sort_by_when_they_were_made_and_never_repeat() -> None:
    made: list[str] = []
    start = time.time_ns() // 1_000_000
    while len(made) < 20_000 or _ms(made[-1]) < start + 3:  # spans several milliseconds
        made.append(new_request_id())
    assert len(set(made)) == len(made)
    by_text = sorted(made)
    assert [_ms(i) for i in by_text] == sorted(_ms(i) for i in made)
    assert len({_ms(i) for i in made}) >= 3


def test_a_forked_process_makes_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out
        try:
            os.write(write, "".join(new_request_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    mine = [new_request_id() for _ in range(5)]
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    theirs = [text[i:i + 32] for i in range(0, len(text), 32)]
    assert len(theirs) == 5
    # The random bits (all but the timestamp) share nothing: no common sequence.
    assert not {i[12:] for i in mine} & {i[12:] for i in theirs}


def test_an_application_seeding_random_does_not_repeat_our_ids() -> None:
    import random

    state = random.getstate()
    try:
        random.seed(7)
        first = new_request_id()
        random.seed(7)  # two worker processes seeded alike for reproducible agents
        second = new_request_id()
    finally:
        random.setstate(state)
    assert first[12:] != second[12:]
