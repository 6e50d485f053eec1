"""LLMGateway: the public API and the order of the request pipeline (DESIGN.md section 3).
It orchestrates; each policy lives in the module it calls: validation, agents, planner
(budgets), cache_lookup, router, responses, and lifecycle (the hold, the trace, the rows)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from typing import Any

from llmgw import heap
from llmgw._litellm import SKIP_MCP_HANDLER
from llmgw.agents import AgentDirectory
from llmgw.budgets import BudgetPolicy
from llmgw.cache import Cache
from llmgw.cache.lookup import CacheLookup, CacheStep
from llmgw.config import Config, load_config
from llmgw.ids import new_request_id
from llmgw.ledger.budget_store import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.store import LedgerStore, RequestContext, utcnow
from llmgw.lifecycle import RequestLifecycle
from llmgw.observe.events import EventBus, Handler
from llmgw.observe.health import DeploymentHealth, DeploymentStats, StatsCollector, probe
from llmgw.observe.metrics import PrometheusMetrics
from llmgw.observe.tracing import PARENT_SPAN_KEY, make_tracing
from llmgw.planner import BudgetPlanner
from llmgw.redact import Redactor, install_log_filter
from llmgw.responses import (
    StreamAccumulator,
    cached_completion,
    completion_of,
    replay,
    stream_completion,
)
from llmgw.router import REQUEST_ID_KEY, build_router, classify, map_exception, provider_message
from llmgw.router import recorder as attempt_recorder
from llmgw.types import (
    Completion,
    CompletionRequest,
    CostEstimate,
    Message,
    StreamDone,
    StreamError,
    StreamEvent,
)
from llmgw.validation import validate_call, validate_id


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
        self.planner = BudgetPlanner(self.config, self.budget_policy, self.budget_store,
                                     self.ledger)
        self.router = build_router(self.config, self.redactor)
        self._recorder = attempt_recorder()
        self.stats_collector = StatsCollector()
        self._cache = CacheStep.from_config(self.config)
        self._open_streams: set[asyncio.Event] = set()
        self._started: dict[str, float] = {}  # request_id -> perf_counter, until finished
        self._finishing: set[asyncio.Future[Any]] = set()  # lifecycle writes in flight
        self._idle_waiters: list[asyncio.Future[None]] = []  # drain(): until _started empties
        self.metrics = PrometheusMetrics.from_settings(self.config.llmgw.metrics, self.events)
        # OpenTelemetry: `llmgw.otel`, or the caller's own provider (llmgw.observe.tracing)
        self.tracing = make_tracing(self.config.llmgw.otel, tracer_provider)
        self.reconcile()
        self._freeze_at_first_answer = heap.wanted(self.config.llmgw.gc_freeze)
        if self._freeze_at_first_answer:
            heap.freeze_once(heap.STARTUP)

    # -- public API --------------------------------------------------------------------------

    def register_agent(self, agent_id: str, agent_type: str) -> None:
        """Remember an agent's type; its later calls route by it without passing agent_type."""
        self.agents.register(validate_id("agent_id", agent_id),
                             validate_id("agent_type", agent_type))

    def on(self, event: str, handler: Handler) -> None:
        """Subscribe to an event: request.started / request.finished, fallback, cache.hit,
        budget.warning, budget.refused (payloads: `llmgw.observe.events`)."""
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
        request, life, call_params = self._begin(agent_id, project_id, messages, agent_type,
                                                 model_group, metadata, params, stream=False)
        async with life:
            await self._reserve(life, request, call_params)
            lookup = await self._cache.lookup(request, life.route, life.ctx.project_id,
                                              call_params, use=cache, stream=False)
            if lookup.hit is not None:
                return await self._serve_cached(life, lookup)
            life.open_trace()
            try:
                response = await self.router.acompletion(
                    model=life.route.model_group, messages=_provider_copy(request),
                    metadata=self._litellm_metadata(life.ctx), **call_params)
            except Exception as exc:
                raise await life.fail(exc) from None
            completion = completion_of(response, life.close_trace(), life.route,
                                       life.ctx.request_id, life.started, self.config)
            await life.finish(completion.attempts, completion=completion)
        await self._cache.store(lookup, completion, life.now)
        return completion

    async def stream(self, agent_id: str, project_id: str, messages: list[dict[str, Any]],
                     **kwargs: Any) -> AsyncGenerator[StreamEvent, None]:
        """`complete` as a stream of events: `ContentDelta`s, `ToolCallDelta`s, then one
        `StreamDone` (usage, cost, deployment, request_id).

        A failure before the first token falls back like `complete` (or raises its typed
        error); after it, the stream ends with a `StreamError` and no repeated text. A stream
        cut off (the provider drops it, or the caller stops iterating or is cancelled) is
        recorded as a `partial` row with the tokens generated so far, and settled;
        `drain()` / `aclose()` wait for that."""
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

    async def _stream(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                      agent_type: str | None = None, model_group: str | None = None,
                      metadata: dict[str, Any] | None = None, cache: bool = True,
                      **params: Any) -> AsyncGenerator[StreamEvent, None]:
        request, life, call_params = self._begin(agent_id, project_id, messages, agent_type,
                                                 model_group, metadata, params, stream=True)
        async with life:
            await self._reserve(life, request, call_params)
            lookup = await self._cache.lookup(request, life.route, life.ctx.project_id,
                                              call_params, use=cache, stream=True)
            if lookup.hit is not None:  # replay the cached answer as a stream
                cached = await self._serve_cached(life, lookup)
                for event in replay(cached):
                    yield event
                yield StreamDone(completion=cached)
                return
            life.open_trace()
            msgs = _provider_copy(request)
            try:
                response = await self.router.acompletion(
                    model=life.route.model_group, messages=msgs, stream=True,
                    stream_options={"include_usage": True},
                    metadata=self._litellm_metadata(life.ctx), **call_params)
            except Exception as exc:
                raise await life.fail(exc) from None
            acc = StreamAccumulator(life.ctx.request_id)
            try:
                async for chunk in response:
                    for event in acc.add(chunk):
                        yield event
            except Exception as exc:
                if acc.empty:  # nothing shown yet: a plain failure
                    raise await life.fail(exc) from None
                trace = life.close_trace()
                partial = stream_completion(response, acc, trace, life.route, life.ctx, msgs,
                                            life.started, self.config, self.redactor,
                                            status="partial", error=exc)
                await life.finish(partial.attempts, completion=partial)
                yield StreamError(
                    error_class=classify(exc).__name__,
                    message=provider_message(exc, self.redactor), partial=partial,
                    error=map_exception(exc, trace=trace, model_group=life.route.model_group,
                                        redactor=self.redactor, config=self.config))
                return
            except BaseException:  # the caller stopped reading, or was cancelled
                partial = stream_completion(response, acc, life.close_trace(), life.route,
                                            life.ctx, msgs, life.started, self.config,
                                            self.redactor, status="partial", error=None)
                try:
                    await life.finish(partial.attempts, completion=partial)
                finally:
                    with contextlib.suppress(Exception):
                        await response.aclose()
                raise
            done = stream_completion(response, acc, life.close_trace(), life.route, life.ctx,
                                     msgs, life.started, self.config, self.redactor,
                                     status="ok", error=None)
            await life.finish(done.attempts, completion=done)
        await self._cache.store(lookup, done, life.now)
        yield StreamDone(completion=done)

    async def estimate(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       **params: Any) -> CostEstimate:
        """What `complete` would cost and which budgets it would hit; reserves nothing and
        calls no provider. `worst_case_micros` is exactly what `complete` would reserve."""
        request = validate_call(agent_id, project_id, messages, agent_type, model_group, None,
                                params)
        route = self.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                    model_group=request.model_group)
        ctx = RequestContext("estimate", request.agent_id, route.agent_type, request.project_id)
        return await self.planner.estimate(ctx, route, request, dict(request.params),
                                           self.clock())

    def complete_sync(self, agent_id: str, project_id: str, messages: list[dict[str, Any]],
                      **kwargs: Any) -> Completion:
        """`complete` for scripts without an event loop."""
        async def answer() -> Completion:
            completion = await self.complete(agent_id, project_id, messages, **kwargs)
            if self.tracing is not None:  # LiteLLM's span ends in a task of this loop
                await self.tracing.litellm_logged()
            return completion
        return asyncio.run(answer())

    def worst_case_micros(self, model_group: str, messages: list[Message] | list[dict[str, Any]],
                          max_tokens: int, *, tools: list[dict[str, Any]] | None = None,
                          tool_choice: Any = None) -> int:
        """The most a call can cost, across the group and every group it can reach
        (`BudgetPlanner.worst_case_micros`)."""
        return self.planner.worst_case_micros(model_group, messages, max_tokens, tools=tools,
                                              tool_choice=tool_choice)

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

    async def drain(self) -> None:
        """Wait until every request in flight has ended, and its rows are written and its hold
        settled (streams their callers abandoned included): for a graceful shutdown."""
        loop = asyncio.get_running_loop()
        while True:
            if self._open_streams:
                await next(iter(self._open_streams)).wait()
            elif pending := [t for t in self._finishing if t.get_loop() is loop]:
                await asyncio.wait(pending)
            elif self._started:
                idle = loop.create_future()
                self._idle_waiters.append(idle)
                await idle
            else:
                return

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
        await self._cache.aclose()
        if self._recorder.gate is not None:  # rate-limit slots still being given back
            await self._recorder.gate.settle()
        self.close()

    async def __aenter__(self) -> LLMGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def cache(self) -> Cache | None:
        """The exact answer cache (None when off)."""
        return self._cache.cache

    @cache.setter
    def cache(self, cache: Cache | None) -> None:
        self._cache.cache = cache

    @property
    def semantic(self) -> Any:
        """The semantic index over the cache (None when off)."""
        return self._cache.semantic

    @semantic.setter
    def semantic(self, index: Any) -> None:
        self._cache.semantic = index

    # -- the pipeline's steps ----------------------------------------------------------------

    def _begin(self, agent_id: Any, project_id: Any, messages: Any, agent_type: Any,
               model_group: Any, metadata: Any, params: dict[str, Any], *,
               stream: bool) -> tuple[CompletionRequest, RequestLifecycle, dict[str, Any]]:
        """Steps 1-2: validate (nothing is written for bad input) and resolve the group;
        the request's lifecycle starts here."""
        request = validate_call(agent_id, project_id, messages, agent_type, model_group,
                                metadata, params)
        route = self.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                    model_group=request.model_group)
        ctx = RequestContext(new_request_id(), request.agent_id, route.agent_type,
                             request.project_id, stream=stream)
        call_params = dict(request.params)
        if call_params.get("tools"):
            # LiteLLM imports its MCP gateway (and the `mcp` package) whenever tools are
            # passed; plain function tools never need it.
            call_params[SKIP_MCP_HANDLER] = True
        return request, RequestLifecycle(self, ctx, route, request.metadata,
                                         self.clock()), call_params

    async def _reserve(self, life: RequestLifecycle, request: CompletionRequest,
                       params: dict[str, Any]) -> None:
        """Step 3: hold the worst case against every budget that applies (or refuse)."""
        plan = await self.planner.plan(life.ctx, life.route, request, params, life.now)
        if plan is not None:
            await life.reserve(plan)

    async def _serve_cached(self, life: RequestLifecycle, lookup: CacheLookup) -> Completion:
        """A hit: a `cached` row at cost 0 saving what the answer first cost; hold released."""
        hit = lookup.hit
        assert hit is not None
        completion = cached_completion(hit, life.route, life.ctx.request_id, life.started)
        extra: dict[str, Any] = {"cache": {"first_request_id": hit.request_id,
                                           "scope": lookup.scope}}
        if lookup.similarity is not None:
            extra["cache"]["similarity"] = round(lookup.similarity, 4)
        if self.events.wants("cache.hit"):
            self.events.emit("cache.hit", {
                "request_id": life.ctx.request_id, "project_id": life.ctx.project_id,
                "agent_type": life.ctx.agent_type, "model_group": hit.model_group,
                "scope": lookup.scope, "similarity": lookup.similarity,
                "saved_micros": hit.cost_micros})
        await life.finish(completion.attempts, completion=completion,
                          saved_micros=hit.cost_micros, extra=extra)
        return completion

    def _litellm_metadata(self, ctx: RequestContext) -> dict[str, Any]:
        """What LiteLLM's callbacks see of a request: its id (our attempt recorder), who
        asked, and under tracing the span its own spans go under."""
        metadata = {REQUEST_ID_KEY: ctx.request_id, "agent_id": ctx.agent_id,
                    "project_id": ctx.project_id, "agent_type": ctx.agent_type}
        if self.tracing is not None:
            metadata[PARENT_SPAN_KEY] = self.tracing.parent(ctx.request_id)
        return metadata

    def _request_ended(self) -> None:
        """A lifecycle ended: wake `drain()` once nothing is in flight."""
        if not self._started and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    with contextlib.suppress(RuntimeError):  # its loop has closed
                        waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    def _track(self, task: asyncio.Future[Any]) -> None:
        """Keep a lifecycle write until it is done (`drain` waits for it)."""
        self._finishing.add(task)
        task.add_done_callback(_untrack(self._finishing))


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _untrack(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # its caller saw it, or was cancelled: either way, no warning
    return done


def _provider_copy(request: CompletionRequest) -> list[dict[str, Any]]:
    """The messages for LiteLLM, a copy of their own (providers may change what they get):
    a message of plain strings as a new dict, anything nested copied whole."""
    return [dict(m) if all(type(v) is str for v in m.values()) else copy.deepcopy(m)
            for m in request.message_dicts]
