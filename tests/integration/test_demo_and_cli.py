"""`llmgw demo` runs the scripted workload with a visible fallback; `llmgw models` lists groups."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]


def test_demo_shows_fallbacks_and_reports_match_the_ledger(tmp_path, capsys):
    from llmgw.demo import AGENTS, run_demo

    url = run_demo(config_path=str(REPO / "model_list.yaml"), workdir=str(tmp_path / "demo"),
                   console=Console(file=open(tmp_path / "log.txt", "w"), width=200))
    printed = (tmp_path / "log.txt").read_text()  # the demo's console, reports included
    engine = create_engine(url)
    with engine.connect() as conn:
        requests, errors, cost = conn.execute(text(
            "SELECT COUNT(DISTINCT request_id), SUM(status = 'error'), SUM(cost_micros) "
            "FROM usage_events")).one()
        agents = {r[0] for r in conn.execute(text("SELECT DISTINCT agent_id FROM usage_events"))}
        outage = conn.execute(text(
            "SELECT status, provider, error_class, metadata, cost_micros, deployment_id, "
            "agent_id, project_id FROM usage_events")).all()
    engine.dispose()
    every_row = list(outage)
    total = [r for r in outage if json.loads(r.metadata).get("demo_phase") == "total-outage"]
    served = [r for r in total if r.status == "ok"]
    [only] = served  # the real local model, in cost-optimized or the last-resort group
    assert only.deployment_id in ("co-local-qwen", "local-qwen") and only.cost_micros == 0
    assert "qwen2.5-coder-0.5b-instruct answered:" in (tmp_path / "log.txt").read_text()
    repeat = [r for r in outage if json.loads(r.metadata).get("demo_phase") == "repeat"]
    assert [r.status for r in repeat] == ["cached", "cached"]
    runaway = [r for r in outage if json.loads(r.metadata).get("demo_phase") == "runaway"]
    assert [(r.status, r.error_class) for r in runaway] == [("refused", "BudgetExceeded")]
    assert "BudgetExceeded" in (tmp_path / "log.txt").read_text()
    outage = [r for r in outage if json.loads(r.metadata).get("demo_phase") == "outage"]
    assert requests == len(AGENTS) + 5 + 3 + 1 + 2 + 1 + 1  # seven phases of the script
    # 7: an agent of another process, over HTTP with its project key and the openai SDK
    [http] = [r for r in every_row if r.agent_id == "ts-agent-1"]
    assert (http.status, http.project_id) == ("ok", "checkout")
    assert "openai SDK -> " in (tmp_path / "log.txt").read_text()
    assert errors >= 1
    served = [r for r in outage if r.status == "ok"]
    assert len(served) == 5 and all(r.provider != "anthropic" for r in served)
    # Siblings before worse groups: each agent is answered by its own group's OpenAI
    # deployment, after at most one failed Anthropic attempt (docs/routing.md).
    assert sorted(r.deployment_id for r in served) == ["fr-openai-gpt41-mini"] * 2 + [
        "hr-openai-gpt41"] * 3
    assert all(r.deployment_id in ("hr-anthropic-sonnet", "fr-anthropic-haiku")
               for r in outage if r.status == "error")
    assert len([r for r in outage if r.status == "error"]) <= 5
    assert "hr-anthropic-sonnet ✗ → hr-openai-gpt41 ✓" in (tmp_path / "log.txt").read_text()
    failed = [r for r in outage if r.status == "error"]
    assert failed and all((r.provider, r.error_class) == ("anthropic", "ProviderUnavailable")
                          for r in failed)
    assert agents == {a[0] for a in AGENTS} | {"ts-agent-1"}
    assert "Usage by agent" in printed and "Usage by model" in printed
    log = (tmp_path / "log.txt").read_text()
    assert "/ui" in log and log.strip().splitlines()[-1].startswith("llmgw-")  # admin key
    total_line = [ln for ln in printed.splitlines() if ln.strip().startswith("TOTAL")][0]
    assert f"{cost / 1e6:.6f}" in total_line


def test_models_lists_groups_prices_and_fallbacks():
    out = subprocess.run([sys.executable, "-m", "llmgw.cli", "models", "--format", "json",
                          "--config", str(REPO / "model_list.yaml")],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = json.loads(out)
    by_id = {r["deployment"]: r for r in rows}
    assert by_id["hr-anthropic-sonnet"]["input_usd_per_mtok"] == "3.00"
    assert by_id["hr-anthropic-sonnet"]["fallbacks"] == ["fast-response", "cost-optimized",
                                                         "local"]
    assert by_id["co-local-qwen"]["output_usd_per_mtok"] == "0.00"
    assert "qa-engineer" in by_id["fr-anthropic-haiku"]["agent_types"]
