"""Budgets across OS processes: 4 gateways on one PostgreSQL; a gateway killed mid-call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw.config import config_from_dict
from llmgw.sim import FaultPlan
from tests.budgets.conftest import ANSWER_USAGE, budget_config, sums
from tests.fixtures.databases import create_postgres_database, drop_postgres_database
from tests.support import expected_cost_micros, ledger_rows

REPO = Path(__file__).resolve().parents[2]
ACTUAL = expected_cost_micros("solo-openai", 10, 100)


def _worker(config: Path, count: int, agent: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.budgets.worker", str(config), str(count),
                             agent], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def pg_url():
    from llmgw.ledger.migrate import upgrade

    url = create_postgres_database("llmgw_budget")
    upgrade(url)
    yield url
    drop_postgres_database(url)


def test_four_processes_share_one_postgres_budget_exactly(sims, pg_url, tmp_path):
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(budget_config(openai_sim.base_url, anthropic_sim.base_url, pg_url,
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
    s = sums(pg_url)
    spent, reserved = s["counters"][("project", "proj-a", "day")]
    assert spent == s["ledger"]["proj-a"] == sum(ok) == len(ok) * ACTUAL
    assert spent <= 8400 and reserved == 0 and s["open"] == 0
    assert len(openai_sim.requests) == len(ok)
    # every agent's own counter agrees with the ledger as well
    rows = ledger_rows(pg_url)
    assert {r["agent_id"] for r in rows} == {f"dev-{i}" for i in range(4)}


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
