"""`llmgw mcp` stops on SIGTERM while its client still holds stdin open (a supervisor's stop,
or a client escalating its shutdown): the call in flight is cancelled through the gateway's
lifecycle, its row is written, no hold is left, and the process exits 0 within the grace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from llmgw._litellm import _OFFLINE_ENV
from llmgw.cli.mcp import SIGTERM_GRACE_S
from llmgw.sim import FaultPlan
from tests.mcp.conftest import ASK, REPO, holds
from tests.support import ledger_rows

IDENTITY = {"LLMGW_PROJECT": "proj-a", "LLMGW_AGENT": "dev-1"}


def _send(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[bytes], request_id: int) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "llmgw mcp closed stdout before answering"
        message = json.loads(line)
        if message.get("id") == request_id:
            return message


def test_sigterm_with_stdin_open_cancels_settles_and_exits(sims, config_file, migrated_ledger_url):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.latency(120))  # the call is in flight until it is cancelled
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
           "LLMGW_CONFIG": str(config_file), **_OFFLINE_ENV, **IDENTITY}
    proc = subprocess.Popen([sys.executable, "-m", "llmgw.cli", "mcp"], cwd=str(REPO), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _send(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "sigterm-test", "version": "1"}}})
        assert "result" in _answer(proc, 1)
        _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "chat_completion", "arguments": {"messages": ASK, "max_tokens": 50}}})
        openai_sim.wait_for_requests(1, timeout=60)  # the provider has the call: a hold is open
        assert holds(migrated_ledger_url).get("open") == 1

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # stdin stays open
        code = proc.wait(timeout=SIGTERM_GRACE_S + 10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stdin:
            proc.stdin.close()
    assert code == 0, err
    assert took < SIGTERM_GRACE_S + 5, f"took {took:.1f}s to stop: {err}"
    state = holds(migrated_ledger_url)
    assert state.get("open", 0) == 0 and state["reserved_micros"] == 0, state
    assert state.get("released") == 1, state
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["project_id"], r["agent_id"], r["status"]) for r in rows] == [
        ("proj-a", "dev-1", "error")], rows
