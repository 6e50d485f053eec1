"""Events and the Prometheus exporter, scraped over HTTP, checked against the ledger rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select

from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded
from llmgw.ledger.models import UsageEvent
from llmgw.sim import FaultPlan
from tests.support import sim_config_dict

ASK = [{"role": "user", "content": "Plan the sprint."}]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}  # creation timestamps, not counts


def moved(before: dict, after: dict) -> dict:
    """The samples that changed, by how much (new samples count from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def rows(url: str, request_id: str) -> list[UsageEvent]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(UsageEvent).where(UsageEvent.request_id == request_id)
                                     .order_by(UsageEvent.attempt)))
    finally:
        engine.dispose()


@pytest.fixture
async def metered(sims, migrated_ledger_url: str) -> AsyncIterator:
    """A gateway with its exporter on a free port, the answer cache on, a per-request cap."""
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url)
    data["llmgw"]["metrics"] = {"enabled": True, "port": 0}
    data["llmgw"]["cache"] = {"backend": "memory"}
    data["llmgw"]["budgets"] = {"per_request_usd": "0.1"}
    gw = LLMGateway(config_from_dict(data))
    port = gw.metrics._server.server_port
    yield gw, port, migrated_ledger_url
    await gw.aclose()


async def test_a_request_moves_each_counter_by_one_and_cost_by_its_row(metered) -> None:
    gw, port, url = metered
    before = scrape(port)
    done = await gw.complete("qa-1", "proj-m", ASK, agent_type="qa-engineer")
    [row] = rows(url, done.request_id)
    assert row.cost_micros > 0
    who = dict(project="proj-m", agent_type="qa-engineer", model_group="backup",
               deployment="backup-openai")
    after = moved(before, scrape(port))
    duration = {k: after.pop(k) for k in list(after) if k[0].startswith("llmgw_request_duration")}
    assert after == {
        ("llmgw_requests_total", labels(**who, status="ok")): 1,
        ("llmgw_attempts_total", labels(**who, status="ok")): 1,
        ("llmgw_tokens_total", labels(**who, kind="input")): row.prompt_tokens,
        ("llmgw_tokens_total", labels(**who, kind="output")): row.completion_tokens,
        # The kinds dashboards had before input / output: the same counts.
        ("llmgw_tokens_total", labels(**who, kind="prompt")): row.prompt_tokens,
        ("llmgw_tokens_total", labels(**who, kind="completion")): row.completion_tokens,
        ("llmgw_cost_microdollars_total", labels(**who)): row.cost_micros,
    }
    assert duration[("llmgw_request_duration_seconds_count", labels(**who))] == 1
    assert duration[("llmgw_request_duration_seconds_bucket", labels(**who, le="+Inf"))] == 1
    # The caller's wait: at least the provider call, measured from validation to ledger row.
    assert duration[("llmgw_request_duration_seconds_sum", labels(**who))] >= done.latency_ms / 1000
    assert scrape(port)[("llmgw_requests_in_flight", ())] == 0


def _tokens(samples: dict, **who: str) -> dict[str, float]:
    """llmgw_tokens_total of one attempt's labels, by kind."""
    return {dict(k[1])["kind"]: v for k, v in samples.items()
            if k[0] == "llmgw_tokens_total" and {**dict(k[1]), "kind": ""} == {**who, "kind": ""}}


async def test_every_token_kind_of_a_request_moves_its_counter_by_the_ledger_row(
        metered, sims) -> None:
    """Cache reads and reasoning (OpenAI), cache writes of both TTLs (Anthropic): each kind's
    counter moves by exactly what the ledger row keeps."""
    gw, port, url = metered
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(prompt_tokens=5000, cached_tokens=4096, completion_tokens=300,
                                  reasoning_tokens=120))
    anthropic_sim.set_plan(FaultPlan(prompt_tokens=10_100, cached_tokens=6000,
                                     cache_write_5m_tokens=1500, cache_write_1h_tokens=500,
                                     completion_tokens=50))
    before = scrape(port)
    cheap = await gw.complete("qa-1", "proj-k", ASK, agent_type="qa-engineer")
    smart = await gw.complete("arch-1", "proj-k", ASK, agent_type="software-architect")
    after = scrape(port)
    for done, who in ((cheap, dict(project="proj-k", agent_type="qa-engineer",
                                   model_group="backup", deployment="backup-openai")),
                      (smart, dict(project="proj-k", agent_type="software-architect",
                                   model_group="primary", deployment="primary-anthropic"))):
        [row] = rows(url, done.request_id)
        ledger = {"input": row.prompt_tokens, "output": row.completion_tokens,
                  "cache_read": row.cache_read_tokens, "cache_write": row.cache_write_tokens,
                  "cache_write_1h": row.cache_write_1h_tokens, "reasoning": row.reasoning_tokens,
                  "prompt": row.prompt_tokens, "completion": row.completion_tokens}
        got = {kind: n - _tokens(before, **who).get(kind, 0.0)
               for kind, n in _tokens(after, **who).items()}
        assert got == {kind: n for kind, n in ledger.items() if n}
    assert (rows(url, cheap.request_id)[0].cache_read_tokens,
            rows(url, cheap.request_id)[0].reasoning_tokens) == (4096, 120)
    smart_row = rows(url, smart.request_id)[0]
    assert (smart_row.cache_read_tokens, smart_row.cache_write_tokens,
            smart_row.cache_write_1h_tokens) == (6000, 2000, 500)


async def test_fallback_error_cache_hit_and_refusal_each_counted_once(metered, sims) -> None:
    gw, port, url = metered
    openai_sim, anthropic_sim = sims
    anthropic_sim.plan = FaultPlan.parse("500:times=1")
    before = scrape(port)
    done = await gw.complete("arch-1", "proj-m", ASK, agent_type="software-architect")
    failed, served = rows(url, done.request_id)
    after = moved(before, scrape(port))
    who = dict(project="proj-m", agent_type="software-architect")
    primary = dict(**who, model_group="primary", deployment="primary-anthropic")
    backup = dict(**who, model_group="backup", deployment="backup-openai")
    assert after[("llmgw_requests_total", labels(**backup, status="ok"))] == 1
    assert after[("llmgw_attempts_total", labels(**primary, status="error"))] == 1
    assert after[("llmgw_errors_total", labels(**primary, error_class=failed.error_class))] == 1
    assert after[("llmgw_fallbacks_total", labels(**who, from_group="primary",
                                                  to_group="backup"))] == 1
    assert after[("llmgw_cost_microdollars_total", labels(**backup))] == served.cost_micros
    assert sum(v for k, v in after.items() if k[0] == "llmgw_requests_total") == 1

    # The fallback's answer is cached under the group that served it: ask that group again.
    before = scrape(port)
    hit = await gw.complete("arch-1", "proj-m", ASK, agent_type="software-architect",
                            model_group="backup")
    [cached] = rows(url, hit.request_id)
    after = moved(before, scrape(port))
    assert after[("llmgw_requests_total", labels(**backup, status="cached"))] == 1
    assert after[("llmgw_saved_microdollars_total", labels(**backup))] == cached.saved_micros
    assert cached.saved_micros == served.cost_micros > 0
    assert not any(k[0] == "llmgw_cost_microdollars_total" for k in after)

    before = scrape(port)
    with pytest.raises(BudgetExceeded):
        await gw.complete("arch-1", "proj-m", ASK, agent_type="software-architect",
                          max_tokens=100_000)
    after = moved(before, scrape(port))
    assert after[("llmgw_requests_total", labels(**primary | {"deployment": ""},
                                                 status="refused"))] == 1
    assert after[("llmgw_budget_refusals_total", labels(scope="request", period="request"))] == 1
    assert scrape(port)[("llmgw_requests_in_flight", ())] == 0


async def test_hooks_see_each_request_start_and_finish_once_in_order(gateway, sims) -> None:
    openai_sim, anthropic_sim = sims
    anthropic_sim.plan = FaultPlan.parse("503:times=1")
    seen: list[tuple[str, dict]] = []
    for name in ("request.started", "request.finished", "fallback", "cache.hit"):
        gateway.on(name, lambda event, payload: seen.append((event, payload)))
    done = await gateway.complete("arch-2", "proj-h", ASK, agent_type="software-architect")
    assert [e for e, _ in seen] == ["request.started", "fallback", "request.finished"]
    started, fallback, finished = (p for _, p in seen)
    assert started == {"request_id": done.request_id, "agent_id": "arch-2",
                       "project_id": "proj-h", "agent_type": "software-architect",
                       "model_group": "primary", "stream": False}
    assert (fallback["from_deployment"], fallback["to_deployment"]) == ("primary-anthropic",
                                                                        "backup-openai")
    assert finished["request_id"] == done.request_id and finished["status"] == "ok"
    assert finished["attempts"] == done.attempts and finished["ledger_written"] is True
    assert finished["cost_micros"] == done.cost_micros
    assert (finished["requested_group"], finished["model_group"]) == ("primary", "backup")

    seen.clear()
    events = [e async for e in gateway.stream("arch-2", "proj-h", ASK, model_group="backup")]
    assert [e for e, _ in seen] == ["request.started", "request.finished"]
    assert seen[0][1]["stream"] is True and seen[1][1]["cost_micros"] == events[-1].completion.cost_micros


async def test_a_failing_handler_never_fails_the_request(gateway, caplog) -> None:
    def broken(event: str, payload: dict) -> None:
        raise RuntimeError("subscriber bug")

    gateway.on("request.finished", broken)
    done = await gateway.complete("qa-2", "proj-h", ASK, agent_type="qa-engineer")
    assert done.content
    assert any("handler for request.finished failed" in r.getMessage() for r in caplog.records)
