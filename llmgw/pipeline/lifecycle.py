"""One request from start to finish ("the lifecycle rule", docs/architecture.md).

A `RequestLifecycle` owns a request's budget hold, its attempt trace and its started entry.
Every request ends in exactly one settle or release, one set of ledger rows and one
`request.finished`, whatever ends it: a return, an error, a cancellation, a stream its caller
closed, a timeout. Its writes run to their end whatever happens to the caller: the ledger's
own futures (or, on the rare paths, a task), shielded from the caller's cancellation and
tracked by the gateway, so `drain()` / `aclose()` wait for them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from llmgw.budgets.planner import BudgetPlan
from llmgw.budgets.rules import BudgetPolicy, Limit
from llmgw.config.agents import Resolution
from llmgw.config.models import Config
from llmgw.errors import BudgetExceeded, LedgerError, ProviderError
from llmgw.heap import FIRST_ANSWER, freeze_once
from llmgw.ledger.budgets import BudgetStore, Hold, RefusedError, SettleResult
from llmgw.ledger.ops import Op
from llmgw.ledger.store import LedgerStore, usage_row, write_failed
from llmgw.observe.events import EventBus
from llmgw.observe.health import StatsCollector
from llmgw.pipeline.completions import since_ms
from llmgw.pipeline.context import RequestContext
from llmgw.redact import Redactor
from llmgw.routing.constraints import RoutePlan
from llmgw.routing.errors import classify, map_exception, provider_message, status_code_of
from llmgw.routing.recorder import AttemptRecorder, RequestTrace
from llmgw.routing.router import count_stream_failure
from llmgw.types import Attempt, Completion

log = logging.getLogger("llmgw.pipeline.lifecycle")

# A partial stream's end that is not the provider's fault
_NOT_PROVIDER_FAILURES = (None, "StreamClosed", "Cancelled")


class InFlight:
    """The requests a gateway has started and not finished, and the writes they left running:
    what `LLMGateway.drain()` waits for."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # request_id -> perf_counter, until finished
        self.finishing: set[asyncio.Future[Any]] = set()  # lifecycle writes in flight
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def alone(self) -> bool:
        """At most one request in flight (the ledger commits it without waiting for company)."""
        return len(self.started) <= 1

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep a lifecycle write until it is done (`drain` waits for it)."""
        self.finishing.add(task)
        task.add_done_callback(_untrack(self.finishing))

    def ended(self, request_id: str) -> float | None:
        """A request ended: its start time (None if it had already ended); wakes `wait_idle`
        once nothing is in flight."""
        started = self.started.pop(request_id, None)
        if started is not None and not self.started and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    with contextlib.suppress(RuntimeError):  # its loop has closed
                        waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        return started

    async def wait_idle(self) -> None:
        idle = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(idle)
        await idle


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _untrack(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # its caller saw it, or was cancelled: either way, no warning
    return done


@dataclass
class FirstAnswerFreeze:
    """Freeze the heap once, at the first answer (llmgw.heap), when the gateway wants it."""

    due: bool

    def answered(self) -> None:
        if self.due:
            self.due = False
            freeze_once(FIRST_ANSWER)  # the provider modules LiteLLM imported on first use


@dataclass
class PipelineServices:
    """What a request's lifecycle works with; the gateway makes one and hands it to each."""

    config: Config
    events: EventBus
    ledger: LedgerStore
    budget_store: BudgetStore
    budget_policy: BudgetPolicy
    recorder: AttemptRecorder
    stats: StatsCollector
    router: Any
    redactor: Redactor
    tracing: Any = None
    freeze: FirstAnswerFreeze = field(default_factory=lambda: FirstAnswerFreeze(False))
    inflight: InFlight = field(default_factory=InFlight)


class RequestLifecycle:
    """`async with RequestLifecycle(services, ctx, route, metadata, now) as life:` around
    everything a request does after its validation. Inside, the pipeline calls `reserve`,
    `open_trace`, then ends the request with `finish`, `fail` or `refuse`; leaving the block
    any other way abandons it: the hold is released (minus nothing: no answer was received),
    a provider call in flight is recorded as a `Cancelled` (or the error's) attempt, and
    `request.finished` is emitted."""

    def __init__(self, services: PipelineServices, ctx: RequestContext, route: Resolution,
                 metadata: dict[str, Any], now: Any) -> None:
        self.services = services
        self.ctx = ctx
        self.group_choice = route  # the model group and why (explicit, alias, agent type, ...)
        self.metadata = metadata
        self.now = now
        self.hold: Hold | None = None
        self.trace: RequestTrace | None = None
        self.deployment_plan: RoutePlan | None = None  # per-call constraints, when it has any
        self.waited_ms: float | None = None  # how long it queued for capacity, if it did
        self.started = time.perf_counter()
        self.ended = False
        self._reserving: asyncio.Future[Hold] | None = None
        services.inflight.started[ctx.request_id] = self.started
        if services.events.wants("request.started") or services.tracing is not None:
            payload = {"request_id": ctx.request_id, "agent_id": ctx.agent_id,
                       "project_id": ctx.project_id, "agent_type": ctx.agent_type,
                       "model_group": route.model_group, "stream": ctx.stream}
            if services.tracing is not None:
                services.tracing.start(payload)
            services.events.emit("request.started", payload)

    async def __aenter__(self) -> RequestLifecycle:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self.ended:
            self.ended = True
            await self._shielded(self._abandon(exc))

    # -- budget ------------------------------------------------------------------------------

    async def reserve(self, plan: BudgetPlan) -> None:
        """Hold the plan's worst case against every limit, or refuse (a `refused` row,
        `BudgetExceeded`). A reserve cancelled in flight may still commit: the exit then
        waits for it and releases what it held."""
        self.group_choice = plan.group_choice
        self.deployment_plan = routing = plan.deployment_plan
        if routing is not None and routing.refused:
            ceiling = routing.constraints.max_cost_micros or 0
            await self.refuse(
                Limit("request", "max_cost_usd", "request", ceiling, 1.0), 0, 0, plan.amount,
                None, note=routing.note(None),
                hint=(f"No deployment of group {plan.group_choice.model_group!r} or its fallbacks can "
                      f"serve this call for at most ${ceiling / 1e6:.6f}: the cheapest could "
                      f"cost ${plan.amount / 1e6:.6f}. Raise max_cost_usd, lower max_tokens "
                      "or shorten the prompt."))
        if plan.cap is not None and plan.amount > plan.cap.limit_micros:
            await self.refuse(plan.cap, 0, 0, plan.amount, None)
        if not plan.limits and plan.cap is None:
            return  # constraints only: nothing to hold
        services, ctx = self.services, self.ctx
        self._reserving = services.ledger.start(
            services.budget_store.reserve_op(
                request_id=ctx.request_id, amount_micros=plan.amount, limits=plan.limits,
                keys=plan.keys, created_at=self.now, agent_id=ctx.agent_id,
                agent_type=ctx.agent_type, project_id=ctx.project_id,
                model_group=plan.group_choice.model_group),
            alone=services.inflight.alone)
        try:
            self.hold = await asyncio.shield(self._reserving)
        except LedgerError as exc:  # the ledger failed: the caller hears which request
            exc.request_id = ctx.request_id
            raise
        except RefusedError as exc:
            r = exc.refusal
            await self.refuse(r.limit, r.spent_micros, r.reserved_micros, plan.amount,
                              r.period_start)

    async def refuse(self, limit: Limit, spent: int, reserved: int, amount: int,
                     period_start: Any, *, note: dict[str, Any] | None = None,
                     hint: str | None = None) -> None:
        """A `refused` row, `budget.refused`, then `BudgetExceeded`; no provider is called."""
        self.ended = True
        services, ctx, route = self.services, self.ctx, self.group_choice
        resets = (services.budget_policy.period_end(period_start, limit.period)
                  if period_start is not None else None)
        error = BudgetExceeded(scope=limit.scope, scope_id=limit.scope_id, window=limit.period,
                               spent_micros=spent, reserved_micros=reserved,
                               limit_micros=limit.limit_micros, requested_micros=amount,
                               resets_at=resets)
        error.request_id = ctx.request_id
        if hint is not None:
            error.hint = hint
            error.args = (f"{error.message} {hint}",)
        refused = Attempt(attempt=1, model_group=route.model_group, status="refused",
                          error_class="BudgetExceeded", error_message=error.message)
        meta = {**self.metadata, "llmgw": {"route": route.reason, "budget": {
            "scope": limit.scope, "scope_id": limit.scope_id, "period": limit.period,
            "limit_micros": limit.limit_micros, "requested_micros": amount},
            **({"routing": note} if note is not None else {})}}
        row = usage_row(ctx, refused, ts=self.now, metadata=meta)

        async def write() -> None:
            try:
                await services.ledger.transact(services.ledger.write_op([row]),
                                         alone=services.inflight.alone)
            except BaseException:
                self._emit_finished([refused], written=False)
                raise
            services.events.emit("budget.refused", {
                "request_id": ctx.request_id, "scope": limit.scope, "scope_id": limit.scope_id,
                "period": limit.period, "requested_micros": amount,
                "limit_micros": limit.limit_micros})
            self._emit_finished([refused])
        await self._shielded(write())
        raise error

    # -- the provider call -------------------------------------------------------------------

    def open_trace(self) -> None:
        """From here a provider may be billing: failed hops collect in the trace."""
        self.trace = self.services.recorder.open(self.ctx.request_id)
        if self.deployment_plan is not None:
            self.trace.routing = self.deployment_plan
            self.trace.latency_ms = self.services.stats.latency_ms

    def close_trace(self) -> RequestTrace:
        self.trace = None
        trace = self.services.recorder.close(self.ctx.request_id)
        self.waited_ms = trace.admission.waited_ms  # for capacity (llmgw.routing.capacity)
        return trace

    async def fail(self, exc: BaseException) -> ProviderError:
        """Every attempt failed: record them, release the hold, return the typed error."""
        trace = self.close_trace()
        if not trace.failures:  # failed before any provider call (e.g. all deployments cooling)
            trace.failures.append(Attempt(
                attempt=1, model_group=self.group_choice.model_group, status="error",
                error_class=classify(exc).__name__,
                error_message=provider_message(exc, self.services.redactor),
                status_code=status_code_of(exc)))
        error = map_exception(exc, trace=trace, model_group=self.group_choice.model_group,
                              redactor=self.services.redactor, config=self.services.config)
        error.request_id = self.ctx.request_id
        await self.finish(trace.failures)
        return error

    async def finish(self, attempts: list[Attempt], *, completion: Completion | None = None,
                     saved_micros: int = 0, extra: dict[str, Any] | None = None) -> None:
        """Write the request's rows; with a hold, settle it in the same transaction (a
        `completion` settles at its cost, else the hold is released). Once per request; a
        cancelled caller does not stop it."""
        if self.ended:
            return
        self.ended = True
        if self.trace is not None:
            self.close_trace()
        for a in attempts:  # a provider that broke a stream mid-way failed, for cooldowns too
            if a.status == "partial" and a.error_class not in _NOT_PROVIDER_FAILURES:
                count_stream_failure(self.services.router, a)
        recorded = self._start_writing(attempts, completion, saved_micros, extra)
        self.services.inflight.track(recorded)
        await asyncio.shield(recorded)

    # -- how it ends -------------------------------------------------------------------------

    async def _abandon(self, exc: BaseException | None) -> None:
        if self._reserving is not None and self.hold is None:
            try:  # a reserve cancelled in flight: wait for what it did
                self.hold = await self._reserving
            except BaseException:
                self.hold = None
        attempts: list[Attempt] = []
        if self.trace is not None:  # the provider call was in flight: it may bill it
            trace = self.close_trace()
            cancelled = exc is None or isinstance(exc, (asyncio.CancelledError, GeneratorExit))
            attempts = [*trace.failures, Attempt(
                attempt=len(trace.failures) + 1, model_group=self.group_choice.model_group,
                status="error",
                error_class="Cancelled" if cancelled else type(exc).__name__,
                error_message=("the caller cancelled the request" if cancelled or exc is None
                               else provider_message(exc, self.services.redactor)),
                latency_ms=since_ms(self.started))]
        error_class = None if exc is None else (
            "Cancelled" if isinstance(exc, (asyncio.CancelledError, GeneratorExit))
            else type(exc).__name__)
        await self._start_writing(attempts, None, 0, None, error_class=error_class)

    def _start_writing(self, attempts: list[Attempt], completion: Completion | None,
                saved_micros: int, extra: dict[str, Any] | None, *,
                error_class: str | None = None) -> asyncio.Future[None]:
        """Start writing the request's rows, settling its hold in the same transaction. The
        future is done once they are committed and `request.finished` is out (`_on_written`);
        the write runs to its end if the caller is cancelled meanwhile."""
        services, ctx, route, hold = self.services, self.ctx, self.group_choice, self.hold
        for a in attempts:
            if a.deployment and a.status in ("ok", "error"):
                services.stats.record(a.deployment, a.status == "ok", a.latency_ms)
        meta = {**self.metadata, "llmgw": {"requested_group": route.model_group,
                                           "route": route.reason, **(extra or {})}}
        if self.deployment_plan is not None:
            meta["llmgw"]["routing"] = self.deployment_plan.note(
                completion.deployment if completion is not None else None)
        if self.waited_ms is not None:
            meta["llmgw"].setdefault("routing", {})["waited_ms"] = self.waited_ms
        rows = [usage_row(ctx, a, ts=self.now, metadata=meta, saved_micros=saved_micros)
                for a in attempts]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if hold is None and not rows:  # nothing held, nothing tried: nothing to write
            self._emit_finished(attempts, completion, saved_micros, error_class)
            done.set_result(None)
            return done
        op: Op[Any] = (services.ledger.write_op(rows) if hold is None else services.budget_store.settle_op(
            hold, spent_micros=sum(a.cost_micros for a in attempts), rows=rows,
            state="settled" if completion else "released"))
        written = services.ledger.start(op, alone=services.inflight.alone)
        written.add_done_callback(functools.partial(
            self._on_written, done, attempts, completion, saved_micros, error_class, len(rows)))
        return done

    def _on_written(self, done: asyncio.Future[None], attempts: list[Attempt],
                  completion: Completion | None, saved_micros: int, error_class: str | None,
                  row_count: int, written: asyncio.Future[Any]) -> None:
        """`_start_writing`'s end: `request.finished` and budget warnings, or the typed error (a
        completion paid for stays on it)."""
        services, ctx = self.services, self.ctx
        try:
            try:
                result = written.result()
            except BaseException as exc:
                if isinstance(exc, LedgerError):
                    error = exc
                elif self.hold is None:
                    error = write_failed(row_count, exc)
                else:
                    error = LedgerError(
                        f"Could not settle the budget and write the ledger rows of request "
                        f"{ctx.request_id}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                        hint="Check the ledger database; `llmgw db reconcile` settles what "
                             "was left open.")
                if error is not exc:
                    error.__cause__ = exc
                error.completion = completion  # paid for: keep it
                error.request_id = ctx.request_id
                self._emit_finished(attempts, completion, saved_micros, error_class, written=False)
                done.set_exception(error)
                return
            self._emit_finished(attempts, completion, saved_micros, error_class)
            for c in result.crossings if isinstance(result, SettleResult) else ():
                services.events.emit("budget.warning", {
                    "scope": c.limit.scope, "scope_id": c.limit.scope_id,
                    "period": c.limit.period, "period_start": c.key.period_start.isoformat(),
                    "spent_micros": c.spent_micros, "limit_micros": c.limit.limit_micros,
                    "warn_ratio": c.limit.warn_ratio})
        except BaseException as exc:  # a subscriber failed: its caller hears it, as before
            if not done.done():
                done.set_exception(exc)
            return
        done.set_result(None)

    def _emit_finished(self, attempts: list[Attempt], completion: Completion | None = None,
                  saved_micros: int = 0, error_class: str | None = None, *,
                  written: bool = True) -> None:
        """`fallback` per failed hop, then `request.finished` (once per request)."""
        services, ctx, route = self.services, self.ctx, self.group_choice
        started = services.inflight.ended(ctx.request_id)
        if started is None:
            return  # already finished
        if completion is not None:
            services.freeze.answered()
        events = services.events
        if events.wants("fallback"):
            for failed, then in itertools.pairwise(attempts):
                events.emit("fallback", {
                    "request_id": ctx.request_id, "project_id": ctx.project_id,
                    "agent_type": ctx.agent_type, "from_group": failed.model_group,
                    "from_deployment": failed.deployment, "to_group": then.model_group,
                    "to_deployment": then.deployment, "error_class": failed.error_class})
        if not events.wants("request.finished") and services.tracing is None:
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
            "duration_s": time.perf_counter() - started,
            "prompt_tokens": sum(a.usage.prompt_tokens for a in attempts),
            "completion_tokens": sum(a.usage.completion_tokens for a in attempts),
            "cost_micros": sum(a.cost_micros for a in attempts),
            "saved_micros": saved_micros, "attempts": attempts, "ledger_written": written}
        if services.tracing is not None:
            services.tracing.finish(finished)
        events.emit("request.finished", finished)

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task the caller's cancellation cannot stop; the gateway tracks it
        until it is done, so closing the gateway waits for it."""
        task = asyncio.ensure_future(work)
        self.services.inflight.track(task)
        await asyncio.shield(task)
