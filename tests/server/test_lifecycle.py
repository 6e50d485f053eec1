"""A hang-up is a cancellation, and SIGTERM drains then cancels: either way every hold is
settled and every attempt has its row (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from llmgw.budgets.rules import Rule
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.timespec import utcnow
from llmgw.sim import Fault, FaultPlan
from tests.server.conftest import open_reservations
from tests.support import eventually, ledger_rows, sim_config_dict

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

HI = [{"role": "user", "content": "Say hi"}]
REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll a condition the system under test makes true (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def with_budget(url: str) -> None:
    engine = make_engine(url)
    try:  # a generous budget: every request holds money while in flight
        BudgetStore(engine).set_rule(Rule("project", "proj-a", "day", 100_000_000, 0.8), utcnow())
    finally:
        engine.dispose()


def reserved_micros(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT COALESCE(SUM(reserved_micros), 0) FROM budget_counters")).scalar_one())
    finally:
        engine.dispose()


def test_client_hanging_up_mid_stream_leaves_a_settled_partial_row(running, sims):
    openai_sim, _ = sims
    with_budget(running.ledger_url)
    # the simulator's first chunk is the role alone: the client sees two deltas, then a stall
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="timeout", after_chunks=3)]))
    headers = {"authorization": f"Bearer {running.key()}"}
    seen = 0
    with httpx.stream("POST", running.base_url + "/v1/chat/completions", headers=headers,
                      json={"model": "backup", "messages": HI, "stream": True},
                      timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 2:
                    break  # the provider stalls now; we hang up
    wait_for(lambda: any(r["status"] == "partial" for r in ledger_rows(running.ledger_url)),
             "the partial row")
    (row,) = ledger_rows(running.ledger_url)
    assert row["stream"] and row["completion_tokens"] > 0 and row["cost_micros"] > 0
    assert open_reservations(running.ledger_url) == 0
    assert reserved_micros(running.ledger_url) == 0


async def test_client_hanging_up_before_the_answer_cancels_the_call(running, sims):
    openai_sim, _ = sims
    with_budget(running.ledger_url)
    openai_sim.set_plan(FaultPlan.latency(120))
    async with httpx.AsyncClient(timeout=180) as client:
        call = asyncio.ensure_future(client.post(
            running.base_url + "/v1/chat/completions", json={"model": "solo", "messages": HI},
            headers={"authorization": f"Bearer {running.key()}"}))
        await asyncio.to_thread(openai_sim.wait_for_requests, 1, 30)  # in flight there
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await asyncio.to_thread(wait_for, lambda: ledger_rows(running.ledger_url), "the row")
    (row,) = ledger_rows(running.ledger_url)
    assert (row["status"], row["error_class"]) == ("error", "Cancelled")
    assert open_reservations(running.ledger_url) == 0
    assert reserved_micros(running.ledger_url) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(tmp_path: Path, sims, ledger_url: str, *args: str) -> tuple[subprocess.Popen,
                                                                            str]:
    openai_sim, anthropic_sim = sims
    config = tmp_path / "model_list.yaml"
    config.write_text(yaml.safe_dump(sim_config_dict(openai_sim.base_url,
                                                     anthropic_sim.base_url, ledger_url)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LLMGW_LEDGER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "llmgw.cli", "serve", "--port", str(port), "--config",
         str(config), "--no-access-log", *args], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"llmgw serve exited: {process.stdout.read()}")
        try:
            return httpx.get(base + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, "llmgw serve to be ready", timeout_s=120)
    return process, base


def test_sigterm_drains_in_flight_requests_then_cancels_the_rest(tmp_path, sims,
                                                                 migrated_ledger_url):
    openai_sim, anthropic_sim = sims
    url = migrated_ledger_url
    with_budget(url)
    engine = make_engine(url)
    key = ApiKeyStore(engine).create(project_id="proj-a", agent_id="dev-1").secret
    engine.dispose()
    # `solo` answers after a short delay (finishes within the grace period); `backup`'s
    # stream stalls after its first delta (cancelled when the grace period ends).
    openai_sim.set_plan(FaultPlan(faults=[
        Fault(kind="latency", delay_s=1.0, model="solo-sim"),
        Fault(kind="timeout", after_chunks=2, model="gpt-sim")]))
    process, base = start_serve(tmp_path, sims, url, "--grace", "3")
    headers = {"authorization": f"Bearer {key}"}
    results: dict[str, object] = {}
    try:
        async def clients() -> None:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as c:
                async def slow() -> None:
                    r = await c.post("/v1/chat/completions",
                                     json={"model": "solo", "messages": HI})
                    results["slow"] = (r.status_code, r.json())

                async def stalled() -> None:
                    lines: list[str] = []
                    results["stalled"] = lines
                    async with c.stream("POST", "/v1/chat/completions", json={
                            "model": "backup", "messages": HI, "stream": True}) as r:
                        results["stalled_status"] = r.status_code
                        async for line in r.aiter_lines():  # ends when the server cuts it
                            lines.append(line)
                            if line.startswith("data: "):
                                results["stalled_first"] = True

                tasks = [asyncio.ensure_future(slow()), asyncio.ensure_future(stalled())]
                await eventually(lambda: results.get("stalled_first") and any(
                    r.model == "solo-sim" for r in openai_sim.requests), "both calls in flight")
                process.send_signal(signal.SIGTERM)
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(clients())
        # uvicorn re-raises the signal it handled once it has shut down
        assert process.wait(timeout=120) in (0, -signal.SIGTERM), process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert results["slow"][0] == 200  # finished within the grace period
    assert results["stalled_status"] == 200 and "data: [DONE]" not in results["stalled"]
    rows = {r["model_group"]: r for r in ledger_rows(url)}
    assert rows["solo"]["status"] == "ok"
    assert rows["backup"]["status"] == "partial"
    assert open_reservations(url) == 0
    assert reserved_micros(url) == 0
    assert json.dumps(results["slow"][1]).count("Simulated answer") == 1


@pytest.mark.parametrize(("path", "body", "delta"), [
    ("/v1/messages", {"model": "primary", "max_tokens": 200, "messages": HI, "stream": True},
     "content_block_delta"),
    ("/v1/responses", {"model": "backup", "input": "Say hi", "max_output_tokens": 200,
                       "stream": True}, "response.output_text.delta"),
], ids=["messages", "responses"])
def test_a_hang_up_mid_stream_settles_every_dialect(running, sims, path, body, delta):
    openai_sim, anthropic_sim = sims
    with_budget(running.ledger_url)
    sim = anthropic_sim if path == "/v1/messages" else openai_sim
    # a few events with the first text delta among them, then the provider stalls
    sim.set_plan(FaultPlan(faults=[Fault(kind="timeout", after_chunks=6)]))
    headers = {"authorization": f"Bearer {running.key()}", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", running.base_url + path, headers=headers, json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("type") == delta:
                break  # text was shown; the provider stalls now and we hang up
    wait_for(lambda: any(r["status"] == "partial" for r in ledger_rows(running.ledger_url)),
             "the partial row")
    (row,) = ledger_rows(running.ledger_url)
    assert row["stream"] and row["completion_tokens"] > 0 and row["cost_micros"] > 0
    assert row["dialect"] == ("anthropic" if path == "/v1/messages" else "responses")
    assert open_reservations(running.ledger_url) == 0
    assert reserved_micros(running.ledger_url) == 0
