"""What a wire dialect brings to the one pipeline (DESIGN section 3, "one pipeline, every wire
dialect"): its LiteLLM call, its answer and usage reader, its stream accumulator and what its
cache key is made of. Budgets, rows, events and the lifecycle rule are the gateway's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llmgw.agents import Resolution
from llmgw.config import Config
from llmgw.ledger.store import RequestContext
from llmgw.redact import Redactor
from llmgw.router import RequestTrace
from llmgw.types import AttemptStatus, Completion, StreamEvent


@dataclass(frozen=True, slots=True)
class Served:
    """Where an answer came from and when the request started: what every dialect's answer
    builder needs besides the answer itself."""

    trace: RequestTrace
    route: Resolution
    ctx: RequestContext
    started: float
    config: Config


@dataclass(slots=True)
class Call:
    """One validated request of a dialect, as the pipeline carries it.

    `message_dicts` and `params` are what the planner counts and the cache keys, in OpenAI's
    chat shape (a dialect translates its own for that); `body` is what goes to LiteLLM."""

    agent_id: str
    project_id: str
    agent_type: str | None
    model_group: str | None
    metadata: dict[str, Any]
    message_dicts: list[dict[str, Any]]
    params: dict[str, Any]
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # provider headers to forward
    cache_params: dict[str, Any] | None = None  # what the cache key holds besides messages
    constraints: dict[str, Any] = field(default_factory=dict)  # max_cost_usd, prefer (planner)
    caching: str | None = None  # the prompt caching it asks for: None, "5m" or "1h"


def caching_asked(*values: Any) -> str | None:
    """The longest prompt-cache TTL any `cache_control` inside `values` asks for: "1h", "5m"
    (Anthropic's default), or None. A provider bills a cache write above the input rate, so
    the hold must cover it."""
    found: str | None = None
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            control = value.get("cache_control")
            if isinstance(control, dict):
                if control.get("ttl") == "1h":
                    return "1h"
                found = "5m"
            stack.extend(v for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, dict | list))
    return found


class Accumulator(Protocol):
    """A stream's chunks as the caller's events, and what was said so far."""

    @property
    def empty(self) -> bool:
        """Nothing shown to the caller yet (a failure now is still a plain failure)."""

    def add(self, chunk: Any) -> list[StreamEvent]: ...

    def completion(self, response: Any, served: Served, redactor: Redactor, *,
                   status: AttemptStatus, error: BaseException | None) -> Completion: ...


class Dialect(Protocol):
    name: str

    async def send(self, router: Any, group: str, call: Call, params: dict[str, Any],
                   metadata: dict[str, Any], *, stream: bool) -> Any:
        """The LiteLLM Router call of this dialect (retries, fallbacks, cooldowns: LiteLLM's)."""

    def answer(self, response: Any, served: Served) -> Completion:
        """The Completion of a non-streamed answer, priced by LiteLLM."""

    def accumulator(self, call: Call, request_id: str) -> Accumulator: ...

    def replay(self, completion: Completion) -> list[StreamEvent]:
        """A cached answer as the events of a stream."""
