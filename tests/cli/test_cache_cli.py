"""`llmgw cache stats|clear` against a real Redis and a real ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import yaml
from typer.testing import CliRunner

from llmgw.cache import CachedAnswer, cache_key, scope_of
from llmgw.cache.backends import RedisCache
from llmgw.cli import app
from llmgw.ledger.store import LedgerStore, usage_row
from llmgw.pipeline.context import RequestContext
from llmgw.types import Attempt, Usage

runner = CliRunner()


def _answer() -> CachedAnswer:
    return CachedAnswer(content="hi", usage=Usage(prompt_tokens=1, completion_tokens=1),
                        cost_micros=40, model_group="g", requested_group="g", request_id="r0",
                        created_at=datetime(2026, 11, 23))


def test_stats_and_clear_by_project(tmp_path, monkeypatch, migrated_ledger_url, redis_url):
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    cfg = tmp_path / "model_list.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"},
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}],
        "llmgw": {"default_group": "g", "cache": {"backend": "redis", "url": redis_url}}}))
    monkeypatch.setenv("LLMGW_CONFIG", str(cfg))
    monkeypatch.delenv("LLMGW_CACHE_URL", raising=False)

    async def fill() -> None:
        cache = RedisCache(redis_url)
        for project, n in (("a", 3), ("b", 2)):
            for i in range(n):
                key = cache_key(scope_of("project", project_id=project, agent_type=None), "g",
                                [{"role": "user", "content": str(i)}], {})
                await cache.set(key, _answer(), 60)
        await cache.aclose()

    asyncio.run(fill())
    store = LedgerStore(migrated_ledger_url)
    ctx = RequestContext("r1", "agent", None, "a")
    store.write_sync([usage_row(ctx, Attempt(attempt=1, model_group="g", status="cached"),
                                ts=datetime(2026, 11, 23), saved_micros=40)])
    store.dispose()

    out = runner.invoke(app, ["cache", "stats", "--format", "json", "--ledger-url",
                              migrated_ledger_url])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert (data["hits"], data["saved_micros"], data["saved_usd"]) == (1, 40, "0.000040")
    assert data["backend"]["entries"] == 5
    out = runner.invoke(app, ["cache", "clear", "--project", "a"])
    assert out.exit_code == 0 and "Deleted 3" in out.output
    out = runner.invoke(app, ["cache", "stats", "--format", "json", "--ledger-url",
                              migrated_ledger_url])
    assert json.loads(out.output)["backend"]["entries"] == 2
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 2  # says what to clear


def test_clear_on_a_memory_cache_explains(tmp_path, monkeypatch):
    cfg = tmp_path / "model_list.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"},
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}],
        "llmgw": {"default_group": "g"}}))
    monkeypatch.setenv("LLMGW_CONFIG", str(cfg))
    out = runner.invoke(app, ["cache", "clear", "--all"])
    assert out.exit_code == 1 and "inside each gateway process" in out.output


def _redis_config(tmp_path, monkeypatch, redis_url, scope="project"):
    cfg = tmp_path / "model_list.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"},
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}],
        "llmgw": {"default_group": "g",
                  "cache": {"backend": "redis", "url": redis_url, "scope": scope}}}))
    monkeypatch.setenv("LLMGW_CONFIG", str(cfg))
    monkeypatch.delenv("LLMGW_CACHE_URL", raising=False)


# Each is a prefix of the next, or a Redis glob pattern that would match the others.
PREFIXED = {"a": 1, "a:b": 2, "a*": 3, "a?": 4, "a[b]": 5, "a\\b": 6, "a:b:c": 7}


def test_a_project_that_prefixes_another_is_counted_and_cleared_alone(
        tmp_path, monkeypatch, migrated_ledger_url, redis_url):
    """Issue 20, defect 7: `clear --project a` deleted project `a:b`'s answers too."""
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    _redis_config(tmp_path, monkeypatch, redis_url)

    async def fill() -> None:
        cache = RedisCache(redis_url)
        for project, n in PREFIXED.items():
            scope = scope_of("project", project_id=project, agent_type=None)
            for i in range(n):
                await cache.set(cache_key(scope, "g", [{"role": "user", "content": str(i)}], {}),
                                _answer(), 60)
        await cache.aclose()

    asyncio.run(fill())

    def entries(project):
        out = runner.invoke(app, ["cache", "stats", "--format", "json", "--project", project,
                                  "--ledger-url", migrated_ledger_url])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["backend"]["entries"]

    # Clearing `a` first: everything else stays.
    out = runner.invoke(app, ["cache", "clear", "--project", "a"])
    assert out.exit_code == 0 and "Deleted 1 cached answer(s) of project a." in out.output
    assert {p: entries(p) for p in PREFIXED} == {**PREFIXED, "a": 0}
    for gone, project in enumerate(list(PREFIXED)[1:], start=2):  # then each of the others
        out = runner.invoke(app, ["cache", "clear", "--project", project])
        assert out.exit_code == 0, out.output
        assert f"Deleted {PREFIXED[project]} cached answer(s) of project {project}." in out.output
        assert {p: entries(p) for p in PREFIXED} == {
            p: 0 if i < gone else n for i, (p, n) in enumerate(PREFIXED.items())}


def test_clear_by_project_refuses_a_cache_not_scoped_by_project(tmp_path, monkeypatch,
                                                                  redis_url):
    _redis_config(tmp_path, monkeypatch, redis_url, scope="global")
    out = runner.invoke(app, ["cache", "clear", "--project", "a"])
    assert out.exit_code == 1 and "not kept per project" in out.output and "--all" in out.output
