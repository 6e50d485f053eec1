"""Step 8 of the pipeline (docs/architecture.md): `Completion`s and stream events built from what LiteLLM
returned, a stream's chunks, or a cached answer. Pure functions of their inputs: no I/O."""

from __future__ import annotations

import time
from typing import Any

from llmgw._litellm import cost_usd, hidden_params, import_litellm
from llmgw._litellm.messages import cost_of_usage
from llmgw.budgets.pricing import to_micros, token_cost_micros
from llmgw.budgets.rates import snapshot
from llmgw.cache import CachedAnswer
from llmgw.config.agents import Resolution
from llmgw.config.models import Config
from llmgw.pipeline.context import RequestContext
from llmgw.providers.ruvector import HIDDEN_KEY as RUVECTOR_DETAILS
from llmgw.redact import Redactor
from llmgw.routing.errors import classify, provider_message
from llmgw.routing.recorder import RequestTrace
from llmgw.types import (
    Attempt,
    AttemptStatus,
    Completion,
    ContentDelta,
    StreamEvent,
    ToolCallDelta,
    Usage,
)


def since_ms(started: float) -> float:
    """Milliseconds since `started` (a perf_counter reading), to the microsecond."""
    return round((time.perf_counter() - started) * 1000, 3)


def completion_of(response: Any, trace: RequestTrace, route: Resolution, request_id: str,
                  started: float, config: Config) -> Completion:
    """The Completion of an answered call: the serving attempt after the failed hops, priced
    by LiteLLM from the serving deployment's configured prices."""
    hidden = hidden_params(response)
    headers = hidden.get("additional_headers") or {}
    deployment_id = hidden.get("model_id")
    dep = config.deployment(deployment_id) if deployment_id else None
    usage = usage_of(response)
    cost = hidden.get("response_cost")
    cost_micros = (to_micros(cost) if cost is not None else
                   token_cost_micros(usage.prompt_tokens, usage.completion_tokens,
                                     dep.input_price, dep.output_price) if dep else 0)
    served_group = headers.get("x-litellm-model-group") or (dep.model_name if dep else
                                                            route.model_group)
    ok = Attempt(
        attempt=len(trace.failures) + 1, model_group=served_group, deployment=deployment_id,
        provider=hidden.get("custom_llm_provider") or (dep.provider if dep else None),
        model=dep.litellm_params.model if dep else getattr(response, "model", None),
        status="ok", latency_ms=_ms(hidden.get("_response_ms")), usage=usage,
        cost_micros=cost_micros, provider_details=_provider_details(hidden),
        rates=snapshot(dep) if dep else None)
    message = response.choices[0].message if response.choices else None
    tool_calls = [tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
                  for tc in (getattr(message, "tool_calls", None) or [])]
    return Completion(
        request_id=request_id, content=getattr(message, "content", None), tool_calls=tool_calls,
        finish_reason=response.choices[0].finish_reason if response.choices else None,
        usage=usage, cost_micros=cost_micros, model_group=served_group,
        requested_group=route.model_group, deployment=ok.deployment, provider=ok.provider,
        model=ok.model, latency_ms=since_ms(started), attempts=[*trace.failures, ok],
        raw=response)


def stream_completion(response: Any, acc: StreamAccumulator, trace: RequestTrace,
                      route: Resolution, ctx: RequestContext, msgs: list[dict[str, Any]],
                      started: float, config: Config, redactor: Redactor, *, status: AttemptStatus,
                      error: BaseException | None) -> Completion:
    """The Completion of a stream, from its chunks: provider usage when it sent one
    (`include_usage`), else tokens counted by LiteLLM's tokenizer; cost from the serving
    deployment's prices, exactly. `partial`: the stream was cut off (by the provider, with
    `error`, or by the caller)."""
    hidden = hidden_params(response)
    deployment_id = hidden.get("model_id")
    dep = config.deployment(deployment_id) if deployment_id else None
    usage = acc.usage
    whole = acc.provider_usage if usage is not None and status != "partial" else None
    if usage is None or status == "partial":
        litellm = import_litellm()
        model = dep.litellm_params.model if dep else "gpt-4o"
        prompt = usage.prompt_tokens if usage else litellm.token_counter(model=model,
                                                                         messages=msgs)
        completion = litellm.token_counter(model=model, text=acc.text + acc.tool_text(),
                                           count_response_tokens=True) if (
            acc.text or acc.tool_calls) else 0
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion,
                      cached_tokens=usage.cached_tokens if usage else 0)
    # Priced as a non-streamed answer is: by LiteLLM, at the deployment's prices, from the
    # provider's whole usage (cache writes and reasoning included) when the stream ended
    # with one; a cut stream's counted tokens otherwise.
    if dep is None:
        cost = 0
    elif whole is not None:
        cost = to_micros(cost_of_usage(dep.litellm_params.model, dep.id, whole))
    else:
        cost = to_micros(cost_usd(dep.litellm_params.model, dep.id, usage.prompt_tokens,
                                  usage.completion_tokens, usage.cached_tokens))
    headers = hidden.get("additional_headers") or {}
    served_group = headers.get("x-litellm-model-group") or (dep.model_name if dep else
                                                            route.model_group)
    final = Attempt(
        attempt=len(trace.failures) + 1, model_group=served_group, deployment=deployment_id,
        provider=dep.provider if dep else hidden.get("custom_llm_provider"),
        model=dep.litellm_params.model if dep else None, status=status,
        error_class=(classify(error).__name__ if error is not None else
                     "StreamClosed" if status == "partial" else None),
        error_message=(provider_message(error, redactor) if error is not None else
                       "the caller stopped reading the stream" if status == "partial"
                       else None),
        latency_ms=since_ms(started), usage=usage, cost_micros=cost,
        provider_details=_provider_details(hidden), rates=snapshot(dep) if dep else None)
    return Completion(
        request_id=ctx.request_id, content=acc.text or None, tool_calls=acc.tool_call_list(),
        finish_reason=acc.finish_reason, usage=usage, cost_micros=cost,
        model_group=served_group, requested_group=route.model_group,
        deployment=deployment_id, provider=final.provider, model=final.model,
        latency_ms=final.latency_ms or 0.0, attempts=[*trace.failures, final], raw=None)


def cached_completion(hit: CachedAnswer, route: Resolution, request_id: str,
                      started: float) -> Completion:
    """A cache hit as a Completion: one `cached` attempt at cost 0 that saved what the answer
    first cost."""
    attempt = Attempt(attempt=1, model_group=hit.model_group, deployment=hit.deployment,
                      provider=hit.provider, model=hit.model, status="cached",
                      latency_ms=since_ms(started))
    return Completion(
        request_id=request_id, content=hit.content, tool_calls=hit.tool_calls,
        finish_reason=hit.finish_reason, usage=hit.usage, cost_micros=0,
        model_group=hit.model_group, requested_group=route.model_group,
        deployment=hit.deployment, provider=hit.provider, model=hit.model,
        latency_ms=attempt.latency_ms or 0.0, cached=True, saved_micros=hit.cost_micros,
        attempts=[attempt], dialect=hit.dialect,
        body=None if hit.body is None else {**hit.body, "id": f"msg_{request_id}"})


def replay(completion: Completion) -> list[StreamEvent]:
    """A cached answer as the events of a stream (whole words where possible)."""
    rid = completion.request_id
    events: list[StreamEvent] = [ContentDelta(text=p, request_id=rid)
                                 for p in _pieces(completion.content or "")]
    for i, call in enumerate(completion.tool_calls):
        fn = call.get("function") or {}
        events.append(ToolCallDelta(index=i, id=call.get("id"), name=fn.get("name"),
                                    arguments=fn.get("arguments") or "", request_id=rid))
    return events


class StreamAccumulator:
    """Turns LiteLLM stream chunks into events and remembers what was said."""

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.usage: Usage | None = None
        self.provider_usage: Any = None  # LiteLLM's own usage object, every token kind
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def empty(self) -> bool:
        """Nothing shown to the caller yet (a failure now can still fall back)."""
        return not self.parts and not self.tool_calls

    def tool_text(self) -> str:
        return "".join(f"{c['function']['name']}{c['function']['arguments']}"
                       for c in self.tool_calls.values())

    def tool_call_list(self) -> list[dict[str, Any]]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]

    def add(self, chunk: Any) -> list[ContentDelta | ToolCallDelta]:
        events: list[ContentDelta | ToolCallDelta] = []
        u = getattr(chunk, "usage", None)
        if u is not None and (getattr(u, "prompt_tokens", None) or getattr(u, "completion_tokens", None)):
            self.usage = usage_of(chunk)
            self.provider_usage = u
        for choice in getattr(chunk, "choices", None) or []:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self.parts.append(delta.content)
                events.append(ContentDelta(text=delta.content, request_id=self.request_id))
            for tc in getattr(delta, "tool_calls", None) or []:
                index = tc.index if tc.index is not None else len(self.tool_calls)
                fn = tc.function
                name = getattr(fn, "name", None) if fn else None
                args = (getattr(fn, "arguments", None) or "") if fn else ""
                call = self.tool_calls.setdefault(index, {"id": None, "type": "function",
                                                          "function": {"name": None,
                                                                       "arguments": ""}})
                call["id"] = call["id"] or tc.id
                call["function"]["name"] = call["function"]["name"] or name
                call["function"]["arguments"] += args
                events.append(ToolCallDelta(index=index, id=tc.id, name=name, arguments=args,
                                            request_id=self.request_id))
        return events


def usage_of(response: Any) -> Usage:
    u = getattr(response, "usage", None)
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    out = getattr(u, "completion_tokens_details", None)
    written = getattr(u, "cache_creation_input_tokens", None)
    if written is None and details is not None:
        written = getattr(details, "cache_creation_tokens", None)
    split = getattr(details, "cache_creation_token_details", None) if details is not None else None
    hour = (split.get("ephemeral_1h_input_tokens") if isinstance(split, dict)
            else getattr(split, "ephemeral_1h_input_tokens", None))
    return Usage.model_construct(  # ints already: nothing for pydantic to check
        prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(u, "completion_tokens", 0) or 0),
        cached_tokens=int(cached or 0), cache_write_tokens=int(written or 0),
        cache_write_1h_tokens=int(hour or 0),
        reasoning_tokens=int(getattr(out, "reasoning_tokens", 0) or 0) if out is not None else 0)


def _pieces(text: str, size: int = 24) -> list[str]:
    pieces, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size and current:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    return [*pieces, current] if current else pieces


def _provider_details(hidden: dict[str, Any]) -> dict[str, Any] | None:
    """What a provider told us beyond the answer (ruvLLM: model_used, confidence, ...)."""
    details = hidden.get(RUVECTOR_DETAILS)
    return dict(details) if isinstance(details, dict) else None


def _ms(value: Any) -> float | None:
    try:
        return round(float(value), 3) if value is not None else None
    except (TypeError, ValueError):
        return None
