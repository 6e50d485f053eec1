"""/healthz, /readyz (the ledger reachable and migrated), /metrics, CORS off by default, and
the header size limit."""

from __future__ import annotations

import httpx
import openai
import pytest

from llmgw.ledger.migrate import downgrade, upgrade
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from tests.server.conftest import port_of, start_server, stop_server
from tests.support import sim_config

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)


def test_health_and_readiness_follow_the_ledger(running):
    assert httpx.get(running.base_url + "/healthz").json() == {"status": "ok", "detail": None}
    assert httpx.get(running.base_url + "/readyz").status_code == 200
    downgrade(running.ledger_url, "0008")
    try:
        response = httpx.get(running.base_url + "/readyz")
        assert response.status_code == 503
        assert "llmgw db upgrade" in response.json()["detail"]
        assert httpx.get(running.base_url + "/healthz").status_code == 200
    finally:
        upgrade(running.ledger_url)
    assert httpx.get(running.base_url + "/readyz").status_code == 200


def test_metrics_count_requests(running):
    openai.OpenAI(base_url=running.base_url + "/v1", api_key=running.key(),
                  max_retries=0).chat.completions.create(
        model="backup", messages=[{"role": "user", "content": "hi"}])
    body = httpx.get(running.base_url + "/metrics").text
    assert 'llmgw_requests_total{agent_type="",deployment="backup-openai",model_group="backup",' \
           'project="proj-a",status="ok"} 1.0' in body


def test_cors_is_off_unless_configured(running, sims, migrated_ledger_url):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    response = httpx.options(running.base_url + "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    openai_sim, anthropic_sim = sims
    app = create_app(sim_config(openai_sim.base_url, anthropic_sim.base_url,
                                migrated_ledger_url),
                     ServerSettings(cors_origins=("https://app.example",)))
    server = start_server(app)
    try:
        base = f"http://127.0.0.1:{port_of(server)}"
        allowed = httpx.options(base + "/v1/chat/completions", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(base + "/v1/chat/completions",
                              headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        stop_server(server)


def test_oversized_headers_are_refused(running):
    # 40 KB: under h11's own 64 KiB buffer, over the app's limit (the fixture keeps 16 KiB)
    response = httpx.get(running.base_url + "/v1/models",
                         headers={"authorization": f"Bearer {running.key()}",
                                  "x-big": "a" * 40_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
