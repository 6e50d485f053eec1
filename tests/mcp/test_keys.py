"""MCP identity from real API keys (`llmgw keys create`, `llmgw.ledger.api_keys`): over
stdio from LLMGW_API_KEY, over streamable HTTP from the bearer key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from starlette.applications import Starlette

from llmgw.ledger.engine import make_engine
from llmgw.server.mcp.app import McpHttp
from llmgw.server.mcp.identity import key_authenticator
from tests.mcp.conftest import ASK, REPO, HttpServer, http_client, stdio_server
from tests.support import ledger_rows

api_keys = pytest.importorskip("llmgw.ledger.api_keys")  # ships with `llmgw serve`


@pytest.fixture
def keys(migrated_ledger_url: str) -> Any:
    engine = make_engine(migrated_ledger_url)
    store = api_keys.ApiKeyStore(engine)
    issued = {
        "a": store.create(project_id="proj-a", agent_id="dev-1", agent_type="qa-engineer"),
        "b": store.create(project_id="proj-b", agent_id="dev-2"),
        "revoked": store.create(project_id="proj-a", agent_id="dev-3"),
    }
    store.revoke(issued["revoked"].info.id)
    yield {name: key.secret for name, key in issued.items()}
    engine.dispose()


async def test_stdio_runs_as_the_api_keys_project_and_agent(sims, config_file, keys,
                                                             migrated_ledger_url):
    async with Client(stdio_server(config_file, LLMGW_API_KEY=keys["a"])) as client:
        chat = await client.call_tool("chat_completion", {"messages": ASK, "max_tokens": 50})
        assert not chat.is_error, chat.content
        theirs = await client.call_tool("get_usage", {"project": "proj-b"})
        assert theirs.is_error
    assert [(r["project_id"], r["agent_id"], r["agent_type"])
            for r in ledger_rows(migrated_ledger_url)] == [("proj-a", "dev-1", "qa-engineer")]


def test_stdio_refuses_a_revoked_key(config_file, keys):
    env = {"PYTHONPATH": str(REPO), "LLMGW_CONFIG": str(config_file),
           "LLMGW_API_KEY": keys["revoked"]}
    done = subprocess.run([sys.executable, "-m", "llmgw.cli", "mcp"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stdout == ""
    assert "revoked" in done.stderr and keys["revoked"] not in done.stderr


async def test_http_key_of_project_a_cannot_read_b(sims, config_file, keys, migrated_ledger_url):
    gateways: list[Any] = []
    engine = make_engine(migrated_ledger_url)
    mcp = McpHttp(lambda: gateways[0], key_authenticator(engine))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        from llmgw.gateway import LLMGateway

        gateways.append(LLMGateway(str(config_file)))
        try:
            async with mcp.lifespan():
                yield
        finally:
            await gateways[0].aclose()

    try:
        with HttpServer(Starlette(routes=[mcp.route], lifespan=lifespan)) as server:
            async with http_client(server.url, keys["b"]) as b:
                assert not (await b.call_tool("chat_completion",
                                              {"messages": ASK, "max_tokens": 50})).is_error
            async with http_client(server.url, keys["a"]) as a:
                mine = await a.call_tool("get_usage", {"by": "project"})
                assert mine.structured_content["rows"] == []
                assert (await a.call_tool("get_usage", {"project": "proj-b"})).is_error
    finally:
        engine.dispose()
    assert [(r["project_id"], r["agent_id"]) for r in ledger_rows(migrated_ledger_url)] == [
        ("proj-b", "dev-2")]
