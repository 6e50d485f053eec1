"""Several gateway processes, one Redis, one ledger: Router state, cache and reports shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

from llmgw.cli import app as cli
from llmgw.ledger.models import UsageEvent
from llmgw.sim import FaultPlan
from tests.support import sim_config_dict

REPO = Path(__file__).resolve().parents[2]


def run_gateway_process(config: Path, agent_type: str, count: int = 1) -> list[dict]:
    """One gateway process sending `count` requests; its completions, as the worker prints them."""
    done = subprocess.run([sys.executable, "-m", "tests.scale.worker", str(config), agent_type,
                           str(count)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def write_config(tmp_path: Path, sims, ledger_url: str, **router_settings) -> Path:
    openai_sim, anthropic_sim = sims
    # allowed_fails=0: one failure cools a deployment down (LiteLLM otherwise never cools down
    # the only deployment of a group); the failure counter itself is shared through Redis too.
    path = tmp_path / "config.json"
    path.write_text(json.dumps(sim_config_dict(openai_sim.base_url, anthropic_sim.base_url,
                                               ledger_url, cooldown_time=60, allowed_fails=0,
                                               **router_settings)))
    return path


def ledger_rows(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(select(UsageEvent.deployment_id, UsageEvent.status)).all())
    finally:
        engine.dispose()


def test_a_deployment_cooled_down_in_one_process_is_skipped_by_another(
        sims, migrated_ledger_url: str, redis_servers, tmp_path: Path) -> None:
    openai_sim, anthropic_sim = sims
    anthropic_sim.plan = FaultPlan.rate_limited(retry_after=30)  # primary's only deployment
    redis = redis_servers()
    config = write_config(tmp_path, sims, migrated_ledger_url, redis_url=redis.url)

    [first] = run_gateway_process(config, "software-architect")
    assert first["deployment"] == "backup-openai"
    assert first["attempts"] == [["primary-anthropic", "error"], ["backup-openai", "ok"]]
    assert len(anthropic_sim.requests) == 1

    # A second process, started after the cooldown: it never calls the cooled-down deployment.
    [second] = run_gateway_process(config, "software-architect")
    assert second["attempts"] == [["backup-openai", "ok"]]
    assert len(anthropic_sim.requests) == 1 and len(openai_sim.requests) == 2
    # Both processes wrote into the one ledger: the report sees every attempt.
    assert ledger_rows(migrated_ledger_url) == [("backup-openai", "ok"), ("backup-openai", "ok"),
                                                ("primary-anthropic", "error")]
    # `llmgw health` from a shell (a third Router) shows the fleet's cooldown too.
    shown = CliRunner().invoke(cli, ["health", "--config", str(config), "--format", "json"])
    cooling = {h["deployment_id"]: h["cooling_down"] for h in json.loads(shown.stdout)}
    assert cooling["primary-anthropic"] is True and cooling["backup-openai"] is False


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
async def test_without_redis_each_process_learns_the_outage_itself(
        sims, migrated_ledger_url: str, tmp_path: Path) -> None:
    # The control: the same two processes without shared state both hit the failing deployment.
    openai_sim, anthropic_sim = sims
    anthropic_sim.plan = FaultPlan.rate_limited(retry_after=30)
    config = write_config(tmp_path, sims, migrated_ledger_url)
    for _ in range(2):
        [done] = run_gateway_process(config, "software-architect")
        assert done["attempts"] == [["primary-anthropic", "error"], ["backup-openai", "ok"]]
    assert len(anthropic_sim.requests) == 2


async def test_an_unreachable_redis_is_one_warning_not_an_outage(
        sims, migrated_ledger_url: str, redis_servers, caplog) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    redis = redis_servers(password="redis-pw-0042")
    url = redis.url
    redis.stop()
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                           redis_url=url)
    with caplog.at_level("WARNING", logger="llmgw.routing.router"):
        gw = LLMGateway(config_from_dict(data))
    try:
        [warning] = [r.getMessage() for r in caplog.records if "Shared Router state" in r.getMessage()]
        assert "unreachable" in warning and "redis-pw-0042" not in warning and "***" in warning
        done = await gw.complete("dev-1", "proj-a", [{"role": "user", "content": "Hello"}])
        assert done.content and done.deployment == "backup-openai"
    finally:
        await gw.aclose()


async def test_one_redis_setting_serves_the_router_and_the_answer_cache(
        sims, migrated_ledger_url: str, redis_servers) -> None:
    from llmgw.cache.backends import RedisCache
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    redis = redis_servers()
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                           redis_url=redis.url)
    data["llmgw"]["cache"] = {"backend": "redis"}  # no url of its own
    gw = LLMGateway(config_from_dict(data))
    try:
        assert isinstance(gw.cache, RedisCache) and gw.router.cache.redis_cache is not None
        ask = [{"role": "user", "content": "Same question twice"}]
        first = await gw.complete("dev-1", "proj-a", ask)
        second = await gw.complete("dev-1", "proj-a", ask)
        assert (first.cached, second.cached) == (False, True)
        assert len(openai_sim.requests) == 1
    finally:
        await gw.aclose()


def test_an_answer_cached_by_one_process_is_served_by_another(
        sims, migrated_ledger_url: str, redis_servers, tmp_path: Path) -> None:
    openai_sim, anthropic_sim = sims
    redis = redis_servers()
    path = tmp_path / "config.json"
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                           redis_url=redis.url)
    data["llmgw"]["cache"] = {"backend": "redis"}  # the Router's Redis serves the cache too
    path.write_text(json.dumps(data))
    [first] = run_gateway_process(path, "qa-engineer")
    [second] = run_gateway_process(path, "qa-engineer")
    assert first["attempts"] == [["backup-openai", "ok"]]
    assert second["attempts"] == [["backup-openai", "cached"]]
    assert len(openai_sim.requests) == 1
    assert ledger_rows(migrated_ledger_url) == [("backup-openai", "cached"),
                                                ("backup-openai", "ok")]
