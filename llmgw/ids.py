"""Request ids: UUIDv7 (RFC 9562), 32 hex digits that sort by creation time.

The ledger keys `reservations` and `usage_events` by request id. A random id (uuid4) lands
anywhere in those B-trees, so every insert touches another page and costs more as the ledger
grows (figures in bench/README.md). Ids that start with the time
append at the end instead. The 74 random bits come from a generator of our own, seeded from
the OS at import and again in every forked child (two gateway processes never share a
sequence, and an application's `random.seed()` does not touch it); not from `os.urandom`:
request ids are not secrets, and a system call per request cost more than the rest of this.
"""

from __future__ import annotations

import os
import random
import time

_RANDOM_BITS = 74  # 12 in rand_a, 62 in rand_b
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_random = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_random.seed)


def new_request_id() -> str:
    """A UUIDv7 as 32 lowercase hex digits: milliseconds since the epoch, then random bits."""
    rand = _random.getrandbits(_RANDOM_BITS)
    value = ((time.time_ns() // 1_000_000) << 80 | _VERSION | (rand >> 62) << 64 | _VARIANT
             | rand & ((1 << 62) - 1))
    return f"{value:032x}"
