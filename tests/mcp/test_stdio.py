"""`llmgw mcp` over stdio, spawned by the official MCP client, as a trusted local process
(LLMGW_PROJECT / LLMGW_AGENT / LLMGW_AGENT_TYPE)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from mcp import Client

from llmgw.sim import FaultPlan
from tests.mcp.conftest import (
    ASK,
    MODES,
    REPO,
    TOOLS,
    check_schemas,
    db,
    holds,
    output_valid,
    stdio_server,
)
from tests.support import expected_cost_micros, ledger_rows

IDENTITY = {"LLMGW_PROJECT": "proj-a", "LLMGW_AGENT": "dev-1", "LLMGW_AGENT_TYPE": "qa-engineer"}


async def test_every_tool_answers_as_the_env_identity(sims, config_file, migrated_ledger_url):
    openai_sim, _ = sims
    async with Client(stdio_server(config_file, **IDENTITY)) as client:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        check_schemas(listed)
        tool = {t.name: t for t in listed}

        chat = await client.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50})
        assert not chat.is_error, chat.content
        answer = chat.structured_content
        output_valid(tool["chat_completion"], answer)
        assert answer["content"]
        assert (answer["model_group"], answer["deployment"]) == ("backup", "backup-openai")
        usage = answer["usage"]
        assert answer["cost_micros"] == expected_cost_micros(
            "backup-openai", usage["prompt_tokens"], usage["completion_tokens"]) > 0

        models = await client.call_tool("list_models", {})
        output_valid(tool["list_models"], models.structured_content)
        groups = {g["name"]: g for g in models.structured_content["groups"]}
        assert groups["primary"]["fallbacks"] == ["backup"]
        assert groups["backup"]["default"] is True
        assert groups["primary"]["deployments"][0] | {} == {
            "id": "primary-anthropic", "provider": "anthropic", "model": "anthropic/claude-sim",
            "input_usd_per_mtok": "3.00", "output_usd_per_mtok": "15.00"}

        estimate = await client.call_tool("estimate_cost", {"messages": ASK, "max_tokens": 50})
        output_valid(tool["estimate_cost"], estimate.structured_content)
        counted = await client.call_tool("count_tokens", {"messages": ASK})
        output_valid(tool["count_tokens"], counted.structured_content)
        assert counted.structured_content["model_group"] == "backup"
        assert (counted.structured_content["prompt_tokens"]
                == estimate.structured_content["prompt_tokens"] > 0)
        assert estimate.structured_content["worst_case_micros"] > 0
        assert estimate.structured_content["would_be_refused"] is False

        report = await client.call_tool("get_usage", {"by": "agent"})
        output_valid(tool["get_usage"], report.structured_content)
        assert report.structured_content["project"] == "proj-a"
        assert [(r["key"], r["requests"], r["cost_micros"])
                for r in report.structured_content["rows"]] == [
            ("dev-1", 1, answer["cost_micros"])]
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["request_id"], r["project_id"], r["agent_id"], r["agent_type"], r["status"])
            for r in rows] == [(answer["request_id"], "proj-a", "dev-1", "qa-engineer", "ok")]
    assert rows[0]["metadata"]["front"] == "mcp"
    assert len(openai_sim.requests) == 1  # estimate and count_tokens call no provider


async def test_progress_while_the_answer_streams(sims, config_file, migrated_ledger_url):
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    async with Client(stdio_server(config_file, **IDENTITY)) as client:
        chat = await client.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50},
                                      progress_callback=progress)
    assert not chat.is_error, chat.content
    content = chat.structured_content["content"]
    assert seen, "no progress notification"
    values = [v for v, _, _ in seen]
    assert values == sorted(values) and values[-1] == len(content)
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["status"], r["stream"]) for r in rows] == [("ok", True)]


async def test_errors_are_tool_results_and_bad_arguments_record_nothing(
        sims, config_file, migrated_ledger_url):
    openai_sim, _ = sims
    bad = [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "a\x00b"}]},
        {"messages": ASK, "max_tokens": 0},
        {"messages": ASK, "temperature": "hot"},
        {"messages": ASK, "model_group": "no-such-group"},
        {"messages": ASK, "agent_type": "devops-engineer"},  # not the key's agent type
    ]
    async with Client(stdio_server(config_file, **IDENTITY)) as client:
        for arguments in bad:
            result = await client.call_tool("chat_completion", arguments)
            assert result.is_error, arguments
        unknown = await client.call_tool("chat_completion",
                                         {"messages": ASK, "model_group": "no-such-group"})
        assert "Known groups" in unknown.content[0].text  # the typed error's hint
        for name in ("estimate_cost", "count_tokens"):
            assert (await client.call_tool(name, {"messages": []})).is_error
        assert (await client.call_tool("get_usage", {"since": "yesterday-ish"})).is_error
        assert db(migrated_ledger_url, "SELECT COUNT(*) FROM usage_events")[0][0] == 0

        refused = await client.call_tool(
            "chat_completion", {"messages": ASK, "max_tokens": 1_000_000})
        assert refused.is_error
        assert refused.structured_content["error"] == "BudgetExceeded"
        assert "per-request cap" in refused.content[0].text

        openai_sim.set_plan(FaultPlan.error(503))
        failed = await client.call_tool("chat_completion",
                                        {"messages": ASK, "model_group": "solo",
                                         "max_tokens": 20})
        assert failed.is_error
        assert failed.structured_content["error"] in ("ProviderUnavailable",
                                                      "AllDeploymentsFailed")
    statuses = [(r["status"], r["model_group"], r["project_id"], r["agent_id"])
                for r in ledger_rows(migrated_ledger_url)]
    assert statuses[0] == ("refused", "backup", "proj-a", "dev-1")
    assert {s[0] for s in statuses[1:]} == {"error"} and statuses[1:]
    assert len(openai_sim.requests) == len(statuses) - 1  # the refusal called no provider


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_call_leaves_no_hold(sims, config_file, migrated_ledger_url, mode):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.latency(120))
    async with Client(stdio_server(config_file, **IDENTITY), mode=mode) as client:
        call = asyncio.ensure_future(client.call_tool(
            "chat_completion", {"messages": ASK, "max_tokens": 50}))
        await asyncio.to_thread(openai_sim.wait_for_requests, 1, 60)
        assert holds(migrated_ledger_url).get("open") == 1  # held while the provider thinks
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
        # The server stays usable after the cancellation.
        assert not (await client.call_tool("list_models", {})).is_error
    # The client closed stdin and the server exited after settling.
    state = holds(migrated_ledger_url)
    assert state.get("open", 0) == 0 and state["reserved_micros"] == 0
    assert state.get("released") == 1
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["project_id"], r["agent_id"], r["status"]) for r in rows] == [
        ("proj-a", "dev-1", "error")]


async def test_usage_is_the_identity_projects_only(sims, config_file, migrated_ledger_url):
    db(migrated_ledger_url,
       "INSERT INTO usage_events (request_id, attempt, ts, agent_id, project_id, model_group, "
       "status, prompt_tokens, completion_tokens, cache_read_tokens, cost_micros, saved_micros, "
       "stream) VALUES ('r-b', 1, CURRENT_TIMESTAMP, 'dev-9', 'proj-b', 'backup', 'ok', 1, 1, "
       "0, 777, 0, false)")
    async with Client(stdio_server(config_file, **IDENTITY)) as client:
        mine = await client.call_tool("get_usage", {"by": "project"})
        assert mine.structured_content["rows"] == []
        assert mine.structured_content["total"]["cost_micros"] == 0
        other = await client.call_tool("get_usage", {"project": "proj-b"})
        assert other.is_error and "proj-b" in other.content[0].text


def test_no_identity_fails_before_serving(tmp_path):
    done = subprocess.run([sys.executable, "-m", "llmgw.cli", "mcp"], cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "LLMGW_CONFIG": str(REPO / "model_list.yaml")},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout == ""  # stdout is the protocol's
    assert "LLMGW_PROJECT" in done.stderr and "LLMGW_API_KEY" in done.stderr


KINDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")


async def test_usage_carries_every_token_kind_as_plain_sql_sums(sims, config_file,
                                                              migrated_ledger_url):
    for i, (agent, kinds) in enumerate((("dev-1", (800, 300, 100, 40)), ("dev-1", (50, 0, 0, 7)),
                                        ("dev-2", (6000, 2000, 2000, 0)))):
        db(migrated_ledger_url,
           "INSERT INTO usage_events (request_id, attempt, ts, agent_id, project_id, model_group, "
           f"status, prompt_tokens, completion_tokens, {', '.join(KINDS)}, cost_micros, "
           f"saved_micros, stream) VALUES ('k{i}', 1, CURRENT_TIMESTAMP, '{agent}', 'proj-a', "
           f"'backup', 'ok', 9000, 100, {', '.join(map(str, kinds))}, 5, 0, false)")
    want = {"dev-1": (850, 300, 100, 47), "dev-2": (6000, 2000, 2000, 0)}
    rows = ledger_rows(migrated_ledger_url)  # the same sums from the rows themselves
    assert {a: tuple(sum(r[k] for r in rows if r["agent_id"] == a) for k in KINDS)
            for a in want} == want
    async with Client(stdio_server(config_file, **IDENTITY)) as client:
        report = (await client.call_tool("get_usage", {"by": "agent"})).structured_content
    assert {r["key"]: tuple(r[k] for k in KINDS) for r in report["rows"]} == want
    assert tuple(report["total"][k] for k in KINDS) == (6850, 2300, 2100, 47)
