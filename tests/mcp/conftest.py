"""MCP tests: the official `mcp` client against `llmgw mcp` (stdio, a subprocess) and the
streamable HTTP app (uvicorn on a loopback port), over the provider simulators."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for
from sqlalchemy import create_engine, text

from llmgw._litellm import _OFFLINE_ENV
from tests.integration.conftest import anthropic_sim, openai_sim, sims  # noqa: F401  (fixtures)
from tests.support import sim_config_dict

REPO = Path(__file__).resolve().parents[2]
TOOLS = {"chat_completion", "list_models", "get_usage", "estimate_cost", "count_tokens"}
ASK = [{"role": "user", "content": "Plan the release."}]
# The protocol eras a client may speak: the initialize handshake, or the 2026 one.
MODES = ("legacy", "auto")
# A worst case over this cap is refused before any provider is called.
PER_REQUEST_USD = 0.5


def mcp_config_dict(openai_url: str, anthropic_url: str, ledger_url: str) -> dict[str, Any]:
    data = sim_config_dict(openai_url, anthropic_url, ledger_url)
    data["llmgw"]["budgets"] = {"per_request_usd": PER_REQUEST_USD,
                                "projects": {"*": {"daily_usd": 50}},
                                "agents": {"*": {"daily_usd": 10}}}
    return data


@pytest.fixture
def config_file(sims, migrated_ledger_url: str, tmp_path: Path) -> Path:  # noqa: F811
    openai, anthropic = sims
    path = tmp_path / "model_list.yaml"
    path.write_text(yaml.safe_dump(mcp_config_dict(openai.base_url, anthropic.base_url,
                                                   migrated_ledger_url)))
    return path


def stdio_server(config_file: Path, **env: str) -> Any:
    """`llmgw mcp` as an MCP client spawns it (`python -m llmgw.cli mcp`), with this tree on
    PYTHONPATH and only the env given."""
    from mcp.client.stdio import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable, args=["-m", "llmgw.cli", "mcp"], cwd=str(REPO),
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
             "LLMGW_CONFIG": str(config_file), **_OFFLINE_ENV, **env})


def check_schemas(tools: list[Any]) -> None:
    """Every tool's input and output schema is a valid JSON schema with an object root."""
    for tool in tools:
        for schema in (tool.input_schema, tool.output_schema):
            assert schema is not None, tool.name
            validator_for(schema).check_schema(schema)
            assert schema.get("type") == "object", tool.name


def output_valid(tool: Any, content: dict[str, Any]) -> None:
    validator = validator_for(tool.output_schema)
    validator(tool.output_schema).validate(content)


def db(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def holds(url: str) -> dict[str, int]:
    """Reservations by state, and what the counters still hold."""
    states = dict(db(url, "SELECT state, COUNT(*) FROM reservations GROUP BY state"))
    reserved = db(url, "SELECT COALESCE(SUM(reserved_micros), 0) FROM budget_counters")[0][0]
    return {**states, "reserved_micros": int(reserved)}


# -- streamable HTTP under uvicorn ----------------------------------------------------------


class HttpServer:
    """uvicorn serving `app` in a thread on a socket bound before it starts, so a client's
    connection waits in the listen backlog instead of racing the start-up."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.failure = exc

    def __enter__(self) -> HttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, finish the app's shutdown (the gateway drains), and join."""
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"
        assert self.failure is None, self.failure


@asynccontextmanager
async def http_client(url: str, key: str | None, *, mode: str = "auto",
                      **headers: str) -> AsyncIterator[Any]:
    """The official client over streamable HTTP, sending `key` as a bearer token. `mode`
    "legacy" speaks the handshake-era protocol (clients in the field), "auto" the newest."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx2.AsyncClient(headers=headers,
                                  timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client

