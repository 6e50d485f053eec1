"""The spine end to end: LLMGateway -> LiteLLM Router (real provider code over HTTP) ->
simulators -> SQL ledger -> report. Ledger assertions run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from llmgw.errors import (
    AllDeploymentsFailed,
    AuthenticationFailed,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
    UnknownModelGroup,
)
from llmgw.ledger.engine import make_engine
from llmgw.ledger.report import usage_report
from llmgw.sim import Fault, FaultPlan
from tests.support import expected_cost_micros, ledger_rows

HELLO = [{"role": "user", "content": "Design the payments service."}]


async def test_answer_is_recorded_with_exact_cost(gateway, sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(answer="Use a queue.", prompt_tokens=1234, completion_tokens=567))
    done = await gateway.complete("qa-1", "proj-a", HELLO, agent_type="qa-engineer")

    assert done.content == "Use a queue."
    assert (done.model_group, done.requested_group, done.deployment, done.provider) == (
        "backup", "backup", "backup-openai", "openai")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (1234, 567)
    expected = expected_cost_micros("backup-openai", 1234, 567)
    assert expected == 2368  # 1234 * $1/M + 567 * $2/M
    assert done.cost_micros == expected
    assert len(done.attempts) == 1 and done.latency_ms > 0

    [row] = ledger_rows(migrated_ledger_url)
    assert row["request_id"] == done.request_id
    assert (row["status"], row["attempt"], row["agent_id"], row["project_id"], row["agent_type"]) == (
        "ok", 1, "qa-1", "proj-a", "qa-engineer")
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_micros"]) == (1234, 567, expected)
    assert (row["deployment_id"], row["provider"], row["model"]) == (
        "backup-openai", "openai", "openai/gpt-sim")
    # the simulator saw exactly what the ledger says was asked
    [req] = openai_sim.requests
    assert req.json["model"] == "gpt-sim" and req.json["messages"] == HELLO


async def test_fallback_after_500_records_both_attempts(gateway, sims, migrated_ledger_url):
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(500))
    openai_sim.set_plan(FaultPlan(prompt_tokens=21, completion_tokens=7))
    done = await gateway.complete("arch-1", "proj-a", HELLO, agent_type="software-architect")

    assert (done.requested_group, done.model_group, done.deployment) == ("primary", "backup",
                                                                          "backup-openai")
    assert [a.status for a in done.attempts] == ["error", "ok"]
    assert done.attempts[0].error_class == "ProviderUnavailable"
    assert done.attempts[0].deployment == "primary-anthropic"
    assert len(anthropic_sim.requests) == 1 and len(openai_sim.requests) == 1

    rows = ledger_rows(migrated_ledger_url)
    assert [(r["attempt"], r["status"], r["deployment_id"], r["error_class"]) for r in rows] == [
        (1, "error", "primary-anthropic", "ProviderUnavailable"),
        (2, "ok", "backup-openai", None),
    ]
    assert {r["request_id"] for r in rows} == {done.request_id}
    # priced by the serving deployment's configured prices (backup-openai: $1/$2 per M),
    # not the requested group's ($3/$15 per M)
    served = expected_cost_micros("backup-openai", 21, 7)
    assert served == 35 != expected_cost_micros("primary-anthropic", 21, 7)
    assert rows[0]["cost_micros"] == 0 and rows[1]["cost_micros"] == served == done.cost_micros

    engine = make_engine(migrated_ledger_url)
    try:
        [line] = usage_report(engine, by="project")
    finally:
        engine.dispose()
    assert (line.key, line.requests, line.attempts, line.errors) == ("proj-a", 1, 2, 1)
    assert line.cost_micros == done.cost_micros


async def test_every_deployment_failing_lists_each_attempt(gateway, sims, migrated_ledger_url):
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(500))
    openai_sim.set_plan(FaultPlan.error(503))
    with pytest.raises(AllDeploymentsFailed) as info:
        await gateway.complete("arch-1", "proj-a", HELLO, model_group="primary")
    err = info.value
    assert [(a.deployment, a.error_class) for a in err.attempts] == [
        ("primary-anthropic", "ProviderUnavailable"), ("backup-openai", "ProviderUnavailable")]
    assert "primary-anthropic" in str(err) and "backup-openai" in str(err)
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["status"], r["deployment_id"]) for r in rows] == [
        ("error", "primary-anthropic"), ("error", "backup-openai")]
    assert {r["request_id"] for r in rows} == {err.request_id}


async def test_rate_limit_on_only_deployment_carries_retry_after(gateway, sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.rate_limited(retry_after=7))
    with pytest.raises(RateLimited) as info:
        await gateway.complete("dev-1", "proj-b", HELLO, model_group="solo")
    assert info.value.retry_after == 7
    assert info.value.deployment == "solo-openai"
    assert "Retry after 7 s" in str(info.value)
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["error_class"], row["deployment_id"]) == ("error", "RateLimited",
                                                                          "solo-openai")


@pytest.mark.parametrize(("group", "deployment"), [("authg", "auth-anthropic"),
                                                    ("autho", "auth-openai")])
async def test_auth_failure_never_fails_over(gateway, sims, migrated_ledger_url, group, deployment):
    openai_sim, anthropic_sim = sims
    with pytest.raises(AuthenticationFailed) as info:
        await gateway.complete("dev-1", "proj-b", HELLO, model_group=group)
    # exactly one request reached a provider: the configured fallback group was not tried
    assert len(anthropic_sim.requests) + len(openai_sim.requests) == 1
    assert info.value.deployment == deployment
    assert "Check the API key of deployment" in str(info.value)
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["error_class"], row["deployment_id"]) == (
        "error", "AuthenticationFailed", deployment)


async def test_timeout_and_malformed_answers_are_typed(gateway, sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="timeout", times=1),
                                          Fault(kind="malformed", times=1)]))
    with pytest.raises(ProviderUnavailable):
        await gateway.complete("dev-1", "proj-b", HELLO, model_group="solo", timeout=0.5)
    with pytest.raises(ProviderUnavailable):
        await gateway.complete("dev-1", "proj-b", HELLO, model_group="solo")
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["status"], r["error_class"]) for r in rows] == [
        ("error", "ProviderUnavailable"), ("error", "ProviderUnavailable")]
    assert len({r["request_id"] for r in rows}) == 2


@pytest.mark.parametrize(("kwargs", "needle"), [
    (dict(agent_id="", project_id="p", messages=HELLO), "agent_id"),
    (dict(agent_id="a", project_id="  ", messages=HELLO), "project_id"),
    (dict(agent_id="a", project_id="p", messages=[]), "messages"),
    (dict(agent_id="a", project_id="p", messages=[{"role": "wizard", "content": "x"}]), "role"),
    (dict(agent_id="a", project_id="p", messages=[{"role": "user", "content": ""}]), "no content"),
    (dict(agent_id="a", project_id="p", messages="hello"), "messages"),
    (dict(agent_id="a", project_id="p", messages=HELLO, api_key="sk-x"), "api_key"),
    (dict(agent_id="a", project_id="p", messages=HELLO, metadata={"x": object()}), "JSON"),
])
async def test_invalid_requests_write_nothing(gateway, sims, migrated_ledger_url, kwargs, needle):
    with pytest.raises(InvalidRequest) as info:
        await gateway.complete(**kwargs)
    assert needle in str(info.value)
    assert ledger_rows(migrated_ledger_url) == []
    assert all(sim.requests == [] for sim in sims)


async def test_unknown_group_is_refused_before_any_io(gateway, sims, migrated_ledger_url):
    with pytest.raises(UnknownModelGroup, match="Known groups: authg, autho, backup, primary, solo"):
        await gateway.complete("a", "p", HELLO, model_group="nope")
    assert ledger_rows(migrated_ledger_url) == []


async def test_health_and_stats_of_a_running_gateway(gateway, sims):
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(500))
    await gateway.complete("arch-1", "proj-a", HELLO, model_group="primary")  # error + fallback
    anthropic_sim.set_plan(FaultPlan())
    await gateway.complete("qa-1", "proj-a", HELLO, model_group="backup")
    stats = {s.deployment_id: s for s in gateway.stats()}
    assert (stats["primary-anthropic"].requests, stats["primary-anthropic"].errors) == (1, 1)
    assert (stats["backup-openai"].requests, stats["backup-openai"].errors) == (2, 0)
    assert stats["backup-openai"].p50_ms is not None

    health = {h.deployment_id: h for h in await gateway.health(timeout=5)}
    assert health["backup-openai"].status == "up" and health["backup-openai"].latency_ms > 0
    assert health["primary-anthropic"].status == "up"
    assert health["auth-anthropic"].status == "down"  # wrong key
    assert "SECRET" not in (health["auth-anthropic"].error or "")


async def test_drain_waits_for_a_request_in_flight(gateway, sims, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(faults=[Fault(kind="latency", delay_s=0.5)]))
    task = asyncio.ensure_future(gateway.complete("dev-1", "proj-a", HELLO, model_group="backup"))
    await asyncio.to_thread(openai_sim.wait_for_requests, 1, 30)
    assert ledger_rows(migrated_ledger_url) == []
    await gateway.drain()  # returns once the request is recorded and settled
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["request_id"]) == ("ok", (await task).request_id)


async def test_errors_and_stream_events_carry_the_request_id(gateway, sims, migrated_ledger_url):
    from llmgw.errors import ProviderError
    from llmgw.types import ContentDelta, StreamDone

    openai_sim, anthropic_sim = sims
    events = [e async for e in gateway.stream("dev-1", "proj-a", HELLO, model_group="backup")]
    done = events[-1]
    assert isinstance(done, StreamDone)
    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert deltas and {e.request_id for e in deltas} == {done.completion.request_id}
    openai_sim.set_plan(FaultPlan.error(503))
    with pytest.raises(ProviderError) as failed:
        await gateway.complete("dev-1", "proj-a", HELLO, model_group="solo")
    rows = ledger_rows(migrated_ledger_url)
    assert failed.value.request_id == rows[-1]["request_id"] != done.completion.request_id


async def test_streams_and_answers_are_priced_alike_cached_tokens_included(
        sims, migrated_ledger_url):
    """A stream is priced as a non-streamed answer is, by LiteLLM at the deployment's
    configured prices: cached prompt tokens at the cache-read price, in both."""
    from decimal import Decimal

    from llmgw.budgets.pricing import to_micros
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway
    from llmgw.types import StreamDone
    from tests.support import PRICES, sim_config_dict

    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url)
    cache_read = Decimal("0.0000001")
    for dep in data["model_list"]:
        if dep["model_info"]["id"] == "backup-openai":
            dep["model_info"]["cache_read_input_token_cost"] = float(cache_read)
    openai_sim.set_plan(FaultPlan(prompt_tokens=1000, completion_tokens=100, cached_tokens=800))
    gw = LLMGateway(config_from_dict(data))
    try:
        answer = await gw.complete("dev-1", "proj-a", HELLO, model_group="backup", cache=False)
        events = [e async for e in gw.stream("dev-1", "proj-a", HELLO, model_group="backup",
                                             cache=False)]
    finally:
        await gw.aclose()
    streamed = events[-1]
    assert isinstance(streamed, StreamDone)
    inp, out = PRICES["backup-openai"]
    expected = to_micros(200 * inp + 800 * cache_read + 100 * out)
    assert streamed.completion.usage.cached_tokens == answer.usage.cached_tokens == 800
    assert answer.cost_micros == streamed.completion.cost_micros == expected
    assert expected < expected_cost_micros("backup-openai", 1000, 100)  # the cache is cheaper
