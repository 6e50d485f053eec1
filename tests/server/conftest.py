"""A real uvicorn server on 127.0.0.1 (a free port) in a thread, its app over the gateway over
the simulators; keys issued in its ledger. Clients are the official SDKs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from tests.integration.conftest import anthropic_sim, openai_sim, sims  # noqa: F401
from tests.support import sim_config


class _Server(uvicorn.Server):
    """uvicorn's server, telling the test thread when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@dataclass
class Running:
    base_url: str
    ledger_url: str
    keys: ApiKeyStore
    server: _Server

    def key(self, project: str = "proj-a", agent: str | None = "dev-1", **kw: Any) -> str:
        return self.keys.create(project_id=project, agent_id=agent, **kw).secret

    def admin_key(self) -> str:
        return self.keys.create(project_id=None, admin=True).secret


def start_server(app: Any, *, grace_s: float = 20.0) -> _Server:
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", http="h11",
                                   log_level="warning", timeout_graceful_shutdown=grace_s,
                                   h11_max_incomplete_event_size=64 * 1024))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    assert server.ready.wait(120), "the server did not start"
    assert server.started, "the server failed to start (see its log)"
    server.thread = thread  # type: ignore[attr-defined]
    return server


def stop_server(server: _Server) -> None:
    server.should_exit = True
    server.thread.join(60)  # type: ignore[attr-defined]
    assert not server.thread.is_alive()  # type: ignore[attr-defined]


def port_of(server: _Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


@pytest.fixture
def running(sims, migrated_ledger_url: str) -> Iterator[Running]:  # noqa: F811
    openai, anthropic = sims
    config = sim_config(openai.base_url, anthropic.base_url, migrated_ledger_url)
    app = create_app(config, ServerSettings(key_cache_s=0, max_body_bytes=64 * 1024,
                                            max_header_bytes=16 * 1024))
    server = start_server(app)
    engine = make_engine(migrated_ledger_url)
    try:
        yield Running(f"http://127.0.0.1:{port_of(server)}", migrated_ledger_url,
                      ApiKeyStore(engine), server)
    finally:
        stop_server(server)
        engine.dispose()


def open_reservations(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT COUNT(*) FROM reservations WHERE state = 'open'")).scalar_one())
    finally:
        engine.dispose()
