"""Python's cyclic garbage collector and the heap start-up builds: freeze it, once.

Importing LiteLLM leaves a few hundred thousand objects that live as long as the process. The
collector walks all of them in every full collection, a stop-the-world pause under load, and
never frees one. `gc.freeze()` moves the objects alive now
into a generation it never walks: reference counting still frees them; only a reference
cycle among them would stay (once, bounded). Two stages per process: when the first gateway
is built, and when the first answer arrives (LiteLLM imports a provider's modules on first
use).

A library does not tune its host's collector: by default only llmgw's own processes
(`llmgw serve`, `llmgw mcp`, the CLI) freeze; `llmgw.gc_freeze: true` opts a host in, and
`false` keeps even our own processes out.
"""

from __future__ import annotations

import gc
import threading

STARTUP = "start-up"
FIRST_ANSWER = "first answer"

_done: set[str] = set()
_lock = threading.Lock()
_own_process = False


def claim_process() -> None:
    """Called by llmgw's own entry points: this process is ours to tune."""
    global _own_process
    _own_process = True


def wanted(setting: bool | None) -> bool:
    """Whether a gateway built with `llmgw.gc_freeze: setting` freezes."""
    return _own_process if setting is None else setting


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
