"""What a wire dialect brings to the one pipeline (docs/architecture.md: one pipeline, every
wire dialect): its LiteLLM call, its answer and usage reader, its stream accumulator and what
its cache key is made of. Budgets, rows, events and the lifecycle rule are the gateway's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llmgw.budgets.rates import snapshot
from llmgw.config.agents import Resolution
from llmgw.config.models import Config
from llmgw.pipeline.completions import since_ms
from llmgw.pipeline.context import RequestContext
from llmgw.redact import Redactor
from llmgw.routing.errors import classify, provider_message
from llmgw.routing.recorder import RequestTrace
from llmgw.types import Attempt, AttemptStatus, Completion, StreamEvent, Usage


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


def wire_completion(served: Served, hidden: Any, body: dict[str, Any], *, dialect: str,
                    usage: Usage, cost_micros: int, status: AttemptStatus,
                    error: BaseException | None, redactor: Redactor | None, text: str,
                    tool_calls: list[dict[str, Any]], finish_reason: str | None,
                    provider_details: dict[str, Any] | None = None) -> Completion:
    """The Completion of an answer in a dialect's own wire shape (`body`), whole or as far
    as a stream got: its serving attempt after the failed hops, with the deployment the
    Router's hidden params name and the rates it was priced at."""
    headers = hidden.get("additional_headers") or {}
    deployment_id = hidden.get("model_id")
    dep = served.config.deployment(deployment_id) if deployment_id else None
    served_group = headers.get("x-litellm-model-group") or (dep.model_name if dep else
                                                            served.route.model_group)
    final = Attempt(
        attempt=len(served.trace.failures) + 1, model_group=served_group,
        deployment=deployment_id, provider=dep.provider if dep else None,
        model=dep.litellm_params.model if dep else body.get("model"), status=status,
        error_class=(classify(error).__name__ if error is not None else
                     "StreamClosed" if status == "partial" else None),
        error_message=(provider_message(error, redactor or Redactor()) if error is not None
                       else "the caller stopped reading the stream" if status == "partial"
                       else None),
        latency_ms=since_ms(served.started), usage=usage, cost_micros=cost_micros,
        provider_details=provider_details, rates=snapshot(dep) if dep else None)
    return Completion(
        request_id=served.ctx.request_id, content=text or None, tool_calls=tool_calls,
        finish_reason=finish_reason, usage=usage, cost_micros=cost_micros,
        model_group=served_group, requested_group=served.route.model_group,
        deployment=deployment_id, provider=final.provider, model=final.model,
        latency_ms=final.latency_ms or 0.0, attempts=[*served.trace.failures, final],
        body=body, dialect=dialect)
