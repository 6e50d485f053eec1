"""Per-key limits (rpm, max_parallel) across `llmgw serve --workers 2` through one Redis; key
rotation with an overlap, on a clock the test moves."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, timedelta

import httpx
import pytest
import redis

from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.timespec import utcnow
from llmgw.routing.capacity import window
from llmgw.sim import Fault, FaultPlan
from tests.server.test_lifecycle import start_serve
from tests.support import ledger_rows

DELAY_S = 0.5  # the sim holds each answer this long: calls stay in flight
CLIENTS = 40


def _clear_key_counters(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for name in client.scan_iter("llmgw:capacity:*apikey:*"):
            client.delete(name)
    finally:
        client.close()


def test_a_key_rpm_and_parallel_hold_across_2_workers(tmp_path, sims, migrated_ledger_url,
                                                      redis_url, monkeypatch):
    url = migrated_ledger_url
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="latency", delay_s=DELAY_S,
                                                model="solo-sim")]))
    _clear_key_counters(redis_url)
    engine = make_engine(url)
    try:
        store = ApiKeyStore(engine)
        runaway = store.create(project_id="proj-a", agent_id="runaway", rpm=10, max_parallel=2)
        calm = store.create(project_id="proj-a", agent_id="calm")
    finally:
        engine.dispose()
    monkeypatch.setenv("LLMGW_REDIS_URL", redis_url)  # both workers share it
    process, base = start_serve(tmp_path, sims, url, "--workers", "2")
    outcomes: list[tuple[int, str | None, str | None]] = []  # status, retry-after, code
    calm_statuses: list[int] = []
    try:
        async def one(client: httpx.AsyncClient, i: int) -> None:
            while True:
                r = await client.post("/v1/chat/completions", headers={
                    "authorization": f"Bearer {runaway.secret}"}, json={
                    "model": "solo", "max_tokens": 5,
                    "messages": [{"role": "user", "content": f"runaway {i}"}]})
                code = r.json()["error"]["code"] if r.status_code != 200 else None
                outcomes.append((r.status_code, r.headers.get("retry-after"), code))
                # a slot frees in a moment: poll again; a full minute's rpm: give up
                if r.status_code != 429 or int(r.headers["retry-after"]) > 1:
                    return
                await asyncio.sleep(0.05)

        async def calm_one(client: httpx.AsyncClient, i: int) -> None:
            r = await client.post("/v1/chat/completions", headers={
                "authorization": f"Bearer {calm.secret}"}, json={
                "model": "solo", "max_tokens": 5,
                "messages": [{"role": "user", "content": f"calm {i}"}]})
            calm_statuses.append(r.status_code)

        async def all_clients() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                await asyncio.gather(*(one(client, i) for i in range(CLIENTS)),
                                     *(calm_one(client, i) for i in range(6)))

        asyncio.run(all_clients())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert calm_statuses == [200] * 6  # another key is not slowed by this one's limits
    seen = [r for r in openai_sim.requests
            if "runaway" in str(r.json.get("messages") if isinstance(r.json, dict) else "")]
    oks = [o for o in outcomes if o[0] == 200]
    assert len(seen) == len(oks) > 0  # no provider call for a refused request
    rows = [r for r in ledger_rows(url) if r["agent_id"] == "runaway"]
    # per wall-clock minute of admission (a row's ts is taken just after it): the sim's
    # receipt can fall a moment later, past a minute's end
    per_minute: dict[int, int] = {}
    for r in rows:
        if r["status"] == "ok":
            w = window(r["ts"].replace(tzinfo=UTC).timestamp())
            per_minute[w] = per_minute.get(w, 0) + 1
    assert max(per_minute.values()) <= 10
    if len(per_minute) == 1:
        assert len(oks) == 10  # one minute: exactly its rpm got through
    starts = sorted(r.received_at for r in seen)
    for i, start in enumerate(starts):  # each call is in flight for at least DELAY_S
        assert sum(1 for s in starts[:i] if s > start - DELAY_S) <= 1, "3 calls in flight"
    refused = [o for o in outcomes if o[0] != 200]
    assert refused and all(o[0] == 429 and o[1] and int(o[1]) >= 1 for o in refused)
    assert {o[2] for o in refused} == {"rate_limited"}
    assert any(int(o[1]) > 1 for o in refused)  # the minute's rpm was hit
    refused_rows = [r for r in rows if r["status"] == "refused"]
    assert len(refused_rows) == len(refused)
    assert {r["error_class"] for r in refused_rows} <= {"KeyRateLimited", "KeyConcurrencyLimited"}
    assert "KeyRateLimited" in {r["error_class"] for r in refused_rows}
    assert sum(r["status"] == "ok" for r in rows) == len(oks)


@pytest.fixture
def clock():
    now = [utcnow()]
    return now


def test_a_rotated_key_works_inside_its_overlap_and_is_refused_after(running, clock):
    from llmgw.server.auth import Authenticator

    app = running.server.config.app
    old = running.keys.create(project_id="proj-a", agent_id="dev-1", rpm=50)
    new, old_info = running.keys.rotate(old.info.id, overlap=timedelta(hours=1))
    assert (new.info.project_id, new.info.agent_id, new.info.rpm) == ("proj-a", "dev-1", 50)
    assert new.info.limit_id == old.info.id and old_info.rotated_to == new.info.id
    app.state.auth = Authenticator(running.keys, cache_s=60, clock=lambda: clock[0])

    def status(secret: str) -> int:
        r = httpx.post(running.base_url + "/v1/chat/completions", timeout=60,
                       headers={"authorization": f"Bearer {secret}"},
                       json={"model": "solo", "messages": [{"role": "user", "content": "hi"}]})
        return r.status_code

    assert (status(old.secret), status(new.secret)) == (200, 200)
    clock[0] += timedelta(minutes=59)
    assert status(old.secret) == 200  # inside the overlap (and remembered by the cache)
    clock[0] += timedelta(minutes=2)
    assert (status(old.secret), status(new.secret)) == (401, 200)
    with pytest.raises(Exception, match="already rotated"):
        running.keys.rotate(old.info.id, overlap=timedelta(hours=1))
