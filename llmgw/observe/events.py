"""Named events users can subscribe to: `gw.on("request.finished", fn)`.

A handler is `fn(event: str, payload: dict)`. Handlers run synchronously on the request's
path and must be quick; an exception in one is logged and never fails the request.
Payloads are built only when someone listens, so an unobserved event costs nothing.

`request.started`  a valid request was routed and is about to be budgeted and answered.
    request_id, agent_id, project_id, agent_type, model_group, stream
`request.finished` every started request finishes exactly once, after its ledger rows.
    request_id, agent_id, project_id, agent_type, requested_group, model_group,
    deployment, provider, status (ok | error | partial | cached | refused), error_class,
    stream, duration_s, prompt_tokens, completion_tokens, cost_micros, saved_micros,
    attempts (list of `llmgw.types.Attempt`, one per ledger row), ledger_written
`fallback`         a failed attempt was followed by another (retry, other deployment or group).
    request_id, project_id, agent_type, from_group, from_deployment, to_group,
    to_deployment, error_class
`cache.hit`        an answer was served from the cache.
    request_id, project_id, agent_type, model_group, scope, similarity, saved_micros
`budget.warning`   a counter crossed its warn ratio; once per scope and window.
    scope, scope_id, period, period_start, spent_micros, limit_micros, warn_ratio
`budget.refused`   a request was refused before any provider was called.
    request_id, scope, scope_id, period, requested_micros, limit_micros
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("llmgw")

Handler = Callable[[str, dict[str, Any]], None]
EVENTS = ("request.started", "request.finished", "fallback", "cache.hit", "budget.warning",
          "budget.refused")


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

    def wants(self, event: str) -> bool:
        """Whether anyone listens: callers skip building a payload nobody reads."""
        return bool(self._handlers.get(event))

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                handler(event, payload)
            except Exception:
                log.exception("handler for %s failed", event)
