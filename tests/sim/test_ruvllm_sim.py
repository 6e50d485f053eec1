"""RuvLLMSim: the ruvLLM server's wire format (docs/providers.md), its sessions, feedback and faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from llmgw.sim.faults import FaultPlan
from llmgw.sim.ruvllm import CONTEXT_BINS, MODEL_SIZES, RuvLLMSim
from tests.sim.conftest import fresh

QUERY = "System: Be brief.\nUser: What is the capital of France?"
ANSWER = "Simulated answer to: " + QUERY[:60]


@pytest.fixture(scope="module")
def server() -> Iterator[RuvLLMSim]:
    with RuvLLMSim() as sim:
        yield sim


@pytest.fixture
def sim(server: RuvLLMSim) -> RuvLLMSim:
    return fresh(server)  # type: ignore[return-value]


def query(sim: RuvLLMSim, body: object, **kw: object) -> httpx.Response:
    return httpx.post(sim.base_url + "/query", json=body, timeout=5, **kw)  # type: ignore[arg-type]


def test_query_answers_exactly_the_documented_fields(sim: RuvLLMSim) -> None:
    resp = query(sim, {"query": QUERY, "session_id": None})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert set(data) == {"text", "model_used", "context_size", "confidence", "latency_ms"}
    assert data["text"] == ANSWER
    assert data["model_used"] in MODEL_SIZES and data["context_size"] in CONTEXT_BINS
    assert isinstance(data["confidence"], float) and 0 <= data["confidence"] <= 1
    assert isinstance(data["latency_ms"], float)
    [request] = sim.requests
    assert (request.method, request.path, request.json) == (
        "POST", "/query", {"query": QUERY, "session_id": None})
    [record] = sim.wait_for_responses(1)
    assert (record.status, record.answer, record.usage, record.stream) == (200, ANSWER, None, False)
    assert record.prompt_tokens == len(QUERY.split())  # the simulator's own count; never sent


def test_plan_and_constructor_set_the_answer() -> None:
    with RuvLLMSim(FaultPlan(answer="Paris."), model_used="B2_6", confidence=0.5, context_size=4096,
                   latency_ms=3.0) as sim:
        assert query(sim, {"query": "q"}).json() == {
            "text": "Paris.", "model_used": "B2_6", "context_size": 4096, "confidence": 0.5,
            "latency_ms": 3.0}


def test_sessions_keep_turns_and_unknown_ids_are_created(sim: RuvLLMSim) -> None:
    created = httpx.post(sim.base_url + "/session")
    assert created.status_code == 200 and set(created.json()) == {"session_id"}
    sid = created.json()["session_id"]
    assert sim.sessions == {sid: []}
    query(sim, {"query": "one", "session_id": sid})
    query(sim, {"query": "two", "session_id": sid})
    query(sim, {"query": "three", "session_id": "llmgw-own-id"})
    query(sim, {"query": "four"})  # session_id may be left out: no session
    assert sim.sessions == {
        sid: [("one", "Simulated answer to: one"), ("two", "Simulated answer to: two")],
        "llmgw-own-id": [("three", "Simulated answer to: three")],
    }


def test_health_stats_and_feedback(sim: RuvLLMSim) -> None:
    assert httpx.get(sim.base_url + "/health").json() == {"status": "healthy", "version": "0.1.0"}
    query(sim, {"query": "q", "session_id": "s"})
    ok = httpx.post(sim.base_url + "/feedback", json={"query": "q", "response": "r", "quality": 0.75})
    assert ok.status_code == 200 and ok.content == b""  # a bare 200, as axum's StatusCode::OK
    [feedback] = sim.feedback
    assert (feedback.query, feedback.response, feedback.quality) == ("q", "r", 0.75)
    stats = httpx.get(sim.base_url + "/stats").json()
    assert stats == {"total_queries": 1, "cache_hits": 0, "avg_latency_ms": 12.5, "memory_nodes": 1,
                     "router_updates": 1}
    bad = httpx.post(sim.base_url + "/feedback", json={"query": "q", "response": "r", "quality": "good"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/plain")
    assert [r.path for r in sim.requests] == ["/health", "/query", "/feedback", "/stats", "/feedback"]


@pytest.mark.parametrize("status", [429, 500, 503, 401])
def test_errors_are_plain_text(sim: RuvLLMSim, status: int) -> None:
    sim.plan = FaultPlan.error(status, retry_after=2 if status == 429 else None)
    resp = query(sim, {"query": QUERY, "session_id": None})
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("text/plain") and resp.text
    assert ("retry-after" in resp.headers) == (status == 429)
    if status == 500:
        assert resp.text == "Inference error: simulated failure"
    assert sim.wait_for_responses(1)[0].status == status


def test_faults_apply_to_query_only(sim: RuvLLMSim) -> None:
    sim.plan = FaultPlan.error(500)
    assert httpx.post(sim.base_url + "/session").status_code == 200
    assert httpx.get(sim.base_url + "/health").status_code == 200
    assert query(sim, {"query": "q"}).status_code == 500


def test_an_api_key_can_be_required_by_a_proxy_in_front() -> None:
    with RuvLLMSim(api_key="sk-proxy") as sim:
        refused = query(sim, {"query": "q"})
        assert refused.status_code == 401 and refused.text == "Unauthorized"
        assert query(sim, {"query": "q"}, headers={"Authorization": "Bearer sk-proxy"}).status_code == 200
        assert httpx.post(sim.base_url + "/session").status_code == 401


def test_malformed_timeout_drop_and_latency(sim: RuvLLMSim) -> None:
    sim.plan = FaultPlan.malformed()
    resp = query(sim, {"query": "q"})
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()
    sim.plan = FaultPlan.drop()
    with pytest.raises(httpx.RemoteProtocolError):
        query(sim, {"query": "q"})
    sim.plan = FaultPlan.timeout()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.base_url + "/query", json={"query": "q"}, timeout=0.3)
    sim.plan = FaultPlan.latency(0.2)
    assert query(sim, {"query": "q"}).status_code == 200
    records = {r.fault or "latency": r for r in sim.wait_for_responses(4)}  # completion order varies
    assert set(records) == {"malformed", "drop", "timeout", "latency"}
    assert records["latency"].delay_s == 0.2 and records["latency"].elapsed_s >= 0.2
    assert records["timeout"].status == 0 and records["drop"].status == 0


@pytest.mark.parametrize(
    ("content", "headers", "status", "starts"),
    [
        (b'{"query": "q"}', {}, 415, "Expected request with `Content-Type: application/json`"),
        (b"{nope", {"Content-Type": "application/json"}, 400, "Failed to parse the request body as JSON"),
        (b'{"text": "q"}', {"Content-Type": "application/json"}, 422,
         "Failed to deserialize the JSON body into the target type: missing field `query`"),
        (b'{"query": "q", "session_id": 5}', {"Content-Type": "application/json"}, 422,
         "Failed to deserialize"),
        (b'["q"]', {"Content-Type": "application/json"}, 422, "Failed to deserialize"),
    ],
    ids=["no-content-type", "not-json", "text-not-query", "bad-session", "not-an-object"],
)
def test_bad_bodies_are_rejected_like_axum(sim: RuvLLMSim, content: bytes, headers: dict, status: int,
                                          starts: str) -> None:
    resp = httpx.post(sim.base_url + "/query", content=content, headers=headers)
    assert resp.status_code == status and resp.text.startswith(starts)
    assert sim.wait_for_responses(1)[0].status == status
    assert len(sim.requests) == 1


async def test_concurrent_queries_are_each_recorded(sim: RuvLLMSim) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        answers = await asyncio.gather(*(client.post("/query", json={"query": f"q{i}"}) for i in range(20)))
    expected = sorted(f"Simulated answer to: q{i}" for i in range(20))
    assert sorted(a.json()["text"] for a in answers) == expected
    assert len(await asyncio.to_thread(sim.wait_for_responses, 20)) == 20
