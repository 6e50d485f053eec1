"""Streamable HTTP MCP (`McpHttp`, mounted at /mcp by `llmgw serve`) under uvicorn on a
loopback port, authenticated by bearer keys, with the official MCP client."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from llmgw.server.mcp.app import McpHttp
from llmgw.server.mcp.identity import Identity
from llmgw.sim import FaultPlan, ToolCall
from tests.mcp.conftest import (
    ASK,
    MODES,
    TOOLS,
    HttpServer,
    check_schemas,
    holds,
    http_client,
    output_valid,
)
from tests.support import ledger_rows

KEYS = {
    "key-a": Identity("proj-a", "dev-1", "qa-engineer"),
    "key-b": Identity("proj-b", "dev-2"),
    "key-any-a": Identity("proj-a"),  # any agent of proj-a, named by X-LLMGW-Agent
    "key-admin": Identity(None, admin=True),
}


class Finished:
    """The gateway's request.finished events, waited for from the test's loop."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, _event: str, payload: dict[str, Any]) -> None:
        with self.changed:
            self.ids.append(payload["request_id"])
            self.changed.notify_all()

    async def wait(self, count: int) -> None:
        def until() -> None:
            with self.changed:
                assert self.changed.wait_for(lambda: len(self.ids) >= count, timeout=60)
        await asyncio.to_thread(until)


def make_app(config_file: Path, finished: Finished) -> Starlette:
    """What `llmgw serve` does: the gateway made in the app's lifespan, /mcp routed to
    McpHttp, its session manager run in the same lifespan."""
    gateways: list[Any] = []

    async def authenticate(secret: str) -> Identity | None:
        return KEYS.get(secret)

    mcp = McpHttp(lambda: gateways[0], authenticate)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        from llmgw.gateway import LLMGateway

        gw = LLMGateway(str(config_file))
        gw.on("request.finished", finished)
        gateways.append(gw)
        try:
            async with mcp.lifespan():
                yield
        finally:
            await gw.aclose()

    return Starlette(routes=[mcp.route], lifespan=lifespan)


@pytest.fixture
def served(config_file):
    finished = Finished()
    with HttpServer(make_app(config_file, finished)) as server:
        yield server, finished


async def test_keys_fix_identity_and_usage_scope(sims, served, migrated_ledger_url):
    server, _ = served
    async with http_client(server.url, "key-a") as a:
        listed = (await a.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        check_schemas(listed)
        tool = {t.name: t for t in listed}
        chat_a = await a.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50})
        assert not chat_a.is_error, chat_a.content
        output_valid(tool["chat_completion"], chat_a.structured_content)
        for name, args in (("list_models", {}), ("estimate_cost", {"messages": ASK}),
                           ("count_tokens", {"messages": ASK})):
            result = await a.call_tool(name, args)
            assert not result.is_error, (name, result.content)
            output_valid(tool[name], result.structured_content)
    async with http_client(server.url, "key-b") as b:
        chat_b = await b.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50})
        assert not chat_b.is_error
        mine = await b.call_tool("get_usage", {"by": "agent"})
        assert [r["key"] for r in mine.structured_content["rows"]] == ["dev-2"]
        theirs = await b.call_tool("get_usage", {"project": "proj-a"})
        assert theirs.is_error and "proj-b" in theirs.content[0].text
    async with http_client(server.url, "key-any-a", **{"X-LLMGW-Agent": "bot-7"}) as anyone:
        chat_any = await anyone.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50})
        assert not chat_any.is_error
        usage_a = await anyone.call_tool("get_usage", {"by": "agent"})
        assert sorted(r["key"] for r in usage_a.structured_content["rows"]) == ["bot-7", "dev-1"]
    async with http_client(server.url, "key-any-a") as unnamed:
        result = await unnamed.call_tool("chat_completion", {"messages": ASK})
        assert result.is_error and "X-LLMGW-Agent" in result.content[0].text
    async with http_client(server.url, "key-admin") as admin:
        everyone = await admin.call_tool("get_usage", {"by": "project"})
        assert sorted(r["key"] for r in everyone.structured_content["rows"]) == [
            "proj-a", "proj-b"]
        assert (await admin.call_tool("chat_completion", {"messages": ASK})).is_error
    rows = {r["request_id"]: (r["project_id"], r["agent_id"], r["agent_type"], r["status"])
            for r in ledger_rows(migrated_ledger_url)}
    assert rows == {
        chat_a.structured_content["request_id"]: ("proj-a", "dev-1", "qa-engineer", "ok"),
        chat_b.structured_content["request_id"]: ("proj-b", "dev-2", None, "ok"),
        chat_any.structured_content["request_id"]: ("proj-a", "bot-7", None, "ok")}


async def test_no_key_or_a_wrong_one_is_401(served, migrated_ledger_url):
    server, _ = served
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx2.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            answer = await http.post(server.url, json=body, headers={
                "Accept": "application/json, text/event-stream", **headers})
            assert answer.status_code == 401
            assert "llmgw keys create" in answer.json()["error"]["message"]
        answer = await http.post(server.url, json=body, headers={
            "Authorization": "Bearer key-a", "X-LLMGW-Agent": "someone-else",
            "Accept": "application/json, text/event-stream"})
        assert answer.status_code == 403


async def test_budget_refusal_and_bad_arguments(sims, served, migrated_ledger_url):
    server, _ = served
    async with http_client(server.url, "key-b") as client:
        for bad in ({"messages": []}, {"messages": ASK, "max_tokens": -1},
                    {"messages": ASK, "model_group": "nope"}):
            assert (await client.call_tool("chat_completion", bad)).is_error
        assert ledger_rows(migrated_ledger_url) == []
        refused = await client.call_tool("chat_completion",
                                         {"messages": ASK, "max_tokens": 1_000_000})
        assert refused.is_error and refused.structured_content["error"] == "BudgetExceeded"
    assert [(r["status"], r["project_id"], r["agent_id"])
            for r in ledger_rows(migrated_ledger_url)] == [("refused", "proj-b", "dev-2")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_call_leaves_no_hold(sims, served, migrated_ledger_url, mode):
    openai_sim, _ = sims
    server, finished = served
    openai_sim.set_plan(FaultPlan.latency(120))
    async with http_client(server.url, "key-a", mode=mode) as client:
        call = asyncio.ensure_future(client.call_tool(
            "chat_completion", {"messages": ASK, "max_tokens": 50}))
        await asyncio.to_thread(openai_sim.wait_for_requests, 1, 60)
        assert holds(migrated_ledger_url).get("open") == 1
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
        await finished.wait(1)  # while the session and the server stay up
        state = holds(migrated_ledger_url)
        assert state.get("open", 0) == 0 and state["reserved_micros"] == 0
        assert state.get("released") == 1
    assert [(r["project_id"], r["agent_id"], r["status"])
            for r in ledger_rows(migrated_ledger_url)] == [("proj-a", "dev-1", "error")]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_over_http(sims, served, migrated_ledger_url, mode):
    server, _ = served
    seen: list[float] = []

    async def progress(value: float, _total: float | None, _message: str | None) -> None:
        seen.append(value)

    async with http_client(server.url, "key-a", mode=mode) as client:
        chat = await client.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50},
                                      progress_callback=progress)
    assert not chat.is_error
    assert seen and seen[-1] == len(chat.structured_content["content"])


async def test_tool_calls_come_back_structured(sims, served, migrated_ledger_url):
    openai_sim, _ = sims
    server, _ = served
    openai_sim.set_plan(FaultPlan(tool_call=ToolCall(name="get_weather",
                                                     arguments={"city": "Oslo"})))
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    async with http_client(server.url, "key-a") as client:
        chat = await client.call_tool("chat_completion", {
            "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [weather],
            "max_tokens": 50})
    assert not chat.is_error, chat.content
    (call,) = chat.structured_content["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert openai_sim.requests[0].json["tools"] == [weather]
