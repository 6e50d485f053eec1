"""The request lifecycle (llmgw.pipeline.lifecycle) over in-memory fakes of its ledger, budget store
and attempt recorder: every way a request ends settles or releases its hold exactly once,
writes its rows and emits `request.finished` once; a refusal writes a `refused` row; the
first answer freezes the heap once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

import llmgw.pipeline.lifecycle as lifecycle
from llmgw.budgets.planner import BudgetPlan
from llmgw.budgets.rules import BudgetPolicy, Limit
from llmgw.config.agents import Resolution
from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.errors import BudgetExceeded, LedgerError, ProviderError
from llmgw.ledger.budgets import Hold, Refusal, RefusedError, SettleResult
from llmgw.observe.events import EventBus
from llmgw.observe.health import StatsCollector
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.lifecycle import FirstAnswerFreeze, InFlight, PipelineServices, RequestLifecycle
from llmgw.redact import Redactor
from llmgw.routing.constraints import CallConstraints, RoutePlan
from llmgw.routing.recorder import RequestTrace
from llmgw.types import Attempt, Completion, Usage

NOW = datetime(2026, 3, 10, 12, 0)
SECRET = "sk-unit-lifecycle-SECRET-42"
LIMIT = Limit("project", "proj-a", "day", 1_000_000, 0.8)
AMOUNT = 12_345


def config() -> Config:
    return config_from_dict({
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/gpt-4.1",
                                                              "api_key": SECRET},
                        "model_info": {"id": "dep-1", "input_cost_per_token": "0.000001",
                                       "output_cost_per_token": "0.000002"}}],
        "llmgw": {"default_group": "g", "ledger": {"url": "sqlite:///unused.db"},
                  "cache": {"backend": "none"}}})


@dataclass
class Books:
    """The ledger and the budget store in memory: open holds, settles and plain writes.
    `refuse`, `fail_settle` and `fail_write` make the next such op fail; `reserve_gate`
    holds a reserve until it is set."""

    holds: dict[str, int] = field(default_factory=dict)
    settles: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    reserves: int = 0
    refuse: Refusal | None = None
    fail_settle: BaseException | None = None
    fail_write: BaseException | None = None
    reserve_gate: asyncio.Event | None = None
    reserve_entered: asyncio.Event | None = None

    # -- the budget store's ops
    def reserve_op(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        return ("reserve", kw)

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str = "settled") -> tuple[str, dict[str, Any]]:
        return ("settle", {"hold": hold, "spent": spent_micros, "rows": rows, "state": state})

    # -- the ledger
    def write_op(self, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        return ("write", {"rows": rows})

    def start(self, op: tuple[str, dict[str, Any]], *, alone: bool = False) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._run(op))

    async def transact(self, op: tuple[str, dict[str, Any]], *, alone: bool = False) -> Any:
        return await self._run(op)

    async def _run(self, op: tuple[str, dict[str, Any]]) -> Any:
        kind, args = op
        if kind == "reserve":
            if self.reserve_gate is not None:
                assert self.reserve_entered is not None
                self.reserve_entered.set()
                await self.reserve_gate.wait()
            self.reserves += 1
            if self.refuse is not None:
                raise RefusedError(self.refuse)
            self.holds[args["request_id"]] = args["amount_micros"]
            return Hold(args["request_id"], args["amount_micros"], ())
        if kind == "settle":
            if self.fail_settle is not None:
                raise self.fail_settle
            held = self.holds.pop(args["hold"].request_id)
            self.settles.append({**args, "held": held})
            return SettleResult()
        if self.fail_write is not None:
            raise self.fail_write
        self.writes.extend(args["rows"])
        return None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for s in self.settles for r in s["rows"]] + self.writes


class Recorder:
    """The attempt recorder: one trace per open request."""

    def __init__(self) -> None:
        self.traces: dict[str, RequestTrace] = {}

    def open(self, request_id: str) -> RequestTrace:
        trace = self.traces[request_id] = RequestTrace(request_id)
        return trace

    def close(self, request_id: str) -> RequestTrace:
        return self.traces.pop(request_id, None) or RequestTrace(request_id)


@dataclass
class World:
    books: Books
    recorder: Recorder
    services: PipelineServices
    events: list[tuple[str, dict[str, Any]]]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [p for e, p in self.events if e == event]

    def life(self, request_id: str = "req-1") -> RequestLifecycle:
        ctx = RequestContext(request_id=request_id, agent_id="dev-1", agent_type=None,
                             project_id="proj-a")
        return RequestLifecycle(self.services, ctx, Resolution("g", None, "default"),
                                {"ticket": "T-1"}, NOW)


def world(*, freeze: bool = False) -> World:
    cfg = config()
    books, recorder, bus = Books(), Recorder(), EventBus()
    seen: list[tuple[str, dict[str, Any]]] = []
    for name in ("request.started", "request.finished", "budget.refused", "fallback"):
        bus.on(name, lambda event, payload: seen.append((event, payload)))
    services = PipelineServices(
        config=cfg, events=bus, ledger=books, budget_store=books,  # type: ignore[arg-type]
        budget_policy=BudgetPolicy(cfg.llmgw.budgets), recorder=recorder,  # type: ignore[arg-type]
        stats=StatsCollector(), router=None, redactor=Redactor([SECRET]),
        freeze=FirstAnswerFreeze(freeze), inflight=InFlight())
    return World(books, recorder, services, seen)


def budget_plan(*, amount: int = AMOUNT, cap: Limit | None = None, limits: bool = True,
                routing: RoutePlan | None = None) -> BudgetPlan:
    policy = BudgetPolicy(config().llmgw.budgets)
    chosen = [LIMIT] if limits else []
    return BudgetPlan(Resolution("g", None, "default"), amount, 100, chosen,
                      tuple(policy.counter_key(x, NOW) for x in chosen), cap, routing)


def answer(request_id: str = "req-1", cost: int = 4_321) -> Completion:
    ok = Attempt(attempt=1, model_group="g", deployment="dep-1", provider="openai",
                 model="openai/gpt-4.1", status="ok", latency_ms=12.0,
                 usage=Usage(prompt_tokens=10, completion_tokens=20), cost_micros=cost)
    return Completion(request_id=request_id, content="hi", usage=ok.usage, cost_micros=cost,
                      model_group="g", requested_group="g", deployment="dep-1",
                      provider="openai", model="openai/gpt-4.1", latency_ms=13.0, attempts=[ok])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_ended_once(w: World, *, status: str, request_id: str = "req-1") -> dict[str, Any]:
    """Nothing held or in flight, one `request.finished` for the request."""
    assert w.books.holds == {}
    assert w.services.inflight.started == {}
    (finished,) = [p for p in w.named("request.finished") if p["request_id"] == request_id]
    assert finished["status"] == status
    return finished


# -- the exits -------------------------------------------------------------------------------


def test_an_answer_settles_the_hold_at_its_cost_with_its_row():
    w = world()

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            assert w.books.holds == {"req-1": AMOUNT}
            life.open_trace()
            done = answer()
            await life.finish(done.attempts, completion=done)

    run(go())
    (settle,) = w.books.settles
    assert (settle["state"], settle["spent"], settle["held"]) == ("settled", 4_321, AMOUNT)
    (row,) = settle["rows"]
    assert (row["status"], row["deployment_id"], row["cost_micros"]) == ("ok", "dep-1", 4_321)
    assert row["metadata"]["ticket"] == "T-1"
    assert row["metadata"]["llmgw"]["requested_group"] == "g"
    finished = assert_ended_once(w, status="ok")
    assert finished["cost_micros"] == 4_321 and finished["ledger_written"] is True
    assert w.recorder.traces == {}  # the trace was closed


def test_a_provider_error_releases_the_hold_and_records_the_failed_hops():
    w = world()
    failed: list[ProviderError] = []

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            life.open_trace()
            assert life.trace is not None
            life.trace.failures.append(Attempt(
                attempt=1, model_group="g", deployment="dep-1", status="error",
                error_class="ProviderUnavailable", error_message="HTTP 503", cost_micros=0))
            try:
                raise RuntimeError(f"upstream exploded with key {SECRET}")
            except RuntimeError as exc:
                failed.append(await life.fail(exc))
                raise failed[-1] from None

    with pytest.raises(ProviderError):
        run(go())
    (error,) = failed
    assert error.request_id == "req-1"
    (settle,) = w.books.settles
    assert (settle["state"], settle["spent"]) == ("released", 0)
    assert [r["status"] for r in settle["rows"]] == ["error"]
    assert_ended_once(w, status="error")


def test_failing_before_any_provider_call_still_records_an_attempt():
    w = world()

    async def go() -> ProviderError:
        async with w.life() as life:
            await life.reserve(budget_plan())
            life.open_trace()
            return await life.fail(RuntimeError(f"no deployment for {SECRET}"))

    error = run(go())
    (settle,) = w.books.settles
    (row,) = settle["rows"]
    assert settle["state"] == "released" and row["status"] == "error"
    assert SECRET not in (row["error_message"] or "") and SECRET not in str(error)
    assert_ended_once(w, status="error")


def test_a_cancelled_provider_call_releases_the_hold_with_a_cancelled_attempt():
    w = world()
    calling = asyncio.Event()

    async def request() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            life.open_trace()
            calling.set()
            await asyncio.Event().wait()  # the provider never answers

    async def go() -> None:
        task = asyncio.ensure_future(request())
        await calling.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    (settle,) = w.books.settles
    assert settle["state"] == "released"
    (row,) = settle["rows"]
    assert (row["status"], row["error_class"]) == ("error", "Cancelled")
    assert_ended_once(w, status="error")


def test_a_reserve_cancelled_in_flight_is_waited_for_and_released():
    w = world()

    async def go() -> None:
        gate = w.books.reserve_gate = asyncio.Event()
        entered = w.books.reserve_entered = asyncio.Event()
        task = asyncio.ensure_future(_reserve_only(w))
        await entered.wait()  # the reserve is under way, held at the gate
        task.cancel()
        gate.set()  # the reserve commits after its caller was cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.gather(*w.services.inflight.finishing)

    run(go())
    assert w.books.reserves == 1
    (settle,) = w.books.settles
    assert (settle["state"], settle["rows"]) == ("released", [])
    finished = assert_ended_once(w, status="error")
    assert finished["error_class"] == "Cancelled"


async def _reserve_only(w: World) -> None:
    async with w.life() as life:
        await life.reserve(budget_plan())


def test_an_error_in_the_pipeline_before_the_call_releases_the_hold_and_writes_no_row():
    w = world()

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            raise ValueError("the dialect could not build the call")

    with pytest.raises(ValueError):
        run(go())
    (settle,) = w.books.settles
    assert (settle["state"], settle["rows"]) == ("released", [])
    finished = assert_ended_once(w, status="error")
    assert finished["error_class"] == "ValueError"


def test_a_ledger_error_at_settle_is_a_ledger_error_naming_the_request_keeping_the_answer():
    w = world()
    w.books.fail_settle = RuntimeError("database is locked")
    done = answer()

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            life.open_trace()
            await life.finish(done.attempts, completion=done)

    with pytest.raises(LedgerError) as caught:
        run(go())
    error = caught.value
    assert error.request_id == "req-1" and error.completion is done
    assert "req-1" in str(error) and "database is locked" in str(error)
    assert w.books.settles == []  # the one settle failed; none was tried again
    assert w.services.inflight.started == {} and w.services.inflight.finishing == set()
    (finished,) = w.named("request.finished")
    assert finished["ledger_written"] is False and finished["status"] == "ok"


def test_a_request_with_nothing_held_and_nothing_tried_writes_nothing():
    w = world()

    async def go() -> None:
        async with w.life():
            pass

    run(go())
    assert (w.books.settles, w.books.writes, w.books.reserves) == ([], [], 0)
    assert_ended_once(w, status="error")


def test_a_cached_answer_without_a_hold_is_one_plain_write():
    w = world()
    done = answer(cost=0)

    async def go() -> None:
        async with w.life() as life:
            await life.finish(done.attempts, completion=done, saved_micros=999,
                              extra={"cache": {"first_request_id": "req-0"}})

    run(go())
    assert w.books.settles == []
    (row,) = w.books.writes
    assert row["saved_micros"] == 999
    assert row["metadata"]["llmgw"]["cache"] == {"first_request_id": "req-0"}
    assert_ended_once(w, status="ok")


def test_finish_twice_writes_once():
    w = world()
    done = answer()

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            await life.finish(done.attempts, completion=done)
            await life.finish(done.attempts, completion=done)

    run(go())
    assert len(w.books.settles) == 1
    assert_ended_once(w, status="ok")


# -- refusals --------------------------------------------------------------------------------


def test_a_refused_reserve_writes_a_refused_row_and_raises_budget_exceeded():
    w = world()
    start = datetime(2026, 3, 10)
    w.books.refuse = Refusal(LIMIT, 990_000, 5_000, start)

    async def go() -> None:
        async with w.life() as life:
            await life.reserve(budget_plan())
            raise AssertionError("a refused request goes no further")

    with pytest.raises(BudgetExceeded) as caught:
        run(go())
    err = caught.value
    assert (err.scope, err.scope_id, err.window) == ("project", "proj-a", "day")
    assert (err.spent_micros, err.reserved_micros, err.limit_micros,
            err.requested_micros) == (990_000, 5_000, 1_000_000, AMOUNT)
    assert err.resets_at == datetime(2026, 3, 11) and err.request_id == "req-1"
    assert w.books.settles == [] and w.books.holds == {}
    (row,) = w.books.writes
    assert (row["status"], row["error_class"], row["cost_micros"]) == (
        "refused", "BudgetExceeded", 0)
    assert row["metadata"]["llmgw"]["budget"] == {
        "scope": "project", "scope_id": "proj-a", "period": "day",
        "limit_micros": 1_000_000, "requested_micros": AMOUNT}
    (refused,) = w.named("budget.refused")
    assert refused["request_id"] == "req-1" and refused["requested_micros"] == AMOUNT
    assert_ended_once(w, status="refused")


def test_a_worst_case_over_the_request_cap_is_refused_without_a_reserve():
    w = world()
    cap = Limit("request", "*", "request", 10_000, 0.8)

    with pytest.raises(BudgetExceeded) as caught:
        run(_reserve_plan(w, budget_plan(cap=cap)))
    assert caught.value.scope == "request" and caught.value.resets_at is None
    assert w.books.reserves == 0
    assert [r["status"] for r in w.books.writes] == ["refused"]
    assert_ended_once(w, status="refused")


def test_constraints_nothing_fits_is_refused_with_the_hint_and_the_routing_note():
    w = world()
    routing = RoutePlan(CallConstraints(max_cost_micros=50), {"g": []}, {"dep-1": 800},
                        {"dep-1": "worst case 800 > max_cost 50 micro-dollars"})

    with pytest.raises(BudgetExceeded) as caught:
        run(_reserve_plan(w, budget_plan(amount=800, limits=False, routing=routing)))
    assert "Raise max_cost_usd" in str(caught.value)
    (row,) = w.books.writes
    assert row["metadata"]["llmgw"]["routing"]["excluded"] == {
        "dep-1": "worst case 800 > max_cost 50 micro-dollars"}
    assert w.books.reserves == 0
    assert_ended_once(w, status="refused")


def test_a_refused_row_the_ledger_cannot_write_still_finishes_the_request():
    w = world()
    w.books.fail_write = RuntimeError("disk full")
    cap = Limit("request", "*", "request", 1, 0.8)

    with pytest.raises(RuntimeError, match="disk full"):
        run(_reserve_plan(w, budget_plan(cap=cap)))
    (finished,) = w.named("request.finished")
    assert finished["status"] == "refused" and finished["ledger_written"] is False
    assert w.services.inflight.started == {}


async def _reserve_plan(w: World, plan: BudgetPlan) -> None:
    async with w.life() as life:
        await life.reserve(plan)


# -- the first answer freezes the heap -------------------------------------------------------


def test_the_first_answer_freezes_once_and_a_failure_does_not(monkeypatch: pytest.MonkeyPatch):
    frozen: list[str] = []
    monkeypatch.setattr(lifecycle, "freeze_once", frozen.append)
    w = world(freeze=True)

    async def go() -> None:
        async with w.life("req-fail") as life:
            await life.fail(RuntimeError("down"))
        assert frozen == []
        for n in range(3):
            done = answer(f"req-{n}")
            async with w.life(f"req-{n}") as life:
                await life.finish(done.attempts, completion=done)

    run(go())
    assert frozen == [lifecycle.FIRST_ANSWER]
    assert w.services.freeze.due is False


def test_a_gateway_that_does_not_want_the_freeze_never_freezes(monkeypatch: pytest.MonkeyPatch):
    frozen: list[str] = []
    monkeypatch.setattr(lifecycle, "freeze_once", frozen.append)
    w = world(freeze=False)
    done = answer()

    async def go() -> None:
        async with w.life() as life:
            await life.finish(done.attempts, completion=done)

    run(go())
    assert frozen == []


def test_inflight_ends_a_request_once():
    flight = InFlight()
    flight.started.update({"a": 1.0, "b": 2.0})
    assert not flight.alone
    assert flight.ended("a") == 1.0 and flight.ended("a") is None
    assert flight.alone
