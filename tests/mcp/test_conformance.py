"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, pinned in
tests/clients, installed by `make clients`) against a real `llmgw serve`: its
`dns-rebinding-protection` scenario (a foreign Host/Origin is refused with a 4xx, the
server's own localhost Host/Origin is served)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from tests.mcp.conftest import REPO
from tests.server.test_lifecycle import start_serve
from tests.support import ledger_rows

CLIENTS = REPO / ".cache" / "clients"
CONFORMANCE = CLIENTS / "node_modules" / ".bin" / "conformance"
PRELOAD = Path(__file__).with_name("conformance_bearer.mjs")


def conformance_bin() -> Path:
    assert CONFORMANCE.exists(), (
        f"{CONFORMANCE} is missing: run `make clients` (installs the pinned test clients, the "
        "MCP conformance suite among them, into .cache/clients).")
    return CONFORMANCE


def test_dns_rebinding_protection_scenario_passes(tmp_path, sims, migrated_ledger_url):
    binary = conformance_bin()
    engine = make_engine(migrated_ledger_url)
    key = ApiKeyStore(engine).create(project_id="proj-a", agent_id="dev-1").secret
    engine.dispose()
    process, base = start_serve(tmp_path, sims, migrated_ledger_url)
    try:
        results = tmp_path / "results"
        run = subprocess.run(
            [str(binary), "server", "--url", f"{base}/mcp", "--scenario",
             "dns-rebinding-protection", "--output-dir", str(results)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "NODE_OPTIONS": f"--import={PRELOAD.as_uri()}",
                 "LLMGW_CLIENTS_DIR": str(CLIENTS), "LLMGW_CONFORMANCE_KEY": key})
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    (checks_file,) = results.glob("*/checks.json")
    checks = {c["id"]: c for c in json.loads(checks_file.read_text())}
    rejected = checks["localhost-host-rebinding-rejected"]
    accepted = checks["localhost-host-valid-accepted"]
    assert (rejected["status"], accepted["status"]) == ("SUCCESS", "SUCCESS"), report
    # Refused by the Host check itself (the key was sent), served with the key: 421, then 200.
    assert rejected["details"]["statusCode"] == 421, rejected
    assert accepted["details"]["statusCode"] == 200, accepted
    assert key not in report
    assert ledger_rows(migrated_ledger_url) == []  # an initialize calls no model
