"""Merged batches that fell back to one call each: logged and counted, never silent.

A batch of many requests' reserves, settles or row writes runs as one statement; when that
fails it runs each request's call alone, so that a bad one fails only itself. The answers
stay right either way, but a batch that keeps failing costs a round trip per request and
hides a bad input or a broken function, so each fall-back is a warning with a count.
The warning names the batch and the error's class and code only: a driver's message
can quote the parameters (prompts' metadata, ids), which stay out of logs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("llmgw.ledger")

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def fell_back(batch: str, size: int, exc: BaseException) -> None:
    """Record that `batch` (a name such as "settle_many") of `size` calls failed as one
    statement with `exc` and runs its calls one by one."""
    with _lock:
        _counts[batch] += 1
    code = getattr(exc, "sqlstate", None) or getattr(exc, "sqlite_errorname", None)
    log.warning("Ledger batch %s of %d calls failed as one statement (%s%s); running each "
                "call alone, so only a bad call fails.", batch, size, type(exc).__name__,
                f" {code}" if code else "")


def counts() -> dict[str, int]:
    """Fall-backs so far in this process, by batch name."""
    with _lock:
        return dict(_counts)
