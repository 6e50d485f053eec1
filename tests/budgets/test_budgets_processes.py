"""Budgets across OS processes, on SQLite (one file) and PostgreSQL: 4 gateways share one
budget exactly; a gateway killed while its provider is answering, or after the answer and
before the settle, leaves a hold that reconcile settles once at its reserved amount."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from llmgw.cli import app
from llmgw.config.loading import config_from_dict
from llmgw.sim import FaultPlan
from tests.budgets.conftest import ANSWER_USAGE, assert_counters_match_ledger, budget_config, sums
from tests.support import expected_cost_micros, ledger_rows

REPO = Path(__file__).resolve().parents[2]
ACTUAL = expected_cost_micros("solo-openai", 10, 100)


def _worker(config: Path, count: int, agent: str, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.budgets.worker", str(config), str(count),
                             agent, *more], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll for `path` until a deadline (or the process ended without making it)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"{path.name} not written in {timeout}s"
        time.sleep(0.02)


def test_four_processes_share_one_budget_exactly(sims, migrated_ledger_url, tmp_path):
    url = migrated_ledger_url  # SQLite: one file, four writing processes
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(budget_config(openai_sim.base_url, anthropic_sim.base_url, url,
                                            {"projects": {"proj-a": {"daily_usd": "0.0084"}}})))
    procs = [_worker(cfg, 50, f"dev-{i}") for i in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ok = [c for o in outs for c in o["ok"]]
    refused = sum(o["refused"] for o in outs)
    assert all(o["other"] == [] for o in outs)
    assert len(ok) + refused == 200 and ok and refused
    s = sums(url)
    spent, reserved = s["counters"][("project", "proj-a", "day")]
    assert spent == s["ledger"]["proj-a"] == sum(ok) == len(ok) * ACTUAL
    assert spent <= 8400 and reserved == 0 and s["open"] == 0
    assert len(openai_sim.requests) == len(ok)
    rows = ledger_rows(url)
    assert {r["agent_id"] for r in rows} == {f"dev-{i}" for i in range(4)}
    assert_counters_match_ledger(url)


def test_killed_gateway_leaves_a_hold_that_reconcile_settles_once(sims, migrated_ledger_url,
                                                                  tmp_path):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan.timeout())  # the provider never answers
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url,
                         {"projects": {"*": {"daily_usd": 1}}})
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(data))
    proc = _worker(cfg, 0, "doomed")
    assert proc.stdout.readline().strip() == "ready"
    openai_sim.wait_for_requests(1, timeout=60)  # the hold exists: reserve precedes the call
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    before = sums(migrated_ledger_url)
    assert before["open"] == 1 and before["ledger"] == {}
    held = before["counters"][("project", "proj-a", "day")]
    assert held[0] == 0 and held[1] > 0

    openai_sim.set_plan(FaultPlan())
    gw = LLMGateway(config_from_dict(data))  # start-up reconcile leaves a fresh hold alone
    try:
        assert sums(migrated_ledger_url)["open"] == 1
        assert len(gw.reconcile(older_than_s=0)) == 1
        assert gw.reconcile(older_than_s=0) == []  # idempotent
    finally:
        gw.close()
    after = sums(migrated_ledger_url)
    assert after["open"] == 0
    assert after["counters"][("project", "proj-a", "day")] == (held[1], 0)
    assert after["ledger"] == {"proj-a": held[1]}
    [row] = ledger_rows(migrated_ledger_url)
    assert (row["status"], row["error_class"], row["agent_id"]) == ("error", "Reconciled", "doomed")


def test_killed_after_the_answer_before_the_settle_reconcile_books_the_hold(
        sims, migrated_ledger_url, tmp_path):
    url = migrated_ledger_url
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))  # the provider answers at once
    data = budget_config(openai_sim.base_url, anthropic_sim.base_url, url,
                         {"projects": {"*": {"daily_usd": 1}}, "agents": {"*": {"daily_usd": 1}}})
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(data))
    marker = tmp_path / "answered"
    proc = _worker(cfg, 0, "doomed", str(marker))
    try:
        _wait_for(marker, proc)  # answered; its settle is held in the worker
        assert len(openai_sim.requests) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    before = sums(url)
    assert before["open"] == 1 and before["ledger"] == {}
    held = before["counters"][("project", "proj-a", "day")]
    assert held[0] == 0 and held[1] > ACTUAL
    assert before["counters"][("agent", "doomed", "day")] == held

    run = CliRunner().invoke(app, ["db", "reconcile", "--older-than", "0", "--force",
                                   "--ledger-url", url])
    assert run.exit_code == 0 and "Reconciled 1" in run.output, run.output
    after = sums(url)
    assert after["counters"][("project", "proj-a", "day")] == (held[1], 0)
    assert after["counters"][("agent", "doomed", "day")] == (held[1], 0)
    assert after["ledger"] == {"proj-a": held[1]}
    [row] = ledger_rows(url)
    assert (row["status"], row["error_class"], row["cost_micros"]) == ("error", "Reconciled",
                                                                       held[1])
    assert_counters_match_ledger(url)
