"""LLMGateway: the public API and the order of the request pipeline (docs/architecture.md).
It orchestrates; each policy lives in the module it calls: validation, agents, planner
(budgets), cache lookup, router, completions, conversations (stored responses) and lifecycle
(the hold, the trace, the rows)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from llmgw import heap
from llmgw._litellm import SKIP_MCP_HANDLER
from llmgw._litellm.messages import (
    install_passthrough,
    install_translation_guard,
    use_chat_completions_for_translation,
)
from llmgw._litellm.responses_api import install_tool_guard
from llmgw.budgets.planner import BudgetPlanner
from llmgw.budgets.rates import warn_input_rate_fallbacks
from llmgw.budgets.rules import BudgetPolicy
from llmgw.cache import Cache
from llmgw.cache.lookup import CacheLookup, CacheStep
from llmgw.config.agents import AgentDirectory
from llmgw.config.loading import load_config
from llmgw.config.models import Config
from llmgw.dialects.anthropic import MESSAGES, messages_call
from llmgw.dialects.base import Call, Dialect, Served
from llmgw.dialects.chat import CHAT, chat_call
from llmgw.dialects.responses import (
    RESPONSES,
    check_responses_body,
    continued,
    input_items,
    responses_call,
)
from llmgw.errors import InvalidRequest, LedgerError, UnknownModelGroup
from llmgw.ids import new_request_id
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.store import LedgerStore, usage_row, utcnow
from llmgw.observe.events import EventBus, Handler
from llmgw.observe.health import DeploymentHealth, DeploymentStats, StatsCollector, probe
from llmgw.observe.metrics import PrometheusMetrics
from llmgw.observe.tracing import PARENT_SPAN_KEY, make_tracing
from llmgw.pipeline.completions import cached_completion
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.conversations import Conversations
from llmgw.pipeline.lifecycle import FirstAnswerFreeze, PipelineServices, RequestLifecycle
from llmgw.pipeline.validation import group_of, validate_call, validate_id, validate_optional_id
from llmgw.redact import Redactor, install_log_filter
from llmgw.routing.errors import classify, map_exception, provider_message
from llmgw.routing.recorder import REQUEST_ID_KEY
from llmgw.routing.recorder import recorder as attempt_recorder
from llmgw.routing.router import build_router
from llmgw.types import (
    Attempt,
    Completion,
    CostEstimate,
    Message,
    StreamDone,
    StreamError,
    StreamEvent,
)

log = logging.getLogger("llmgw.gateway")


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
        warn_input_rate_fallbacks(self.config.model_list)
        use_chat_completions_for_translation()
        install_passthrough()
        install_translation_guard()
        install_tool_guard(REQUEST_ID_KEY)
        self.conversations = Conversations(self.ledger, self.clock,
                                           self.config.llmgw.responses.retention_days)
        self._recorder = attempt_recorder(self.router)
        self.stats_collector = StatsCollector()
        self._cache = CacheStep.from_config(self.config)
        self._open_streams: set[asyncio.Event] = set()
        self.metrics = PrometheusMetrics.from_settings(self.config.llmgw.metrics, self.events)
        # OpenTelemetry: `llmgw.otel`, or the caller's own provider (llmgw.observe.tracing)
        self.tracing = make_tracing(self.config.llmgw.otel, tracer_provider)
        self.reconcile()
        freeze = FirstAnswerFreeze(heap.wanted(self.config.llmgw.gc_freeze))
        if freeze.due:
            heap.freeze_once(heap.STARTUP)
        self._services = PipelineServices(
            config=self.config, events=self.events, ledger=self.ledger,
            budget_store=self.budget_store, budget_policy=self.budget_policy,
            recorder=self._recorder, stats=self.stats_collector, router=self.router,
            redactor=self.redactor, tracing=self.tracing, freeze=freeze)

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
        settled = self.budget_store.reconcile(now=self.clock(), older_than=timedelta(seconds=age))
        self.conversations.store.purge(self.clock())  # stored responses past retention
        return settled

    async def complete(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       metadata: dict[str, Any] | None = None, cache: bool = True,
                       session_id: str | None = None, end_user: str | None = None,
                       **params: Any) -> Completion:
        """Answer `messages` for an agent of a project through its model group.

        `cache=False` skips the answer cache for this call; `session_id` names the agent run
        (its rows carry it), `end_user` whom the agent acts for. Raises `InvalidRequest`
        (nothing recorded), `UnknownModelGroup`, `BudgetExceeded` (a `refused` row, no
        provider called), or a `ProviderError` subclass after every attempt was recorded."""
        call = chat_call(validate_call(agent_id, project_id, messages, agent_type, model_group,
                                       metadata, params))
        return await self._answer(CHAT, call, _who(session_id, end_user), cache=cache)

    async def anthropic_messages(self, agent_id: str, project_id: str, body: dict[str, Any], *,
                                 agent_type: str | None = None, model_group: str | None = None,
                                 metadata: dict[str, Any] | None = None, cache: bool = True,
                                 session_id: str | None = None, end_user: str | None = None,
                                 headers: dict[str, str] | None = None,
                                 **llmgw_params: Any) -> Completion:
        """An Anthropic Messages request (`body` as the Messages API takes it: model, messages,
        max_tokens, system, tools, thinking, ...) through `Router.aanthropic_messages`: a
        native pass-through to Anthropic deployments, LiteLLM's translation for the others.
        The answer's `body` is the Anthropic message. `body["model"]` is a group, an alias or
        `auto` (the agent type's group) unless `model_group` names one; `headers` may carry
        `anthropic-beta`. Budgets, cache, rows and errors as for `complete`."""
        call, stream = self._messages_call(agent_id, project_id, body, agent_type, model_group,
                                           metadata, headers, llmgw_params)
        if stream:
            raise InvalidRequest("`stream: true` is for anthropic_messages_stream().",
                                 hint="Call anthropic_messages_stream() to stream.")
        return await self._answer(MESSAGES, call, _who(session_id, end_user), cache=cache)

    async def anthropic_messages_stream(
            self, agent_id: str, project_id: str, body: dict[str, Any], *,
            agent_type: str | None = None, model_group: str | None = None,
            metadata: dict[str, Any] | None = None, cache: bool = True,
            session_id: str | None = None, end_user: str | None = None,
            headers: dict[str, str] | None = None,
            **llmgw_params: Any) -> AsyncGenerator[StreamEvent, None]:
        """`anthropic_messages` as a stream: every server-sent event as a `WireEvent` (on an
        Anthropic deployment, the bytes Anthropic sent), then one `StreamDone`; a stream that
        breaks after its first event ends with a `StreamError`, as `stream()` does."""
        call, _ = self._messages_call(agent_id, project_id, {**body, "stream": True},
                                      agent_type, model_group, metadata, headers, llmgw_params)
        async for event in self._tracked_stream(MESSAGES, call, _who(session_id, end_user),
                                                cache=cache):
            yield event

    async def responses(self, agent_id: str, project_id: str, body: dict[str, Any], *,
                        agent_type: str | None = None, model_group: str | None = None,
                        metadata: dict[str, Any] | None = None, cache: bool = True,
                        session_id: str | None = None, end_user: str | None = None,
                        **llmgw_params: Any) -> Completion:
        """An OpenAI Responses request (`body` as the Responses API takes it: model, input,
        instructions, tools, reasoning, store, previous_response_id, ...) through
        `Router.aresponses`: native for OpenAI deployments, LiteLLM's chat bridge for the
        others. The answer's `body` is the response object. With `store` on (the default) the
        response is kept for this project, so a later `previous_response_id` continues it on
        any deployment; another project's id is `UnknownResponse`."""
        call, input_items, store = await self._responses_call(
            agent_id, project_id, body, agent_type, model_group, metadata, llmgw_params)
        if body.get("stream"):
            raise InvalidRequest("`stream: true` is for responses_stream().",
                                 hint="Call responses_stream() to stream.")
        completion = await self._answer(RESPONSES, call, _who(session_id, end_user), cache=cache)
        if body.get("previous_response_id") and completion.body is not None:
            completion.body["previous_response_id"] = body["previous_response_id"]
        if store:
            await self.conversations.keep(call.agent_id, call.project_id, completion, input_items)
        return completion

    async def responses_stream(
            self, agent_id: str, project_id: str, body: dict[str, Any], *,
            agent_type: str | None = None, model_group: str | None = None,
            metadata: dict[str, Any] | None = None, cache: bool = True,
            session_id: str | None = None, end_user: str | None = None,
            **llmgw_params: Any) -> AsyncGenerator[StreamEvent, None]:
        """`responses` as a stream: each server-sent event as a `WireEvent`, then one
        `StreamDone` (the response is stored before it, when `store` is on)."""
        call, input_items, store = await self._responses_call(
            agent_id, project_id, {**body, "stream": True}, agent_type, model_group, metadata,
            llmgw_params)
        previous = body.get("previous_response_id")
        async for event in self._tracked_stream(RESPONSES, call, _who(session_id, end_user),
                                                cache=cache):
            if previous:
                event = continued(event, previous)
            if isinstance(event, StreamDone) and store:
                await self.conversations.keep(call.agent_id, call.project_id, event.completion,
                                              input_items)
            yield event

    async def stored_response(self, project_id: str, response_id: str) -> dict[str, Any]:
        """A response this project stored (`GET /v1/responses/{id}`); `UnknownResponse` for
        any other id, another project's included."""
        found = await self.conversations.find(validate_id("project_id", project_id),
                                              response_id)
        return found.response

    async def stream(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                     agent_type: str | None = None, model_group: str | None = None,
                     metadata: dict[str, Any] | None = None, cache: bool = True,
                     session_id: str | None = None, end_user: str | None = None,
                     **params: Any) -> AsyncGenerator[StreamEvent, None]:
        """`complete` as a stream of events: `ContentDelta`s, `ToolCallDelta`s, then one
        `StreamDone` (usage, cost, deployment, request_id).

        A failure before the first token falls back like `complete` (or raises its typed
        error); after it, the stream ends with a `StreamError` and no repeated text. A stream
        cut off (the provider drops it, or the caller stops iterating or is cancelled) is
        recorded as a `partial` row with the tokens generated so far, and settled;
        `drain()` / `aclose()` wait for that."""
        call = chat_call(validate_call(agent_id, project_id, messages, agent_type, model_group,
                                       metadata, params))
        async for event in self._tracked_stream(CHAT, call, _who(session_id, end_user),
                                                cache=cache):
            yield event

    async def estimate(self, agent_id: str, project_id: str, messages: list[dict[str, Any]], *,
                       agent_type: str | None = None, model_group: str | None = None,
                       **params: Any) -> CostEstimate:
        """What `complete` would cost and which budgets it would hit; reserves nothing and
        calls no provider. `worst_case_micros` is exactly what `complete` would reserve."""
        call = chat_call(validate_call(agent_id, project_id, messages, agent_type, model_group,
                                       None, params))
        route = self.agents.resolve(call.agent_id, agent_type=call.agent_type,
                                    model_group=call.model_group)
        ctx = RequestContext("estimate", call.agent_id, route.agent_type, call.project_id)
        return await self.planner.estimate(ctx, route, call, {**call.params, **call.constraints},
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

    async def record_refusal(self, agent_id: str, project_id: str, *, error_class: str,
                             message: str, model_group: str | None = None,
                             agent_type: str | None = None, session_id: str | None = None,
                             end_user: str | None = None, dialect: str = "chat",
                             stream: bool = False, metadata: dict[str, Any] | None = None) -> str:
        """Write a `refused` row for a request a front refused before the pipeline (an API
        key's rate limit, say); no provider is called, nothing is held. Returns its request
        id. The lifecycle's `refuse` is the budget's (a hold, BudgetExceeded): not this."""
        try:
            route = self.agents.resolve(agent_id, agent_type=agent_type, model_group=model_group)
            group, resolved_type, requested = route.model_group, route.agent_type, route.requested_model
        except UnknownModelGroup:  # the row keeps what was asked for
            group = model_group or self.config.llmgw.default_group
            resolved_type, requested = agent_type, model_group
        ctx = RequestContext(new_request_id(), agent_id, resolved_type, project_id, stream=stream,
                             session_id=session_id, end_user=end_user, requested_model=requested,
                             dialect=dialect)
        refused = Attempt(attempt=1, model_group=group, status="refused", error_class=error_class,
                          error_message=message)
        row = usage_row(ctx, refused, ts=self.clock(), metadata=metadata)
        await self.ledger.transact(self.ledger.write_op([row]))
        return ctx.request_id

    async def drain(self) -> None:
        """Wait until every request in flight has ended, and its rows are written and its hold
        settled (streams their callers abandoned included): for a graceful shutdown."""
        loop = asyncio.get_running_loop()
        inflight = self._services.inflight
        while True:
            if self._open_streams:
                await next(iter(self._open_streams)).wait()
            elif pending := [t for t in inflight.finishing if t.get_loop() is loop]:
                await asyncio.wait(pending)
            elif inflight.started:
                await inflight.wait_idle()
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

    def _messages_call(self, agent_id: Any, project_id: Any, body: Any, agent_type: Any,
                       model_group: Any, metadata: Any, headers: Any,
                       llmgw_params: dict[str, Any]) -> tuple[Call, bool]:
        if not isinstance(body, dict):
            raise InvalidRequest("The Messages request must be a JSON object (a dict).")
        # Ids, metadata and llmgw's own parameters, checked as `complete` checks them; the
        # messages are the dialect's (`messages_call`), so a placeholder stands in here.
        base = validate_call(agent_id, project_id, [{"role": "user", "content": "-"}],
                             agent_type, model_group, metadata, dict(llmgw_params))
        return messages_call(base.agent_id, base.project_id, body, agent_type=base.agent_type,
                             model_group=base.model_group or group_of(body.get("model")),
                             metadata=base.metadata, headers=headers,
                             llmgw_params=base.params)

    async def _responses_call(self, agent_id: Any, project_id: Any, body: Any, agent_type: Any,
                              model_group: Any, metadata: Any,
                              llmgw_params: dict[str, Any]) -> tuple[Call, list[Any], bool]:
        """Step 1 for a Responses request: checked, and its history expanded from the stored
        response it continues (this project's only). Returns the call, the conversation's
        input items, and whether its answer is to be stored."""
        if not isinstance(body, dict):
            raise InvalidRequest("The Responses request must be a JSON object (a dict).")
        base = validate_call(agent_id, project_id, [{"role": "user", "content": "-"}],
                             agent_type, model_group, metadata, dict(llmgw_params))
        request = check_responses_body(body)
        items = input_items(request.input)
        if request.previous_response_id:
            items = [*await self.conversations.history(base.project_id,
                                                       request.previous_response_id), *items]
        expanded = {**body, "input": items}
        expanded.pop("previous_response_id", None)
        call = responses_call(base.agent_id, base.project_id, expanded,
                              agent_type=base.agent_type,
                              model_group=base.model_group or group_of(body.get("model")),
                              metadata=base.metadata,
                              default_max_tokens=self.config.llmgw.budgets.default_max_tokens,
                              llmgw_params=base.params)
        return call, items, request.store is not False

    def _begin(self, dialect: Dialect, call: Call, who: _Who, *,
               stream: bool) -> tuple[RequestLifecycle, dict[str, Any]]:
        """Step 2: resolve the group (validation was step 1: nothing is written for bad
        input); the request's lifecycle starts here. Returns it with what the Router call
        carries besides the request itself."""
        route = self.agents.resolve(call.agent_id, agent_type=call.agent_type,
                                    model_group=call.model_group)
        ctx = RequestContext(new_request_id(), call.agent_id, route.agent_type, call.project_id,
                             stream=stream, session_id=who.session_id, end_user=who.end_user,
                             requested_model=route.requested_model, dialect=dialect.name)
        extras: dict[str, Any] = {}
        if call.params.get("tools"):
            # LiteLLM imports its MCP gateway (and the `mcp` package) whenever tools are
            # passed; plain function tools never need it.
            extras[SKIP_MCP_HANDLER] = True
        return RequestLifecycle(self._services, ctx, route, call.metadata, self.clock()), extras

    async def _answer(self, dialect: Dialect, call: Call, who: _Who, *, cache: bool) -> Completion:
        """Steps 2-8 of one request that is answered whole."""
        life, extras = self._begin(dialect, call, who, stream=False)
        async with life:
            lookup = await self._cache.lookup(call, life.group_choice, life.ctx.project_id,
                                              dialect.name, use=cache, stream=False)
            if lookup.hit is not None:  # free: served before any budget is asked
                return await self._serve_cached(life, lookup)
            await self._reserve(life, call, extras)
            life.open_trace()
            try:
                response = await dialect.send(self.router, life.group_choice.model_group, call, extras,
                                              self._litellm_metadata(life.ctx), stream=False)
            except Exception as exc:
                raise await life.fail(exc) from None
            completion = dialect.answer(response, self._served(life))
            await life.finish(completion.attempts, completion=completion)
        await self._cache.store(lookup, completion, life.now)
        return completion

    async def _tracked_stream(self, dialect: Dialect, call: Call, who: _Who, *,
                              cache: bool) -> AsyncGenerator[StreamEvent, None]:
        """A stream `drain()` knows of until it has settled, however its caller leaves it."""
        finished = asyncio.Event()
        self._open_streams.add(finished)
        inner = self._stream(dialect, call, who, cache=cache)
        try:
            async for event in inner:
                yield event
        finally:
            try:
                await inner.aclose()
            finally:
                finished.set()
                self._open_streams.discard(finished)

    async def _stream(self, dialect: Dialect, call: Call, who: _Who, *,
                      cache: bool) -> AsyncGenerator[StreamEvent, None]:
        """Steps 2-8 of one streamed request."""
        life, extras = self._begin(dialect, call, who, stream=True)
        async with life:
            lookup = await self._cache.lookup(call, life.group_choice, life.ctx.project_id,
                                              dialect.name, use=cache, stream=True)
            if lookup.hit is not None:  # replay the cached answer as a stream
                cached = await self._serve_cached(life, lookup)
                for event in dialect.replay(cached):
                    yield event
                yield StreamDone(completion=cached)
                return
            await self._reserve(life, call, extras)
            life.open_trace()
            try:
                response = await dialect.send(self.router, life.group_choice.model_group, call, extras,
                                              self._litellm_metadata(life.ctx), stream=True)
            except Exception as exc:
                raise await life.fail(exc) from None
            acc = dialect.accumulator(call, life.ctx.request_id)
            try:
                async for chunk in response:
                    for event in acc.add(chunk):
                        yield event
            except Exception as exc:
                if acc.empty:  # nothing shown yet: a plain failure
                    raise await life.fail(exc) from None
                served = self._served(life)
                partial = acc.completion(response, served, self.redactor, status="partial",
                                         error=exc)
                await life.finish(partial.attempts, completion=partial)
                yield StreamError(
                    error_class=classify(exc).__name__,
                    message=provider_message(exc, self.redactor), partial=partial,
                    error=map_exception(exc, trace=served.trace,
                                        model_group=life.group_choice.model_group,
                                        redactor=self.redactor, config=self.config))
                return
            except BaseException:  # the caller stopped reading, or was cancelled
                partial = acc.completion(response, self._served(life), self.redactor,
                                         status="partial", error=None)
                try:
                    await life.finish(partial.attempts, completion=partial)
                finally:
                    with contextlib.suppress(Exception):
                        await response.aclose()
                raise
            done = acc.completion(response, self._served(life), self.redactor, status="ok",
                                  error=None)
            try:
                await life.finish(done.attempts, completion=done)
            except LedgerError as exc:  # shown, but not recorded: the stream ends typed
                yield StreamError(error_class="LedgerError", message=exc.message,
                                  partial=done, error=exc)
                return
        await self._cache.store(lookup, done, life.now)
        yield StreamDone(completion=done)

    def _served(self, life: RequestLifecycle) -> Served:
        return Served(life.close_trace(), life.group_choice, life.ctx, life.started, self.config)

    async def _reserve(self, life: RequestLifecycle, call: Call, extras: dict[str, Any]) -> None:
        """Step 3: hold the worst case against every budget that applies (or refuse); what
        the plan needs the call to carry joins `extras`."""
        plan = await self.planner.plan(life.ctx, life.group_choice, call,
                                       {**call.params, **call.constraints}, life.now)
        if plan is not None:
            extras.update(plan.call_params)
            await life.reserve(plan)

    async def _serve_cached(self, life: RequestLifecycle, lookup: CacheLookup) -> Completion:
        """A hit: a `cached` row at cost 0 saving what the answer first cost; nothing held."""
        hit = lookup.hit
        assert hit is not None
        completion = cached_completion(hit, life.group_choice, life.ctx.request_id, life.started)
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

    @property
    def _started(self) -> dict[str, float]:
        """The requests in flight (request_id -> perf_counter at start)."""
        return self._services.inflight.started


@dataclass(frozen=True, slots=True)
class _Who:
    session_id: str | None = None
    end_user: str | None = None


def _who(session_id: Any, end_user: Any) -> _Who:
    return _Who(validate_optional_id("session_id", session_id),
                validate_optional_id("end_user", end_user))
