"""LLMGateway: the request pipeline of DESIGN.md section 3. It orchestrates; policy lives in
the modules it calls (agents, budgets, router, ledger, pricing)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from llmgw._litellm import import_litellm
from llmgw.agents import AgentDirectory, Resolution
from llmgw.budgets import BudgetPolicy, Limit, Rule
from llmgw.cache import Cache, CachedAnswer, cache_key, scope_of
from llmgw.config import Config, load_config
from llmgw.errors import BudgetExceeded, InvalidRequest, LedgerError, ProviderError
from llmgw.events import EventBus, Handler
from llmgw.health import DeploymentHealth, DeploymentStats, StatsCollector, probe
from llmgw.heap import FIRST_ANSWER, STARTUP, freeze_once
from llmgw.ids import new_request_id
from llmgw.ledger.budget_store import BudgetStore, Hold, RefusedError
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.store import LedgerStore, RequestContext, usage_row, utcnow
from llmgw.pricing import to_micros, token_cost_micros
from llmgw.tokens import PromptTokenCounter
from llmgw.tracing import PARENT_SPAN_KEY, make_tracing
from llmgw.providers.ruvector import HIDDEN_KEY as RUVECTOR_DETAILS
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
from llmgw.validation import validate_call
from llmgw.types import (
    Attempt,
    BudgetImpact,
    Completion,
    CompletionRequest,
    ContentDelta,
    CostEstimate,
    DeploymentEstimate,
    Message,
    StreamDone,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

_RULES_TTL_S = 5.0  # `llmgw budgets set` reaches running gateways within this


@dataclass(frozen=True, slots=True)
class _CacheLookup:
    key: str | None = None
    scope: str = ""
    msgs: list[dict[str, Any]] | None = None
    params: dict[str, Any] | None = None
    hit: CachedAnswer | None = None
    similarity: float | None = None
    text: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class _BudgetPlan:
    route: Resolution
    amount: int
    max_tokens: int
    limits: list[Limit]
    keys: list[Any]
    cap: Limit | None


class LLMGateway:
    """One gateway per process: `await gw.complete(agent_id, project_id, messages)`."""

    def __init__(self, config: Config | str | Any | None = None, *, ledger_url: str | None = None,
                 check_schema: bool = True, clock: Callable[[], Any] = utcnow,
                 tracer_provider: Any = None) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.redactor = Redactor(self.config.secret_values())
        install_log_filter(self.redactor)
        self.agents = AgentDirectory(self.config)
        self.events = EventBus()
        self.clock = clock
        url = ledger_url or self.config.llmgw.ledger.url
        if check_schema:
            ensure_current(url)
        ledger = self.config.llmgw.ledger
        self.ledger = LedgerStore(url, engine=make_engine(url, pool_size=ledger.pool_size,
                                                          max_overflow=ledger.max_overflow),
                                  max_connections=ledger.pool_size + ledger.max_overflow)
        self.budget_policy = BudgetPolicy(self.config.llmgw.budgets)
        self.budget_store = BudgetStore(self.ledger.engine)
        self._rules: list[Rule] = []
        self._rules_at = -math.inf
        self.router = build_router(self.config, self.redactor)
        self._recorder = recorder()
        self.stats_collector = StatsCollector()
        self.cache, self.semantic = _make_caches(self.config)
        self._open_streams: set[asyncio.Event] = set()
        self._started: dict[str, float] = {}  # request_id -> perf_counter, until finished
        self._tokens = PromptTokenCounter()
        self._top_prices: dict[str, tuple[Any, Any]] = {}  # group -> highest (input, output)
        # (agent, agent type, project) -> its limits and request cap, under `_limits_of`
        self._limits: dict[tuple[str, str | None, str], tuple[list[Limit], Limit | None]] = {}
        self._limits_of: list[Rule] | None = None
        self.metrics = _make_metrics(self)
        # OpenTelemetry: `llmgw.otel`, or the caller's own provider (llmgw.tracing)
        self.tracing = make_tracing(self.config.llmgw.otel, tracer_provider)
        self.reconcile()
        self._freeze_at_first_answer = self.config.llmgw.gc_freeze
        if self.config.llmgw.gc_freeze:
            freeze_once(STARTUP)

    # -- public API --------------------------------------------------------------------------

    def register_agent(self, agent_id: str, agent_type: str) -> None:
        """Remember an agent's type; its later calls route by it without passing agent_type."""
        self.agents.register(agent_id, agent_type)

    def on(self, event: str, handler: Handler) -> None:
        """Subscribe to an event: request.started / request.finished, fallback, cache.hit,
        budget.warning, budget.refused (payloads: `llmgw.events`)."""
        self.events.on(event, handler)

    def reconcile(self, older_than_s: float | None = None) -> list[str]:
        """Settle reservations a crashed gateway left open (run at start-up as well)."""
        age = self.config.llmgw.budgets.reconcile_after_s if older_than_s is None else older_than_s
        return self.budget_store.reconcile(now=self.clock(), older_than=timedelta(seconds=age))

    async def complete(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       metadata: dict[str, Any] | None = None, cache: bool = True,
                       **params: Any) -> Completion:
        """Answer `messages` for an agent of a project through its model group.

        `cache=False` skips the answer cache for this call. Raises `InvalidRequest`
        (nothing recorded), `UnknownModelGroup`, `BudgetExceeded` (a `refused` row, no
        provider called), or a `ProviderError` subclass after every attempt was recorded."""
        request, route, ctx, now, call_params, hold = await self._begin(
            agent_id, project_id, messages, agent_type, model_group, metadata, params)
        request_id = ctx.request_id
        started = time.perf_counter()
        lookup = await self._cache_lookup(request, route, ctx, call_params, use=cache,
                                          stream=False)
        if lookup.hit is not None:
            return await self._serve_cached(lookup, request, route, ctx, now, hold, started)
        trace = self._recorder.open(request_id)
        try:
            response = await self.router.acompletion(
                model=route.model_group,
                messages=[m.model_dump(exclude_none=True) for m in request.messages],
                metadata=self._litellm_metadata(ctx), **call_params)
        except Exception as exc:
            trace = self._recorder.close(request_id)
            error = self._failed(exc, trace, route)
            await self._record(ctx, trace.failures, request.metadata, route, now, hold)
            raise error from None
        except BaseException:  # cancelled mid-call: the provider may still bill the attempt
            trace = self._recorder.close(request_id)
            trace.failures.append(Attempt(
                attempt=len(trace.failures) + 1, model_group=route.model_group, status="error",
                error_class="Cancelled", error_message="the caller cancelled the request",
                latency_ms=round((time.perf_counter() - started) * 1000, 3)))
            await asyncio.shield(self._record(ctx, trace.failures, request.metadata, route, now,
                                              hold))
            raise
        trace = self._recorder.close(request_id)
        completion = self._completed(response, trace, route, request_id, started)
        await self._record(ctx, completion.attempts, request.metadata, route, now, hold,
                           completion=completion)
        await self._cache_store(lookup, completion, now)
        return completion

    async def health(self, *, timeout: float = 5.0) -> list[DeploymentHealth]:
        """Probe every deployment now: up/down, latency, error, and LiteLLM's cooldown."""
        return await probe(self.config, self.router, timeout=timeout, redactor=self.redactor)

    def stats(self) -> list[DeploymentStats]:
        """Requests, errors and p50/p95 latency per deployment, from this process's attempts."""
        return self.stats_collector.snapshot()

    async def feedback(self, request_id: str, quality: float) -> bool:
        """Tell ruvLLM how good one of its answers was (0..1), so its learning loop improves.
        Returns False when that request was not answered by ruvLLM (e.g. by its Ollama
        fallback); `LookupError` for a request id this process has not served recently."""
        from llmgw.providers import ruvector

        return await ruvector.handler().feedback_for(request_id, quality)

    async def stream(self, agent_id: str, project_id: str, messages: list[dict[str, Any]],
                     **kwargs: Any) -> AsyncIterator[StreamEvent]:
        """`complete` as a stream of events: see `_stream`. A stream abandoned by its caller
        is settled when Python closes it; `drain()` / `aclose()` wait for that."""
        finished = asyncio.Event()
        self._open_streams.add(finished)
        inner = self._stream(agent_id, project_id, messages, **kwargs)
        try:
            async for event in inner:
                yield event
        finally:
            try:
                await inner.aclose()
            finally:
                finished.set()
                self._open_streams.discard(finished)

    async def drain(self) -> None:
        """Wait until every stream this gateway started has been recorded and settled."""
        while self._open_streams:
            await next(iter(self._open_streams)).wait()

    async def _stream(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                      agent_type: str | None = None, model_group: str | None = None,
                      metadata: dict[str, Any] | None = None, cache: bool = True,
                      **params: Any) -> AsyncIterator[StreamEvent]:
        """`complete` as a stream of events: `ContentDelta`s, `ToolCallDelta`s, then one
        `StreamDone` (usage, cost, deployment, request_id).

        A failure before the first token falls back like `complete` (or raises its typed
        error); after it, the stream ends with a `StreamError` and no repeated text. A stream
        cut off (the provider drops it, or the caller stops iterating or is cancelled) is
        recorded as a `partial` row with the tokens generated so far, and settled."""
        request, route, ctx, now, call_params, hold = await self._begin(
            agent_id, project_id, messages, agent_type, model_group, metadata, params,
            stream=True)
        started = time.perf_counter()
        lookup = await self._cache_lookup(request, route, ctx, call_params, use=cache,
                                          stream=True)
        if lookup.hit is not None:  # replay the cached answer as a stream
            cached = await self._serve_cached(lookup, request, route, ctx, now, hold, started)
            for piece in _pieces(cached.content or ""):
                yield ContentDelta(text=piece)
            for i, call in enumerate(cached.tool_calls):
                fn = call.get("function") or {}
                yield ToolCallDelta(index=i, id=call.get("id"), name=fn.get("name"),
                                    arguments=fn.get("arguments") or "")
            yield StreamDone(completion=cached)
            return
        trace = self._recorder.open(ctx.request_id)
        msgs = [m.model_dump(exclude_none=True) for m in request.messages]
        try:
            response = await self.router.acompletion(
                model=route.model_group, messages=msgs, stream=True,
                stream_options={"include_usage": True},
                metadata=self._litellm_metadata(ctx), **call_params)
        except Exception as exc:
            trace = self._recorder.close(ctx.request_id)
            error = self._failed(exc, trace, route)
            await self._record(ctx, trace.failures, request.metadata, route, now, hold)
            raise error from None
        acc = _StreamAccumulator()
        finished = False
        try:
            async for chunk in response:
                for event in acc.add(chunk):
                    yield event
            finished = True
        except Exception as exc:
            trace = self._recorder.close(ctx.request_id)
            if not acc.text and not acc.tool_calls:  # nothing shown yet: a plain failure
                error = self._failed(exc, trace, route)
                await self._record(ctx, trace.failures, request.metadata, route, now, hold)
                raise error from None
            partial = self._stream_completion(response, acc, trace, route, ctx, msgs, started,
                                              status="partial", error=exc)
            await self._record(ctx, partial.attempts, request.metadata, route, now, hold,
                               completion=partial)
            cls = classify(exc)
            yield StreamError(error_class=cls.__name__,
                              message=provider_message(exc, self.redactor), partial=partial,
                              error=map_exception(exc, trace=trace, model_group=route.model_group,
                                                  redactor=self.redactor, config=self.config))
            return
        finally:
            if not finished and ctx.request_id in self._recorder.traces:
                # The caller stopped iterating or was cancelled: settle what was generated.
                trace = self._recorder.close(ctx.request_id)
                partial = self._stream_completion(response, acc, trace, route, ctx, msgs,
                                                  started, status="partial", error=None)
                await asyncio.shield(self._record(ctx, partial.attempts, request.metadata, route,
                                                  now, hold, completion=partial))
                with contextlib.suppress(Exception):
                    await response.aclose()
        trace = self._recorder.close(ctx.request_id)
        done = self._stream_completion(response, acc, trace, route, ctx, msgs, started,
                                       status="ok", error=None)
        await self._record(ctx, done.attempts, request.metadata, route, now, hold,
                           completion=done)
        await self._cache_store(lookup, done, now)
        yield StreamDone(completion=done)

    def _stream_completion(self, response: Any, acc: _StreamAccumulator, trace: RequestTrace,
                           route: Resolution, ctx: RequestContext, msgs: list[dict[str, Any]],
                           started: float, *, status: str, error: BaseException | None
                           ) -> Completion:
        """The Completion of a stream, from its chunks: provider usage when it sent one
        (`include_usage`), else tokens counted by LiteLLM's tokenizer; cost from the serving
        deployment's prices, exactly."""
        hidden = getattr(response, "_hidden_params", None) or {}
        deployment_id = hidden.get("model_id")
        dep = self.config.deployment(deployment_id) if deployment_id else None
        usage = acc.usage
        if usage is None or status == "partial":
            litellm = import_litellm()
            model = dep.litellm_params.model if dep else "gpt-4o"
            prompt = usage.prompt_tokens if usage else litellm.token_counter(model=model,
                                                                             messages=msgs)
            completion = litellm.token_counter(model=model, text=acc.text + acc.tool_text(),
                                               count_response_tokens=True) if (
                acc.text or acc.tool_calls) else 0
            usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
        cost = (token_cost_micros(usage.prompt_tokens, usage.completion_tokens, dep.input_price,
                                  dep.output_price) if dep else 0)
        headers = hidden.get("additional_headers") or {}
        served_group = headers.get("x-litellm-model-group") or (dep.model_name if dep else
                                                                route.model_group)
        final = Attempt(
            attempt=len(trace.failures) + 1, model_group=served_group, deployment=deployment_id,
            provider=dep.provider if dep else hidden.get("custom_llm_provider"),
            model=dep.litellm_params.model if dep else None, status=status,  # type: ignore[arg-type]
            error_class=(classify(error).__name__ if error is not None else
                         "StreamClosed" if status == "partial" else None),
            error_message=(provider_message(error, self.redactor) if error is not None else
                           "the caller stopped reading the stream" if status == "partial"
                           else None),
            latency_ms=round((time.perf_counter() - started) * 1000, 3), usage=usage,
            cost_micros=cost, provider_details=_provider_details(hidden))
        return Completion(
            request_id=ctx.request_id, content=acc.text or None, tool_calls=acc.tool_call_list(),
            finish_reason=acc.finish_reason, usage=usage, cost_micros=cost,
            model_group=served_group, requested_group=route.model_group,
            deployment=deployment_id, provider=final.provider, model=final.model,
            latency_ms=final.latency_ms or 0.0, attempts=[*trace.failures, final], raw=None)

    async def estimate(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       **params: Any) -> CostEstimate:
        """What `complete` would cost and which budgets it would hit; reserves nothing and
        calls no provider. `worst_case_micros` is exactly what `complete` would reserve."""
        request = validate_call(agent_id, project_id, messages, agent_type, model_group, None, params)
        route = self.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                    model_group=request.model_group)
        ctx = RequestContext("estimate", request.agent_id, route.agent_type, request.project_id)
        now = self.clock()
        call_params = dict(request.params)
        plan = self._plan(ctx, route, request, call_params, now)
        if plan is not None:
            route, max_tokens, amount = plan.route, plan.max_tokens, plan.amount
        else:
            max_tokens = int(call_params.get("max_tokens")
                             or self.config.llmgw.budgets.default_max_tokens)
            amount = self.worst_case_micros(route.model_group, request.message_dicts, max_tokens,
                                            tools=call_params.get("tools"),
                                            tool_choice=call_params.get("tool_choice"))
        prompt = self._prompt_tokens(route.model_group, request.message_dicts,
                                     call_params.get("tools"), call_params.get("tool_choice"))
        expected = min(max_tokens, max(16, prompt // 2))  # answers are usually shorter than asks
        chain = self.config.fallback_chain(route.model_group)
        per_deployment = [DeploymentEstimate(
            deployment=d.id, model_group=g, model=d.litellm_params.model,
            expected_micros=token_cost_micros(prompt, expected, d.input_price, d.output_price),
            worst_case_micros=token_cost_micros(prompt, max_tokens, d.input_price,
                                                d.output_price))
            for g in chain for d in self.config.groups()[g]]
        impacts: list[BudgetImpact] = []
        refused = False
        if plan is not None:
            if plan.cap is not None:
                over = amount > plan.cap.limit_micros
                refused |= over
                impacts.append(BudgetImpact(scope="request", scope_id="*", period="request",
                                            limit_micros=plan.cap.limit_micros, spent_micros=0,
                                            reserved_micros=0, would_exceed=over))
            counters = await self.ledger.run(self.budget_store.counters, plan.keys)
            for key, limit in zip(plan.keys, plan.limits):
                spent, held = counters.get(key, (0, 0))
                over = spent + held + amount > limit.limit_micros
                refused |= over
                impacts.append(BudgetImpact(scope=limit.scope, scope_id=limit.scope_id,
                                            period=limit.period, limit_micros=limit.limit_micros,
                                            spent_micros=spent, reserved_micros=held,
                                            would_exceed=over))
        return CostEstimate(model_group=route.model_group, fallback_groups=chain[1:],
                            prompt_tokens=prompt, expected_completion_tokens=expected,
                            max_tokens=max_tokens, worst_case_micros=amount,
                            deployments=per_deployment, budgets=impacts,
                            would_be_refused=refused)

    def complete_sync(self, agent_id: str, project_id: str, messages: list[dict[str, Any]],
                      **kwargs: Any) -> Completion:
        """`complete` for scripts without an event loop."""
        async def answer() -> Completion:
            completion = await self.complete(agent_id, project_id, messages, **kwargs)
            if self.tracing is not None:  # LiteLLM's span ends in a task of this loop
                await self.tracing.litellm_logged()
            return completion
        return asyncio.run(answer())

    def _prompt_tokens(self, model_group: str, messages: list[Message] | list[dict[str, Any]],
                       tools: Any = None, tool_choice: Any = None) -> int:
        """Prompt tokens by LiteLLM's tokenizer for the group's first deployment's model,
        the tools' definitions (and a named tool choice) included."""
        first = self.config.groups()[model_group][0].litellm_params.model
        dicts = [m.model_dump(exclude_none=True) if isinstance(m, Message) else m
                 for m in messages]
        return self._tokens.count(first, dicts, tools=tools, tool_choice=tool_choice)

    def worst_case_micros(self, model_group: str, messages: list[Message] | list[dict[str, Any]],
                          max_tokens: int, *,
                          tools: list[dict[str, Any]] | None = None,
                          tool_choice: Any = None) -> int:
        """The most a call can cost: prompt tokens (LiteLLM's tokenizer, with the configured
        margin; tool definitions count as prompt) at the highest input price, and max_tokens
        at the highest output price, across the group and every group its fallbacks reach.
        Rounded up."""
        prices = self._top_prices.get(model_group)
        if prices is None:  # the config does not change under a running gateway
            deployments = [d for g in self.config.fallback_chain(model_group)
                           for d in self.config.groups()[g]]
            prices = self._top_prices[model_group] = (max(d.input_price for d in deployments),
                                                      max(d.output_price for d in deployments))
        counted = self._prompt_tokens(model_group, messages, tools, tool_choice)
        prompt = math.ceil(counted * self.config.llmgw.budgets.prompt_margin)
        return math.ceil((prompt * prices[0] + max_tokens * prices[1]) * 1_000_000)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.tracing is not None:
            self.tracing.close()
        self.ledger.dispose()

    async def aclose(self) -> None:
        await self.drain()
        if self.tracing is not None:
            await self.tracing.flush()
        if self.cache is not None:
            await self.cache.aclose()
        self.close()

    async def __aenter__(self) -> LLMGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- cache -------------------------------------------------------------------------------

    async def _cache_lookup(self, request: CompletionRequest, route: Resolution,
                            ctx: RequestContext, params: dict[str, Any], *, use: bool,
                            stream: bool) -> _CacheLookup:
        """Step 4: the cache key of a cacheable call, and its hit if there is one."""
        settings = self.config.llmgw.cache
        temperature = params.get("temperature")
        if (not use or self.cache is None
                or (temperature is not None and temperature > settings.max_temperature)
                or (params.get("tools") and not settings.tool_calls)
                or (stream and not settings.streams)):
            return _CacheLookup()
        scope = scope_of(settings.scope, project_id=ctx.project_id, agent_type=route.agent_type)
        msgs = request.message_dicts
        key = cache_key(scope, route.model_group, msgs, params)
        hit = await self.cache.get(key)
        if hit is not None or self.semantic is None or params.get("tools"):
            return _CacheLookup(key, scope, msgs, params, hit)
        from llmgw.semantic import params_fingerprint, semantic_text

        text = semantic_text(msgs)
        if text is None:  # the last turn is not plain user text: exact matches only
            return _CacheLookup(key, scope, msgs, params, None)
        fingerprint = params_fingerprint(msgs, params)
        found = await self.semantic.lookup(scope, route.model_group, text, fingerprint)
        if found is None:
            return _CacheLookup(key, scope, msgs, params, None, None, text, fingerprint)
        similar = await self.cache.get(found[0])
        if similar is None:
            self.semantic.remove(found[0])
        return _CacheLookup(key, scope, msgs, params, similar, found[1] if similar else None,
                            text, fingerprint)

    async def _serve_cached(self, lookup: _CacheLookup, request: CompletionRequest,
                            route: Resolution, ctx: RequestContext, now: Any,
                            hold: Hold | None, started: float) -> Completion:
        """A hit: a `cached` row at cost 0 saving what the answer first cost; hold released."""
        hit = lookup.hit
        assert hit is not None
        attempt = Attempt(attempt=1, model_group=hit.model_group, deployment=hit.deployment,
                          provider=hit.provider, model=hit.model, status="cached",
                          latency_ms=round((time.perf_counter() - started) * 1000, 3))
        completion = Completion(
            request_id=ctx.request_id, content=hit.content, tool_calls=hit.tool_calls,
            finish_reason=hit.finish_reason, usage=hit.usage, cost_micros=0,
            model_group=hit.model_group, requested_group=route.model_group,
            deployment=hit.deployment, provider=hit.provider, model=hit.model,
            latency_ms=attempt.latency_ms or 0.0, cached=True, saved_micros=hit.cost_micros,
            attempts=[attempt])
        extra = {"cache": {"first_request_id": hit.request_id, "scope": lookup.scope}}
        if lookup.similarity is not None:
            extra["cache"]["similarity"] = round(lookup.similarity, 4)
        if self.events.wants("cache.hit"):
            self.events.emit("cache.hit", {
                "request_id": ctx.request_id, "project_id": ctx.project_id,
                "agent_type": ctx.agent_type, "model_group": hit.model_group,
                "scope": lookup.scope, "similarity": lookup.similarity,
                "saved_micros": hit.cost_micros})
        await self._record(ctx, [attempt], request.metadata, route, now, hold,
                           completion=completion, saved_micros=hit.cost_micros, extra=extra)
        return completion

    async def _cache_store(self, lookup: _CacheLookup, completion: Completion, now: Any) -> None:
        """Keep an answer, under the group that actually served it (a fallback's answer must
        not stand in for the requested group's once that group is back)."""
        if lookup.key is None or self.cache is None or not (completion.content
                                                            or completion.tool_calls):
            return
        answer = CachedAnswer(
            content=completion.content, tool_calls=completion.tool_calls,
            finish_reason=completion.finish_reason, usage=completion.usage,
            cost_micros=completion.cost_micros, model_group=completion.model_group,
            requested_group=completion.requested_group, deployment=completion.deployment,
            provider=completion.provider, model=completion.model,
            request_id=completion.request_id, created_at=now)
        key = (lookup.key if completion.model_group == completion.requested_group else
               cache_key(lookup.scope, completion.model_group, lookup.msgs, lookup.params))
        await self.cache.set(key, answer, self.config.llmgw.cache.ttl_s)
        if (self.semantic is not None and lookup.text
                and completion.model_group == completion.requested_group):
            await self.semantic.add(lookup.scope, completion.model_group, lookup.text,
                                    lookup.fingerprint, key)

    # -- budgets -----------------------------------------------------------------------------

    async def _begin(self, agent_id: Any, project_id: Any, messages: Any, agent_type: Any,
                     model_group: Any, metadata: Any, params: dict[str, Any], *,
                     stream: bool = False) -> tuple[
                         CompletionRequest, Resolution, RequestContext, Any, dict[str, Any],
                         Hold | None]:
        """Steps 1-3 of every call: validate, resolve the group, reserve the budget."""
        request = validate_call(agent_id, project_id, messages, agent_type, model_group, metadata,
                            params)
        route = self.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                    model_group=request.model_group)
        now = self.clock()
        ctx = RequestContext(new_request_id(), request.agent_id, route.agent_type,
                             request.project_id, stream=stream)
        call_params = dict(request.params)
        if call_params.get("tools"):
            # LiteLLM imports its MCP gateway (and the `mcp` package) whenever tools are
            # passed; plain function tools never need it.
            call_params["_skip_mcp_handler"] = True
        self._started[ctx.request_id] = time.perf_counter()
        if self.events.wants("request.started") or self.tracing is not None:
            started = {"request_id": ctx.request_id, "agent_id": ctx.agent_id,
                       "project_id": ctx.project_id, "agent_type": ctx.agent_type,
                       "model_group": route.model_group, "stream": ctx.stream}
            if self.tracing is not None:
                self.tracing.start(started)
            self.events.emit("request.started", started)
        try:
            route, hold = await self._reserve(ctx, route, request, call_params, now)
        except BudgetExceeded:
            raise  # finished by _refuse, after its row
        except BaseException as exc:  # the ledger failed before anything was answered
            self._finished(ctx, [], route, error_class=type(exc).__name__, written=False)
            raise
        return request, route, ctx, now, call_params, hold

    def _current_rules(self) -> list[Rule]:
        if time.monotonic() - self._rules_at > _RULES_TTL_S:
            self._rules = self.budget_store.rules()
            self._rules_at = time.monotonic()
        return self._rules

    def _plan(self, ctx: RequestContext, route: Resolution, request: CompletionRequest,
              params: dict[str, Any], now: Any) -> _BudgetPlan | None:
        """The limits, counters and worst-case amount of a request; None without budgets.
        Sets max_tokens in `params` when the caller gave none, so the hold bounds the call."""
        policy = self.budget_policy
        rules = self._current_rules()
        if not rules and not policy.configured:
            return None
        if self._limits_of is not rules:  # rules reloaded: changed ones void what we know
            if rules != self._limits_of:
                self._limits.clear()
            self._limits_of = rules
        who = (ctx.agent_id, route.agent_type, ctx.project_id)
        found = self._limits.get(who)
        if found is None:
            if len(self._limits) >= 10_000:
                self._limits.clear()
            found = self._limits[who] = (
                policy.limits(agent_id=ctx.agent_id, agent_type=route.agent_type,
                              project_id=ctx.project_id, rules=rules), policy.request_cap(rules))
        limits, cap = found
        if not limits and cap is None:
            return None
        route = self._maybe_downgrade(route, limits, now)
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = params["max_tokens"] = self.config.llmgw.budgets.default_max_tokens
        amount = self.worst_case_micros(route.model_group, request.message_dicts, int(max_tokens),
                                        tools=params.get("tools"),
                                        tool_choice=params.get("tool_choice"))
        keys = [policy.counter_key(limit, now) for limit in limits]
        return _BudgetPlan(route, amount, int(max_tokens), limits, keys, cap)

    async def _reserve(self, ctx: RequestContext, route: Resolution, request: CompletionRequest,
                       params: dict[str, Any], now: Any) -> tuple[Resolution, Hold | None]:
        plan = self._plan(ctx, route, request, params, now)
        if plan is None:
            return route, None
        route, amount, cap = plan.route, plan.amount, plan.cap
        if cap is not None and amount > cap.limit_micros:
            await self._refuse(ctx, route, request, now, cap, 0, 0, amount, None)
        try:
            hold = await self._transact(self.budget_store.reserve_op(
                request_id=ctx.request_id, amount_micros=amount, limits=plan.limits,
                keys=plan.keys, created_at=now, agent_id=ctx.agent_id,
                agent_type=ctx.agent_type, project_id=ctx.project_id,
                model_group=route.model_group))
        except RefusedError as exc:
            r = exc.refusal
            await self._refuse(ctx, route, request, now, r.limit, r.spent_micros,
                               r.reserved_micros, amount, r.period_start)
        return route, hold

    def _maybe_downgrade(self, route: Resolution, limits: list[Limit], now: Any) -> Resolution:
        target = self.budget_policy.downgrade_group(route.agent_type)
        if not target or route.reason == "explicit" or route.model_group == target:
            return route
        keys = {self.budget_policy.counter_key(limit, now): limit for limit in limits}
        for key, (spent, reserved) in self.budget_store.counters(list(keys)).items():
            limit = keys[key]
            if spent + reserved >= limit.limit_micros * limit.warn_ratio:
                why = (f"downgrade: {limit.scope} {limit.scope_id} {limit.period} budget past "
                       f"{limit.warn_ratio:.0%} ({route.model_group} -> {target})")
                return Resolution(target, route.agent_type, why)
        return route

    async def _refuse(self, ctx: RequestContext, route: Resolution, request: CompletionRequest,
                      now: Any, limit: Limit, spent: int, reserved: int, amount: int,
                      period_start: Any) -> None:
        resets = (self.budget_policy.period_end(period_start, limit.period)
                  if period_start is not None else None)
        error = BudgetExceeded(scope=limit.scope, scope_id=limit.scope_id, window=limit.period,
                               spent_micros=spent, reserved_micros=reserved,
                               limit_micros=limit.limit_micros, requested_micros=amount,
                               resets_at=resets)
        refused = Attempt(attempt=1, model_group=route.model_group, status="refused",
                          error_class="BudgetExceeded", error_message=error.message)
        meta = {**request.metadata, "llmgw": {"route": route.reason, "budget": {
            "scope": limit.scope, "scope_id": limit.scope_id, "period": limit.period,
            "limit_micros": limit.limit_micros, "requested_micros": amount}}}
        await self._transact(self.ledger.write_op([usage_row(ctx, refused, ts=now,
                                                             metadata=meta)]))
        self.events.emit("budget.refused", {"request_id": ctx.request_id, "scope": limit.scope,
                                            "scope_id": limit.scope_id, "period": limit.period,
                                            "requested_micros": amount,
                                            "limit_micros": limit.limit_micros})
        self._finished(ctx, [refused], route)
        raise error

    async def _transact(self, op: Callable[[Any], Any]) -> Any:
        """A ledger transaction: committed right away when this request is the only one in
        flight, else batched with the others' (`LedgerStore.transact`)."""
        return await self.ledger.transact(op, alone=len(self._started) <= 1)

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
            cost_micros=cost_micros, provider_details=_provider_details(hidden))
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

    async def _record(self, ctx: RequestContext, attempts: list[Attempt],
                      user_metadata: dict[str, Any], route: Resolution, now: Any,
                      hold: Hold | None, completion: Completion | None = None,
                      saved_micros: int = 0, extra: dict[str, Any] | None = None) -> None:
        """Write the request's rows; with a hold, settle it in the same transaction."""
        for a in attempts:
            if a.deployment and a.status in ("ok", "error"):
                self.stats_collector.record(a.deployment, a.status == "ok", a.latency_ms)
        meta = {**user_metadata, "llmgw": {"requested_group": route.model_group,
                                           "route": route.reason, **(extra or {})}}
        rows = [usage_row(ctx, a, ts=now, metadata=meta, saved_micros=saved_micros)
                for a in attempts]
        try:
            if hold is None:
                await self.ledger.write(rows, alone=len(self._started) <= 1)
                self._finished(ctx, attempts, route, completion, saved_micros)
                return
            spent = sum(a.cost_micros for a in attempts)
            result = await self._transact(self.budget_store.settle_op(
                hold, spent_micros=spent, rows=rows,
                state="settled" if completion else "released"))
        except LedgerError as exc:
            exc.completion = completion  # type: ignore[attr-defined]  # paid for: keep it
            self._finished(ctx, attempts, route, completion, saved_micros, written=False)
            raise
        except Exception as exc:
            error = LedgerError(f"Could not settle the budget and write the ledger rows of "
                                f"request {ctx.request_id}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]}",
                                hint="Check the ledger database; `llmgw db reconcile` settles "
                                     "what was left open.")
            error.completion = completion  # type: ignore[attr-defined]
            self._finished(ctx, attempts, route, completion, saved_micros, written=False)
            raise error from exc
        self._finished(ctx, attempts, route, completion, saved_micros)
        for c in result.crossings:
            self.events.emit("budget.warning", {
                "scope": c.limit.scope, "scope_id": c.limit.scope_id, "period": c.limit.period,
                "period_start": c.key.period_start.isoformat(), "spent_micros": c.spent_micros,
                "limit_micros": c.limit.limit_micros, "warn_ratio": c.limit.warn_ratio})

    def _finished(self, ctx: RequestContext, attempts: list[Attempt], route: Resolution,
                  completion: Completion | None = None, saved_micros: int = 0, *,
                  error_class: str | None = None, written: bool = True) -> None:
        """`fallback` per failed hop, then `request.finished` (once per started request)."""
        started = self._started.pop(ctx.request_id, None)
        if self._freeze_at_first_answer and completion is not None:
            self._freeze_at_first_answer = False
            freeze_once(FIRST_ANSWER)  # the provider modules LiteLLM imported on first use
        events = self.events
        if events.wants("fallback"):
            for failed, then in zip(attempts, attempts[1:]):
                events.emit("fallback", {
                    "request_id": ctx.request_id, "project_id": ctx.project_id,
                    "agent_type": ctx.agent_type, "from_group": failed.model_group,
                    "from_deployment": failed.deployment, "to_group": then.model_group,
                    "to_deployment": then.deployment, "error_class": failed.error_class})
        if not events.wants("request.finished") and self.tracing is None:
            return
        final = attempts[-1] if attempts else None
        finished = {
            "request_id": ctx.request_id, "agent_id": ctx.agent_id,
            "project_id": ctx.project_id, "agent_type": ctx.agent_type,
            "requested_group": route.model_group,
            "model_group": final.model_group if final else route.model_group,
            "deployment": final.deployment if final else None,
            "provider": final.provider if final else None,
            "status": final.status if final else "error",
            "error_class": final.error_class if final else error_class,
            "stream": ctx.stream,
            "duration_s": time.perf_counter() - started if started is not None else 0.0,
            "prompt_tokens": sum(a.usage.prompt_tokens for a in attempts),
            "completion_tokens": sum(a.usage.completion_tokens for a in attempts),
            "cost_micros": sum(a.cost_micros for a in attempts),
            "saved_micros": saved_micros, "attempts": attempts, "ledger_written": written}
        if self.tracing is not None:
            self.tracing.finish(finished)
        events.emit("request.finished", finished)

    def _litellm_metadata(self, ctx: RequestContext) -> dict[str, Any]:
        """What LiteLLM's callbacks see of a request: its id (our attempt recorder), who
        asked, and under tracing the span its own spans go under."""
        metadata = {REQUEST_ID_KEY: ctx.request_id, "agent_id": ctx.agent_id,
                    "project_id": ctx.project_id, "agent_type": ctx.agent_type}
        if self.tracing is not None:
            metadata[PARENT_SPAN_KEY] = self.tracing.parent(ctx.request_id)
        return metadata


class _StreamAccumulator:
    """Turns LiteLLM stream chunks into events and remembers what was said."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def tool_text(self) -> str:
        return "".join(f"{c['function']['name']}{c['function']['arguments']}"
                       for c in self.tool_calls.values())

    def tool_call_list(self) -> list[dict[str, Any]]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]

    def add(self, chunk: Any) -> list[ContentDelta | ToolCallDelta]:
        events: list[ContentDelta | ToolCallDelta] = []
        u = getattr(chunk, "usage", None)
        if u is not None and (getattr(u, "prompt_tokens", 0) or getattr(u, "completion_tokens", 0)):
            self.usage = _usage_of(chunk)
        for choice in getattr(chunk, "choices", None) or []:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self.parts.append(delta.content)
                events.append(ContentDelta(text=delta.content))
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
                events.append(ToolCallDelta(index=index, id=tc.id, name=name, arguments=args))
        return events


def _make_metrics(gateway: LLMGateway) -> Any:
    """The Prometheus exporter when `llmgw.metrics` (or LLMGW_METRICS_PORT) turns it on."""
    settings = gateway.config.llmgw.metrics
    if not settings.enabled:
        return None
    from llmgw.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()
    metrics.attach(gateway)
    metrics.serve(settings.host, settings.port)
    return metrics


def _make_caches(config: Config) -> tuple[Cache | None, Any]:
    from llmgw.cache_backends import make_cache

    settings = config.llmgw.cache
    semantic = None
    if settings.semantic is not None and settings.semantic.enabled:
        from llmgw.semantic import SemanticIndex  # the model itself loads on first use

        semantic = SemanticIndex.from_settings(settings.semantic)
    return make_cache(settings, config.router_settings.router_kwargs().get("redis_url")), semantic


def _usage_of(response: Any) -> Usage:
    u = getattr(response, "usage", None)
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
                 completion_tokens=int(getattr(u, "completion_tokens", 0) or 0),
                 cached_tokens=int(cached or 0))


def _pieces(text: str, size: int = 24) -> list[str]:
    """A cached answer replayed in stream-sized pieces (whole words where possible)."""
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

