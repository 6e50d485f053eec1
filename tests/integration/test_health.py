"""`llmgw.observe.health`: probes against every simulator present, LiteLLM's cooldowns, the stats
collector, and `llmgw health` end to end."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.observe.health import DeploymentHealth, StatsCollector, probe
from llmgw.sim import FaultPlan, OpenAISim, SimServer, registry

GOOD_KEY = "sk-health-GOOD-0123456789abcdef"
WRONG_KEY = "sk-health-WRONG-fedcba9876543210"
# Providers whose cheap route is authenticated; ruvLLM's /health takes no key, like the
# real server, so a wrong key cannot show there.
AUTHENTICATED = {"openai", "anthropic", "gemini", "cohere", "ollama"}


class NoModelsSim(OpenAISim):
    """An OpenAI-compatible server without `/models`: the probe must fall back to a
    1-token completion, which (unlike the models route) goes through the fault plan."""

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.handle_generation)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimServer]]:
    """Every simulator the registry can load, each requiring GOOD_KEY."""
    present = registry.available()
    assert {"openai", "anthropic"} <= {p.name for p in present}
    running: dict[str, SimServer] = {}
    try:
        for p in present:
            running[p.name] = p.load()(api_key=GOOD_KEY).start()
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _dep(dep_id: str, model: str, api_base: str, key: str | None = GOOD_KEY) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model, "api_base": api_base}
    if key is not None:
        params["api_key"] = key
    return {"model_name": dep_id, "litellm_params": params,
            "model_info": {"id": dep_id, "input_cost_per_token": 0, "output_cost_per_token": 0}}


def _config(sims: dict[str, SimServer], *extra: dict[str, Any]) -> Config:
    data = registry.snippet_dict({n: s.base_url for n, s in sims.items()}, api_key=GOOD_KEY)
    data["model_list"] += extra
    return config_from_dict(data)


def _by_id(results: list[DeploymentHealth]) -> dict[str, DeploymentHealth]:
    return {r.deployment_id: r for r in results}


async def test_probe_up_down_and_latency(sims, closed_port) -> None:
    dead = _dep("dead-openai", "openai/sim-gpt", f"http://127.0.0.1:{closed_port}/v1")
    config = _config(sims, dead)
    results = await probe(config, timeout=5)

    assert [r.deployment_id for r in results] == [d.id for d in config.model_list]
    by_id = _by_id(results)
    for name in sims:
        r = by_id[f"sim-{name}"]
        assert (r.status, r.error) == ("up", None), r
        assert r.provider == registry.get(name).prefix
        assert r.latency_ms is not None and r.latency_ms > 0
        assert r.checked.startswith("GET http://127.0.0.1:")
        assert not r.cooling_down
    assert all(s.requests for s in sims.values())  # each probe really reached its simulator
    down = by_id["dead-openai"]
    assert down.status == "down" and down.latency_ms is None
    assert f"cannot connect to http://127.0.0.1:{closed_port}" in (down.error or "")


async def test_wrong_key_is_an_auth_error_without_the_key(sims) -> None:
    wrong = [_dep(f"wrong-{n}", registry.get(n).model, registry.get(n).api_base(s.base_url),
                  WRONG_KEY)
             for n, s in sims.items() if n in AUTHENTICATED]
    assert len(wrong) >= 2
    results = _by_id(await probe(config_from_dict({
        "model_list": wrong, "llmgw": {"default_group": wrong[0]["model_name"]}})))
    for dep in wrong:
        r = results[dep["model_info"]["id"]]
        assert r.status == "down", r
        assert (r.error or "").startswith("authentication failed (HTTP 4"), r
        dump = r.model_dump_json()
        assert WRONG_KEY not in dump and GOOD_KEY not in dump


async def test_missing_env_key_is_reported_not_sent(sims, monkeypatch) -> None:
    monkeypatch.delenv("LLMGW_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("LLMGW_TEST_SET_KEY", GOOD_KEY)
    base = sims["openai"].base_url + "/v1"
    config = config_from_dict({"model_list": [
        _dep("env-unset", "openai/sim-gpt", base, "os.environ/LLMGW_TEST_UNSET_KEY"),
        _dep("env-set", "openai/sim-gpt", base, "os.environ/LLMGW_TEST_SET_KEY"),
    ], "llmgw": {"default_group": "env-set"}})
    results = _by_id(await probe(config))
    assert results["env-set"].status == "up"
    unset = results["env-unset"]
    assert unset.status == "down" and unset.checked == "config"
    assert unset.error == "api_key: environment variable LLMGW_TEST_UNSET_KEY is not set"


async def test_ruvector_unreachable_with_ollama_fallback(closed_port) -> None:
    """ruvLLM refused but its deployment's Ollama fallback answers: up, and says so."""
    ollama = registry.get("ollama")
    dead = f"http://127.0.0.1:{closed_port}"
    with ollama.load()() as fallback_sim:
        fallback_url = fallback_sim.base_url
        with_fallback = _dep("ruv-fallback", "ruvector/auto", dead, key=None)
        with_fallback["litellm_params"].update(ollama_api_base=fallback_url,
                                               ollama_model="llama3.2")
        without = _dep("ruv-alone", "ruvector/auto", dead, key=None)
        results = _by_id(await probe(config_from_dict({
            "model_list": [with_fallback, without], "llmgw": {"default_group": "ruv-alone"}})))

    served = results["ruv-fallback"]
    assert served.status == "up" and served.checked == f"GET {fallback_url}/api/tags"
    assert "answering through its Ollama fallback" in (served.error or "")
    assert results["ruv-alone"].status == "down"
    assert results["ruv-alone"].checked == f"GET {dead}/health"


async def test_completion_fallback_where_no_models_route() -> None:
    """404 on /models -> a 1-token completion through LiteLLM, with its faults and latency."""
    with NoModelsSim(api_key=GOOD_KEY) as ok, \
            NoModelsSim(FaultPlan.latency(0.2), api_key=GOOD_KEY) as slow, \
            NoModelsSim(FaultPlan.error(401), api_key=GOOD_KEY) as refusing, \
            NoModelsSim(FaultPlan.timeout(), api_key=GOOD_KEY) as stuck:
        deps = [_dep(name, "openai/sim-gpt", sim.base_url + "/v1")
                for name, sim in (("ok", ok), ("slow", slow), ("refusing", refusing),
                                  ("stuck", stuck))]
        # LiteLLM's first call in a process loads its provider code (about a second, more
        # under load): warm it up so the short timeout below measures the servers only.
        warm = await probe(config_from_dict({"model_list": deps[:1],
                                             "llmgw": {"default_group": "ok"}}), timeout=60)
        assert warm[0].status == "up", warm
        config = config_from_dict({"model_list": deps, "llmgw": {"default_group": "ok"}})
        results = _by_id(await probe(config, timeout=2.0))
        generations = [len(s.responses) for s in (ok, slow, refusing)]

    assert generations == [2, 1, 1]  # one completion per probe, no retries
    assert results["ok"].status == "up" and results["ok"].checked == "completion"
    assert results["slow"].status == "up"
    assert results["slow"].latency_ms is not None and results["slow"].latency_ms >= 200
    refusing_r = results["refusing"]
    assert refusing_r.status == "down"
    assert (refusing_r.error or "").startswith("authentication failed (HTTP 401)")
    assert GOOD_KEY not in refusing_r.model_dump_json()
    assert results["stuck"].status == "down"
    assert results["stuck"].error == "no answer within 2 s"


async def test_cooling_down_comes_from_the_router() -> None:
    from llmgw.redact import Redactor
    from llmgw.routing.router import build_router

    with OpenAISim(FaultPlan.rate_limited(retry_after=120), api_key=GOOD_KEY) as limited:
        base = limited.base_url + "/v1"
        a, b = _dep("hot-a", "openai/sim-a", base), _dep("hot-b", "openai/sim-b", base)
        a["model_name"] = b["model_name"] = "hot"
        config = config_from_dict({
            "model_list": [a, b],
            # A long cooldown, so it cannot run out between the request and the probe.
            "router_settings": {"num_retries": 0, "cooldown_time": 300},
            "llmgw": {"default_group": "hot"}})
        router = build_router(config, Redactor(config.secret_values()))
        from llmgw._litellm import import_litellm

        with pytest.raises(import_litellm().RateLimitError):
            await router.acompletion(model="hot", messages=[{"role": "user", "content": "hi"}])
        hit = {r.model for r in limited.requests}
        results = _by_id(await probe(config, router))

    cooled = {dep_id for dep_id, r in results.items() if r.cooling_down}
    assert cooled, f"nothing cooling down after 429s from {hit}"
    assert all(0 < results[d].cooldown_remaining_s <= 300 for d in cooled)
    assert all(results[d].cooldown_remaining_s is None for d in set(results) - cooled)
    assert cooled <= {{"sim-a": "hot-a", "sim-b": "hot-b"}[m] for m in hit}
    assert all(r.status == "up" for r in results.values())  # /models answers; cooldown is separate


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
async def test_limits_and_current_use_per_deployment(migrated_ledger_url: str) -> None:
    """Limits as configured (max_parallel_requests as LiteLLM derives it from rpm), and use
    this minute: requests sent, tokens answered, requests in flight right now."""
    from llmgw.gateway import LLMGateway

    if 60 - time.time() % 60 < 5:  # keep the calls and the probe inside one minute
        await asyncio.sleep(60 - time.time() % 60 + 0.05)
    ask = [{"role": "user", "content": "How busy is it?"}]
    with OpenAISim(api_key=GOOD_KEY) as sim:
        base = sim.base_url + "/v1"
        busy = _dep("busy-a", "openai/sim-busy", base)
        busy["litellm_params"].update(rpm=50, tpm=100_000)
        both = _dep("par-a", "openai/sim-par", base)
        both["litellm_params"].update(max_parallel_requests=3)
        idle = _dep("idle-a", "openai/sim-idle", base)
        gw = LLMGateway(config_from_dict({
            "model_list": [busy, both, idle], "router_settings": {"num_retries": 0},
            "llmgw": {"default_group": "busy-a", "ledger": {"url": migrated_ledger_url},
                      "cache": {"backend": "none"}}}))
        try:
            for _ in range(3):
                await gw.complete("a", "p", ask, model_group="busy-a")
            sim.set_plan(FaultPlan.latency(60))  # the next call stays in flight
            held = asyncio.create_task(gw.complete("a", "p", ask, model_group="busy-a"))
            await asyncio.to_thread(sim.wait_for_requests, 4)
            results = _by_id(await gw.health())
            held.cancel()
            with pytest.raises(asyncio.CancelledError):
                await held
        finally:
            await gw.aclose()
    b, p, i = results["busy-a"], results["par-a"], results["idle-a"]
    assert (b.rpm, b.tpm, b.max_parallel_requests) == (50, 100_000, 50)
    assert (b.requests_this_minute, b.in_flight) == (4, 1)
    assert b.tokens_this_minute > 0
    assert (p.rpm, p.tpm, p.max_parallel_requests) == (None, None, 3)
    assert (p.requests_this_minute, p.tokens_this_minute, p.in_flight) == (0, 0, 0)
    assert (i.rpm, i.tpm, i.max_parallel_requests, i.in_flight) == (None, None, None, 0)


def test_stats_collector_window_and_percentiles() -> None:
    stats = StatsCollector(window=10)
    for ms in range(1, 21):  # 20 ok attempts, 1..20 ms; the window keeps 11..20
        stats.record("a", True, float(ms))
    stats.record("a", False, 999.0)  # an error: counted, not in the latency percentiles
    stats.record("b", False, None)
    a, b = stats.snapshot()

    assert (a.deployment_id, a.requests, a.errors) == ("a", 10, 1)
    assert a.error_rate == pytest.approx(0.1)
    assert (a.total_requests, a.total_errors) == (21, 1)
    # Window: 12..20 ok plus the error; nearest rank over the 9 successes.
    assert (a.p50_ms, a.p95_ms) == (16.0, 20.0)
    assert (b.requests, b.errors, b.error_rate, b.p50_ms, b.p95_ms) == (1, 1, 1.0, None, None)
    stats.reset()
    assert stats.snapshot() == []
    with pytest.raises(ValueError):
        StatsCollector(window=0)


SCRIPT = textwrap.dedent("""
    import sys, typer
    from llmgw.cli import app
    if not any(g.name == "health" for g in app.registered_groups):
        from llmgw.cli import health
        app.add_typer(health.app, name="health")
    sys.argv[0] = "llmgw"
    app()
""")


def test_health_command_json_end_to_end(sims, closed_port, tmp_path: Path) -> None:
    up = {n: s for n, s in sims.items() if n in ("openai", "anthropic")}
    data = registry.snippet_dict({n: s.base_url for n, s in up.items()}, api_key=GOOD_KEY)
    for entry in data["model_list"]:
        if entry["model_info"]["id"] == "sim-openai":
            entry["litellm_params"].update(rpm=60, max_parallel_requests=4)
    data["model_list"].append(
        _dep("dead-anthropic", "anthropic/claude-sim", f"http://127.0.0.1:{closed_port}"))
    path = tmp_path / "model_list.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")},
           "LLMGW_CONFIG": str(path)}

    proc = subprocess.run([sys.executable, "-c", SCRIPT, "health", "--format", "json",
                           "--timeout", "5"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["deployment_id"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"sim-openai", "sim-anthropic", "dead-anthropic"}
    assert rows["sim-openai"]["status"] == rows["sim-anthropic"]["status"] == "up"
    assert rows["dead-anthropic"]["status"] == "down"
    assert rows["sim-openai"]["cooling_down"] is False
    assert rows["sim-openai"]["cooldown_remaining_s"] is None
    assert (rows["sim-openai"]["rpm"], rows["sim-openai"]["max_parallel_requests"]) == (60, 4)
    assert rows["sim-anthropic"]["rpm"] is None
    assert all((r["requests_this_minute"], r["tokens_this_minute"], r["in_flight"]) == (0, 0, 0)
               for r in rows.values())
    assert GOOD_KEY not in proc.stdout + proc.stderr
