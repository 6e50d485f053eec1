"""Python's cyclic garbage collector and the heap start-up builds: freeze it, once.

Importing LiteLLM leaves ~400,000 objects that live as long as the process. The collector
walks all of them in every full collection, a stop-the-world pause of ~250 ms every few
hundred requests under load, and never frees one. `gc.freeze()` moves the objects alive now
into a generation it never walks: reference counting still frees them; only a reference
cycle among them would stay (once, bounded). Two stages per process: when the first gateway
is built, and when the first answer arrives (LiteLLM imports a provider's modules on first
use). Setting `llmgw.gc_freeze: false` leaves the collector alone.
"""

from __future__ import annotations

import gc
import threading

STARTUP = "start-up"
FIRST_ANSWER = "first answer"

_done: set[str] = set()
_lock = threading.Lock()


def freeze_once(stage: str) -> bool:
    """Collect, then freeze every object alive now; once per stage per process. True if this
    call froze."""
    with _lock:
        if stage in _done:
            return False
        _done.add(stage)
    gc.collect()  # garbage frozen now would never be collected
    gc.freeze()
    return True
