"""LLMGateway: the request pipeline of DESIGN.md section 3. It orchestrates; policy lives in
the modules it calls (agents, router, ledger, pricing)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

from pydantic import ValidationError

from llmgw.agents import AgentDirectory, Resolution
from llmgw.config import Config, load_config
from llmgw.errors import InvalidRequest, LedgerError, ProviderError
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.store import LedgerStore, RequestContext, usage_row, utcnow
from llmgw.pricing import to_micros, token_cost_micros
from llmgw.redact import Redactor, install_log_filter
from llmgw.router import (
    REQUEST_ID_KEY,
    RequestTrace,
    build_router,
    classify,
    map_exception,
    provider_message,
    recorder,
    status_code_of,
)
from llmgw.types import Attempt, Completion, CompletionRequest, Usage

# Keys the gateway sets itself; a caller passing them would bypass routing or leak secrets.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "api_key", "api_base", "base_url",
                              "litellm_metadata", "fallbacks", "disable_fallbacks"})


class LLMGateway:
    """One gateway per process: `await gw.complete(agent_id, project_id, messages)`."""

    def __init__(self, config: Config | str | os.PathLike[str] | None = None, *,
                 ledger_url: str | None = None, check_schema: bool = True) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.redactor = Redactor(self.config.secret_values())
        install_log_filter(self.redactor)
        self.agents = AgentDirectory(self.config)
        url = ledger_url or self.config.llmgw.ledger.url
        if check_schema:
            ensure_current(url)
        self.ledger = LedgerStore(url)
        self.router = build_router(self.config, self.redactor)
        self._recorder = recorder()

    # -- public API --------------------------------------------------------------------------

    def register_agent(self, agent_id: str, agent_type: str) -> None:
        """Remember an agent's type; its later calls route by it without passing agent_type."""
        self.agents.register(agent_id, agent_type)

    async def complete(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       metadata: dict[str, Any] | None = None, **params: Any) -> Completion:
        """Answer `messages` for an agent of a project through its model group.

        Raises `InvalidRequest` (nothing recorded), `UnknownModelGroup`, or a `ProviderError`
        subclass after every attempt was recorded."""
        request = _validate(agent_id, project_id, messages, agent_type, model_group, metadata,
                            params)
        route = self.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                    model_group=request.model_group)
        request_id = uuid.uuid4().hex
        ctx = RequestContext(request_id, request.agent_id, route.agent_type, request.project_id)
        started = time.perf_counter()
        trace = self._recorder.open(request_id)
        try:
            response = await self.router.acompletion(
                model=route.model_group,
                messages=[m.model_dump(exclude_none=True) for m in request.messages],
                metadata={REQUEST_ID_KEY: request_id, "agent_id": ctx.agent_id,
                          "project_id": ctx.project_id, "agent_type": ctx.agent_type},
                **request.params,
            )
        except Exception as exc:
            trace = self._recorder.close(request_id)
            error = self._failed(exc, trace, route)
            await self._write(ctx, trace.failures, request.metadata, route)
            raise error from None
        except BaseException:  # cancelled mid-call: the provider may still bill the attempt
            trace = self._recorder.close(request_id)
            trace.failures.append(Attempt(
                attempt=len(trace.failures) + 1, model_group=route.model_group, status="error",
                error_class="Cancelled", error_message="the caller cancelled the request",
                latency_ms=round((time.perf_counter() - started) * 1000, 3)))
            await asyncio.shield(self._write(ctx, trace.failures, request.metadata, route))
            raise
        trace = self._recorder.close(request_id)
        completion = self._completed(response, trace, route, request_id, started)
        await self._write(ctx, completion.attempts, request.metadata, route, completion=completion)
        return completion

    def complete_sync(self, agent_id: str, project_id: str, messages: list[dict[str, Any]],
                      **kwargs: Any) -> Completion:
        """`complete` for scripts without an event loop."""
        return asyncio.run(self.complete(agent_id, project_id, messages, **kwargs))

    def close(self) -> None:
        self.ledger.dispose()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> LLMGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- steps -------------------------------------------------------------------------------

    def _completed(self, response: Any, trace: RequestTrace, route: Resolution, request_id: str,
                   started: float) -> Completion:
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") or {}
        deployment_id = hidden.get("model_id")
        dep = self.config.deployment(deployment_id) if deployment_id else None
        usage = _usage_of(response)
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
            cost_micros=cost_micros)
        message = response.choices[0].message if response.choices else None
        tool_calls = [tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
                      for tc in (getattr(message, "tool_calls", None) or [])]
        return Completion(
            request_id=request_id, content=getattr(message, "content", None),
            tool_calls=tool_calls,
            finish_reason=response.choices[0].finish_reason if response.choices else None,
            usage=usage, cost_micros=cost_micros, model_group=served_group,
            requested_group=route.model_group, deployment=ok.deployment, provider=ok.provider,
            model=ok.model, latency_ms=round((time.perf_counter() - started) * 1000, 3),
            attempts=[*trace.failures, ok], raw=response)

    def _failed(self, exc: BaseException, trace: RequestTrace, route: Resolution) -> ProviderError:
        if not trace.failures:  # failed before any provider call (e.g. all deployments cooling)
            trace.failures.append(Attempt(
                attempt=1, model_group=route.model_group, status="error",
                error_class=classify(exc).__name__,
                error_message=provider_message(exc, self.redactor),
                status_code=status_code_of(exc)))
        return map_exception(exc, trace=trace, model_group=route.model_group,
                             redactor=self.redactor, config=self.config)

    async def _write(self, ctx: RequestContext, attempts: list[Attempt],
                     user_metadata: dict[str, Any], route: Resolution,
                     completion: Completion | None = None) -> None:
        ts = utcnow()
        meta = {**user_metadata, "llmgw": {"requested_group": route.model_group,
                                           "route": route.reason}}
        rows = [usage_row(ctx, a, ts=ts, metadata=meta) for a in attempts]
        try:
            await self.ledger.write(rows)
        except LedgerError as exc:
            exc.completion = completion  # type: ignore[attr-defined]  # paid for: keep it
            raise


def _validate(agent_id: Any, project_id: Any, messages: Any, agent_type: Any, model_group: Any,
              metadata: Any, params: dict[str, Any]) -> CompletionRequest:
    reserved = sorted(_RESERVED_PARAMS & params.keys())
    if reserved:
        raise InvalidRequest(f"Parameter(s) {', '.join(reserved)} cannot be passed to complete().",
                             hint="Choose the model with model_group= or agent_type=; credentials "
                                  "and endpoints belong in model_list.yaml.")
    try:
        request = CompletionRequest(agent_id=agent_id, project_id=project_id, messages=messages,
                                    agent_type=agent_type, model_group=model_group,
                                    metadata=metadata or {}, params=params)
        json.dumps(request.metadata)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise InvalidRequest(f"Invalid request: {problems}.",
                             hint="Pass agent_id, project_id and a non-empty list of "
                                  "{'role', 'content'} messages.") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"metadata must be JSON-serialisable: {exc}.") from None
    return request


def _usage_of(response: Any) -> Usage:
    u = getattr(response, "usage", None)
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
                 completion_tokens=int(getattr(u, "completion_tokens", 0) or 0),
                 cached_tokens=int(cached or 0))


def _ms(value: Any) -> float | None:
    try:
        return round(float(value), 3) if value is not None else None
    except (TypeError, ValueError):
        return None
