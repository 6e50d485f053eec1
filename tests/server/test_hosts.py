"""Host and Origin allow-lists (llmgw.server.hosts) on every front of a real `llmgw serve` app:
a foreign Host is a 421 and a foreign Origin a 403, before any key check or ledger row; the
loopback names, same-origin pages, named hosts and CORS origins pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmgw.errors import ConfigError
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.server.app import create_app
from llmgw.server.hosts import HostPolicy, exposure_warning
from llmgw.server.settings import ServerSettings
from tests.server.conftest import Running, port_of, start_server, stop_server
from tests.support import ledger_rows, sim_config

CHAT = {"model": "solo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
MESSAGES = {"model": "solo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}

# (method, path, json body, extra headers): one route of each front
ROUTES = [
    ("POST", "/v1/chat/completions", CHAT, {}),
    ("POST", "/v1/messages", MESSAGES, {"anthropic-version": "2023-06-01"}),
    ("GET", "/v1/models", None, {}),
    ("GET", "/ui/login", None, {}),
    ("POST", "/mcp", INIT, MCP_HEADERS),
]


def _send(running: Running, method: str, path: str, body: Any, headers: dict[str, str],
          key: str | None) -> httpx.Response:
    if key is not None:
        headers = {**headers, "authorization": f"Bearer {key}", "x-api-key": key}
    return httpx.request(method, running.base_url + path, json=body, headers=headers, timeout=60)


# -- the policy ---------------------------------------------------------------------------------


def test_loopback_bind_allows_the_loopback_names_with_any_port_or_none() -> None:
    policy = HostPolicy.build("127.0.0.1")
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST:1", "localhost",
                 "127.0.0.1", "[::1]"):
        assert policy.host_allowed(host), host
    for host in ("evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.com:8000",
                 "localhost.evil.com", "0.0.0.0:8000", "", None):
        assert not policy.host_allowed(host), host


def test_named_hosts_add_to_the_loopback_names() -> None:
    policy = HostPolicy.build("0.0.0.0", ("gw.example.com", "gw2.example.com:9000"))
    assert policy.host_allowed("gw.example.com")
    assert policy.host_allowed("gw.example.com:8443")
    assert policy.host_allowed("gw2.example.com:9000")
    assert not policy.host_allowed("gw2.example.com:9001")
    assert not policy.host_allowed("evil.example.com")
    assert policy.host_allowed("localhost:8000")


def test_a_specific_bind_address_is_an_allowed_host() -> None:
    policy = HostPolicy.build("10.1.2.3")
    assert policy.host_allowed("10.1.2.3:8000")
    assert not policy.host_allowed("10.1.2.4:8000")
    assert HostPolicy.build("fd00::5").host_allowed("[fd00::5]:8000")


def test_a_wildcard_bind_without_names_allows_any_host_and_warns() -> None:
    assert HostPolicy.build("0.0.0.0").host_allowed("anything.example:1")
    assert "--allowed-host" in (exposure_warning("0.0.0.0", ()) or "")
    assert exposure_warning("::", ()) is not None
    assert exposure_warning("0.0.0.0", ("gw.example.com",)) is None
    assert exposure_warning("127.0.0.1", ()) is None
    assert HostPolicy.build("127.0.0.1", ("*",)).host_allowed("anything.example")


def test_origins_loopback_same_origin_named_and_cors() -> None:
    policy = HostPolicy.build("127.0.0.1", (), ("https://app.example",), ("http://cors.example:3000",
                                                                          "https://any.example:*"))
    allowed = [(None, "127.0.0.1:8000"), ("http://127.0.0.1:8000", "127.0.0.1:8000"),
               ("http://localhost:5173", "127.0.0.1:8000"), ("https://[::1]", "localhost:8000"),
               ("https://app.example", "127.0.0.1:8000"), ("https://app.example/", "localhost"),
               ("http://cors.example:3000", "127.0.0.1:8000"),
               ("https://any.example:444", "127.0.0.1:8000"),
               ("http://gw.example.com:8000", "gw.example.com:8000")]  # same-origin
    for origin, host in allowed:
        assert policy.origin_allowed(origin, host), (origin, host)
    refused = [("http://evil.example.com", "127.0.0.1:8000"), ("null", "127.0.0.1:8000"),
               ("http://app.example", "127.0.0.1:8000"), ("http://cors.example:3001", "localhost"),
               ("http://localhost.evil.com", "localhost"), ("file://", "localhost"),
               ("http://gw.example.com:8001", "gw.example.com:8000")]
    for origin, host in refused:
        assert not policy.origin_allowed(origin, host), (origin, host)


def test_the_lists_travel_to_workers_through_the_environment(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    settings = ServerSettings(bind_host="0.0.0.0", allowed_hosts=("gw.example.com", "gw:81"),
                              allowed_origins=("https://app.example",))
    env = settings.to_env()
    assert env["LLMGW_SERVE_ALLOWED_HOSTS"] == "gw.example.com,gw:81"
    assert env["LLMGW_SERVE_ALLOWED_ORIGINS"] == "https://app.example"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ServerSettings.from_env() == settings
    monkeypatch.setenv("LLMGW_SERVE_ALLOWED_HOSTS", " a.example , b.example:1 ")
    assert ServerSettings.from_env().allowed_hosts == ("a.example", "b.example:1")


def test_a_malformed_entry_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("LLMGW_SERVE_ALLOWED_ORIGINS", "app.example")
    with pytest.raises(ConfigError, match="LLMGW_SERVE_ALLOWED_ORIGINS"):
        ServerSettings.from_env()
    monkeypatch.delenv("LLMGW_SERVE_ALLOWED_ORIGINS")
    with pytest.raises(ConfigError, match="LLMGW_SERVE_ALLOWED_HOSTS"):
        ServerSettings.from_env(allowed_hosts=("https://gw.example.com/",))


# -- on the served app ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "headers"), ROUTES,
                         ids=[r[1] for r in ROUTES])
def test_a_foreign_host_is_refused_before_the_key_and_records_nothing(
        running: Running, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
    key = running.key()
    for secret in (key, "not-a-key"):  # an unknown key is a 421 too: no key was checked
        response = _send(running, method, path, body,
                         {**headers, "host": "evil.example.com"}, secret)
        assert response.status_code == 421, response.text
        text = response.json()["error"]["message"]
        assert "evil.example.com" in text and "--allowed-host" in text
        if path.startswith("/v1/messages"):
            assert response.json()["type"] == "error"  # the Anthropic shape on its front
        else:
            assert response.json()["error"]["code"] == "host_not_allowed"
    assert ledger_rows(running.ledger_url) == []


@pytest.mark.parametrize(("method", "path", "body", "headers"), ROUTES,
                         ids=[r[1] for r in ROUTES])
def test_a_foreign_origin_is_refused_and_records_nothing(
        running: Running, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
    for origin in ("http://evil.example.com", "null"):
        response = _send(running, method, path, body, {**headers, "origin": origin},
                         running.key())
        assert response.status_code == 403, response.text
        assert "--allowed-origin" in response.json()["error"]["message"]
    assert ledger_rows(running.ledger_url) == []


def test_allowed_hosts_and_origins_reach_the_fronts(running: Running) -> None:
    port = running.base_url.rsplit(":", 1)[1]
    key = running.key()
    for host, origin in ((f"127.0.0.1:{port}", None), (f"localhost:{port}", f"http://localhost:{port}"),
                         (f"[::1]:{port}", f"http://127.0.0.1:{port}"), ("localhost", None)):
        headers = {"host": host} | ({"origin": origin} if origin else {})
        models = _send(running, "GET", "/v1/models", None, headers, key)
        assert models.status_code == 200, (host, origin, models.text)
        login = _send(running, "GET", "/ui/login", None, headers, None)
        assert login.status_code == 200, (host, origin)
    chat = _send(running, "POST", "/v1/chat/completions", CHAT,
                 {"origin": f"http://127.0.0.1:{port}"}, key)
    assert chat.status_code == 200, chat.text
    assert len(ledger_rows(running.ledger_url)) == 1


@pytest.fixture
def named(sims, migrated_ledger_url: str) -> Iterator[Running]:  # noqa: F811
    """Served as if bound to 0.0.0.0 and named gw.example.com, with a CORS origin."""
    openai, anthropic = sims
    settings = ServerSettings(key_cache_s=0, bind_host="0.0.0.0", allowed_hosts=("gw.example.com",),
                              allowed_origins=("https://app.example",),
                              cors_origins=("https://cors.example",))
    server = start_server(create_app(sim_config(openai.base_url, anthropic.base_url,
                                                migrated_ledger_url), settings))
    engine = make_engine(migrated_ledger_url)
    try:
        yield Running(f"http://127.0.0.1:{port_of(server)}", migrated_ledger_url,
                      ApiKeyStore(engine), server)
    finally:
        stop_server(server)
        engine.dispose()


def test_named_hosts_allowed_origins_and_cors_origins_are_accepted(named: Running) -> None:
    key = named.key()
    for headers in ({"host": "gw.example.com"}, {"host": "gw.example.com:8443"},
                    {"origin": "https://app.example"},
                    {"host": "gw.example.com", "origin": "https://gw.example.com"},
                    {"origin": "https://cors.example"}):
        assert _send(named, "GET", "/v1/models", None, headers, key).status_code == 200, headers
    cors = _send(named, "GET", "/v1/models", None, {"origin": "https://cors.example"}, key)
    assert cors.headers["access-control-allow-origin"] == "https://cors.example"
    for headers, status in (({"host": "other.example.com"}, 421),
                            ({"origin": "https://other.example"}, 403)):
        assert _send(named, "GET", "/v1/models", None, headers, key).status_code == status


async def test_the_official_mcp_client_with_an_allowed_origin_works(running: Running) -> None:
    from tests.mcp.conftest import http_client

    port = running.base_url.rsplit(":", 1)[1]
    url = running.base_url + "/mcp"
    async with http_client(url, running.key(), origin=f"http://localhost:{port}") as client:
        models = await client.call_tool("list_models", {})
        assert not models.is_error and models.structured_content["groups"]
    from mcp import MCPError

    with pytest.raises(BaseExceptionGroup) as refused:  # the 403 (above) ends the session
        async with http_client(url, running.key(), origin="http://evil.example.com") as client:
            await client.call_tool("list_models", {})
    assert refused.group_contains(MCPError, depth=None), refused.value
