"""Fault plans: parsing, rule semantics, determinism, and the server's lifecycle under faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from llmgw.sim import AnthropicSim, Fault, FaultPlan, OpenAISim
from llmgw.sim.faults import FaultState
from tests.sim.conftest import fresh

BODY = {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAISim]:
    with OpenAISim() as sim:
        yield sim


@pytest.fixture
def sim(server: OpenAISim) -> OpenAISim:
    return fresh(server)  # type: ignore[return-value]


def call(sim: OpenAISim, model: str = "sim-gpt", timeout: float = 5) -> int:
    return httpx.post(
        sim.base_url + "/v1/chat/completions", json={**BODY, "model": model}, timeout=timeout
    ).status_code


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("429:retry_after=2,times=1", Fault(kind="http_error", status=429, retry_after=2, times=1)),
        ("503", Fault(kind="http_error", status=503)),
        ("http_error:status=401", Fault(kind="http_error", status=401)),
        ("latency:delay_s=0.2", Fault(kind="latency", delay_s=0.2)),
        ("latency: delay_s=0.2, jitter_s=0.1 ", Fault(kind="latency", delay_s=0.2, jitter_s=0.1)),
        ("timeout", Fault(kind="timeout")),
        ("drop:after_chunks=2", Fault(kind="drop", after_chunks=2)),
        ("malformed:model=gpt-x,probability=0.5", Fault(kind="malformed", model="gpt-x", probability=0.5)),
        ("500:message=boom,times=none", Fault(kind="http_error", status=500, message="boom")),
    ],
)
def test_fault_parse(spec: str, expected: Fault) -> None:
    assert Fault.parse(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "teapot",
        "latency:delay_s",
        "429:colour=red",
        "429:kind=drop",
        "latency:delay_s=-1",
        "99",
        "drop:probability=2",
    ],
)
def test_fault_parse_rejects(spec: str) -> None:
    with pytest.raises((ValueError, ValidationError)):
        Fault.parse(spec)


def test_plan_parse_and_constructors() -> None:
    plan = FaultPlan.parse(["429:retry_after=2,times=1", "latency:delay_s=0.1;drop:after_chunks=2"], seed=7)
    assert [f.kind for f in plan.faults] == ["http_error", "latency", "drop"] and plan.seed == 7
    assert FaultPlan.rate_limited(retry_after=2, times=1).faults == [
        Fault(kind="http_error", status=429, retry_after=2, times=1)
    ]
    assert FaultPlan.error(503, answer="x").answer == "x"
    assert FaultPlan.latency(0.1).with_faults("timeout").faults[-1].kind == "timeout"
    with pytest.raises(ValidationError):
        FaultPlan(faults=[{"kind": "drop", "bogus": 1}])
    # Plans are plain data: they round-trip through JSON (config files, the CLI).
    assert FaultPlan.model_validate_json(plan.model_dump_json()) == plan


# -- rule semantics (no server) --------------------------------------------------------


def kinds(state: FaultState, n: int, model: str | None = "m") -> list[str | None]:
    return [state.decide(model).kind for _ in range(n)]


def test_times_fire_in_order_then_stop() -> None:
    state = FaultState(FaultPlan.parse(["500:times=1", "503:times=2"]))
    assert [d.fault.status if d.fault else None for d in (state.decide("m") for _ in range(4))] == [
        500,
        503,
        503,
        None,
    ]
    assert state.fired == [1, 2]


def test_model_filter() -> None:
    state = FaultState(FaultPlan.parse("500:model=bad"))
    assert kinds(state, 2, "good") == [None, None]
    assert kinds(state, 1, "bad") == ["http_error"]


def test_probability_is_seeded_and_reproducible() -> None:
    plan = FaultPlan.parse("500:probability=0.5", seed=42)
    first, again = kinds(FaultState(plan), 200), kinds(FaultState(plan), 200)
    assert first == again
    assert 60 < first.count("http_error") < 140
    other = kinds(FaultState(plan.model_copy(update={"seed": 43})), 200)
    assert other != first
    assert kinds(FaultState(FaultPlan.parse("500:probability=0")), 20) == [None] * 20


def test_latency_adds_up_and_does_not_decide() -> None:
    state = FaultState(
        FaultPlan.parse(["latency:delay_s=0.1", "latency:delay_s=0.2,jitter_s=0.05", "timeout:times=1"])
    )
    first, second = state.decide("m"), state.decide("m")
    assert first.kind == "timeout" and 0.3 <= first.delay_s <= 0.35
    assert second.kind is None and 0.3 <= second.delay_s <= 0.35
    replay = FaultState(state.plan)
    assert [replay.decide("m").delay_s for _ in range(2)] == [first.delay_s, second.delay_s]


# -- through the server ----------------------------------------------------------------


def test_times_and_reset(sim: OpenAISim) -> None:
    sim.plan = FaultPlan.parse("500:times=2")
    assert [call(sim) for _ in range(3)] == [500, 500, 200]
    assert sim.fault_counts == [2]
    sim.reset()
    assert sim.requests == [] and sim.responses == [] and sim.fault_counts == [0]
    assert call(sim) == 500
    sim.set_plan(FaultPlan())  # at runtime, on the running server
    assert call(sim) == 200


def test_a_request_from_before_a_reset_is_not_recorded_after_it(sim: OpenAISim) -> None:
    # A test's client can hang up while the server still answers; that late answer must
    # not show up in the next test's records.
    sim.plan = FaultPlan.latency(0.2)
    statuses: list[int] = []
    worker = threading.Thread(target=lambda: statuses.append(call(sim)))
    worker.start()
    sim.wait_for_requests(1)
    sim.reset()
    worker.join()
    assert statuses == [200] and sim.responses == [] and sim.requests == []
    assert call(sim) == 200 and len(sim.wait_for_responses(1)) == 1


def test_model_filter_through_server(sim: OpenAISim) -> None:
    sim.plan = FaultPlan.parse("429:model=sim-gpt-mini")
    assert [call(sim, "sim-gpt"), call(sim, "sim-gpt-mini")] == [200, 429]
    assert [r.model for r in sim.requests] == ["sim-gpt", "sim-gpt-mini"]


def test_same_plan_same_requests_same_behaviour() -> None:
    plan = FaultPlan.parse(["500:probability=0.3", "latency:delay_s=0,jitter_s=0.002"], seed=5)
    runs = []
    for _ in range(2):
        with OpenAISim(plan) as sim:
            statuses = [call(sim) for _ in range(20)]
            runs.append((statuses, [r.delay_s for r in sim.wait_for_responses(20)]))
    assert runs[0] == runs[1] and 200 in runs[0][0] and 500 in runs[0][0]


def test_latency_is_recorded_and_applied(sim: OpenAISim) -> None:
    sim.plan = FaultPlan.latency(0.15, jitter_s=0.05)
    assert call(sim) == 200
    [record] = sim.wait_for_responses(1)
    assert 0.15 <= record.delay_s <= 0.2
    assert record.elapsed_s >= record.delay_s  # measured by the server, not a client sleep


def test_client_giving_up_frees_a_timeout(sim: OpenAISim) -> None:
    sim.plan = FaultPlan.timeout(times=1)
    with pytest.raises(httpx.ReadTimeout):
        call(sim, timeout=0.3)
    [record] = sim.wait_for_responses(1)
    assert (record.status, record.fault) == (0, "timeout")
    assert call(sim) == 200


def test_stop_does_not_hang_on_a_held_request() -> None:
    sim = OpenAISim(FaultPlan.timeout()).start()
    failures: list[BaseException] = []

    def client() -> None:
        try:
            httpx.post(sim.base_url + "/v1/chat/completions", json=BODY, timeout=30)
        except httpx.HTTPError as exc:
            failures.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    sim.wait_for_requests(1)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert not thread.is_alive() and isinstance(failures[0], httpx.RemoteProtocolError)
    assert sim.wait_for_responses(1)[0].fault == "timeout"


def test_stop_does_not_hang_on_a_stalled_stream() -> None:
    sim = AnthropicSim(FaultPlan.timeout(after_chunks=2)).start()
    received: list[bytes] = []

    def client() -> None:
        body = {
            "model": "c",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"anthropic-version": "2023-06-01"}
        try:
            with httpx.stream(
                "POST", sim.base_url + "/v1/messages", json=body, headers=headers, timeout=30
            ) as resp:
                for chunk in resp.iter_bytes():
                    received.append(chunk)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    sim.wait_for_requests(1)
    sim.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert b"".join(received).count(b"event: ") == 2
    assert sim.wait_for_responses(1)[0].chunks == 2


async def test_async_context_manager_from_a_test_loop() -> None:
    async with OpenAISim(FaultPlan(answer="ok")) as sim:
        async with httpx.AsyncClient() as client:
            resp = await client.post(sim.base_url + "/v1/chat/completions", json=BODY)
        assert resp.json()["choices"][0]["message"]["content"] == "ok"
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_fixed_port_and_double_start() -> None:
    with OpenAISim() as first:
        port = first.port
        with pytest.raises(RuntimeError):
            first.start()
    with OpenAISim(port=port) as again:
        assert again.base_url == f"http://127.0.0.1:{port}" and call(again) == 200
        with pytest.raises(OSError), OpenAISim(port=port):
            pass
