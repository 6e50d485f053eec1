"""Named events users can subscribe to: `gw.on("budget.warning", fn)`.

Events: `budget.warning` (a counter crossed its warn ratio; once per scope and window),
`budget.refused` (a request was refused). Handlers are called synchronously and must be
quick; an exception in one is logged and never fails the request.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("llmgw")

Handler = Callable[[str, dict[str, Any]], None]
EVENTS = ("budget.warning", "budget.refused")


def _log_warning(event: str, payload: dict[str, Any]) -> None:
    log.warning("%s: %s %s (%s) spent $%.6f of $%.6f (warn at %.0f%%)", event,
                payload["scope"], payload["scope_id"], payload["period"],
                payload["spent_micros"] / 1e6, payload["limit_micros"] / 1e6,
                payload["warn_ratio"] * 100)


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._handlers["budget.warning"].append(_log_warning)

    def on(self, event: str, handler: Handler) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
        self._handlers[event].append(handler)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                handler(event, payload)
            except Exception:
                log.exception("handler for %s failed", event)
