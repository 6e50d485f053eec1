"""`llmgw budgets set|list|status` and `llmgw db reconcile` on both databases."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from llmgw.budgets.rules import BudgetPolicy, CounterKey, Limit
from llmgw.cli import app
from llmgw.config.models import BudgetSettings
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.store import utcnow

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_config(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no model_list.yaml here: config-file budgets are empty
    monkeypatch.delenv("LLMGW_CONFIG", raising=False)
    monkeypatch.delenv("LLMGW_LEDGER_URL", raising=False)


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_set_list_status_round_trip(migrated_ledger_url):
    url = ["--ledger-url", migrated_ledger_url]
    assert run("budgets", "set", "--project", "checkout", "--daily", "50", "--monthly", "1000",
               "--warn", "0.9", *url)[0] == 0
    assert run("budgets", "set", "--per-request", "$1.25", *url)[0] == 0
    assert run("budgets", "set", "--project", "checkout", "--daily", "60", *url)[0] == 0  # update
    code, out = run("budgets", "list", "--format", "json", *url)
    assert code == 0
    assert {(r["scope"], r["id"], r["period"], r["limit_usd"], r["warn"]) for r in json.loads(out)} == {
        ("project", "checkout", "day", "60.000000", 0.8),
        ("project", "checkout", "month", "1000.000000", 0.9),
        ("request", "*", "request", "1.250000", 0.8),
    }
    # spend 49 of the 60 daily dollars, 2 more on hold: 85 % used, past the 80 % warn ratio
    policy = BudgetPolicy(BudgetSettings())
    engine = make_engine(migrated_ledger_url)
    store = BudgetStore(engine)
    now = utcnow()
    limit = Limit("project", "checkout", "day", 60_000_000, 0.8)
    key = CounterKey("project", "checkout", "day", policy.period_start(now, "day"))
    hold = store.reserve(request_id="r1", amount_micros=50_000_000, limits=[limit], keys=[key],
                         created_at=now, agent_id="a", agent_type=None, project_id="checkout",
                         model_group="g")
    store.settle(hold, spent_micros=49_000_000, rows=[])
    store.reserve(request_id="r2", amount_micros=2_000_000, limits=[limit], keys=[key],
                  created_at=now, agent_id="a", agent_type=None, project_id="checkout",
                  model_group="g")
    engine.dispose()
    code, out = run("budgets", "status", "--project", "checkout", "--format", "json", *url)
    assert code == 0
    day = next(r for r in json.loads(out) if r["period"] == "day")
    assert (day["spent_usd"], day["reserved_usd"], day["limit_usd"]) == (
        "49.000000", "2.000000", "60.000000")
    assert day["used"] == round(51 / 60, 4) and day["over_warn"] is True
    assert day["resets_at"] == policy.period_end(key.period_start, "day").isoformat() + "Z"
    code, out = run("budgets", "status", *url)
    assert code == 0 and "checkout" in out and "85.0%" in out
    # the hold left open is settled by reconcile, once
    code, out = run("db", "reconcile", "--older-than", "0", "--force", *url)
    assert code == 0 and "Reconciled 1" in out
    assert "Reconciled 0" in run("db", "reconcile", "--older-than", "0", "--force", *url)[1]


@pytest.mark.parametrize(("args", "message"), [
    (["--project", "p", "--daily", "-5"], "zero or more dollars"),
    (["--project", "p", "--daily", "abc"], "dollar amount like 50"),
    (["--project", "p", "--daily", "1.0000001"], "more than 6 decimals"),
    (["--project", "p", "--daily", "nan"], "zero or more dollars"),
    (["--project", "p", "--agent", "a", "--daily", "1"], "exactly one of"),
    (["--daily", "1"], "exactly one of"),
    (["--project", "p"], "--daily and/or --monthly"),
    (["--project", "p", "--daily", "1", "--warn", "1.5"], "--warn"),
    (["--per-request", "1", "--project", "p"], "stands alone"),
    (["--project", "p", "--daily", "1e308"], "at most $1,000,000,000"),
    (["--project", "p", "--daily", "99999999999999999999"], "at most $1,000,000,000"),
    (["--project", "p", "--monthly", "1000000000.000001"], "at most $1,000,000,000"),
    (["--per-request", "1E+400"], "at most $1,000,000,000"),
    (["--global", "--monthly", "inf"], "zero or more dollars"),
    (["--global", "--monthly", "-inf"], "zero or more dollars"),
    (["--per-request", "0"], "A $0 limit refuses every request. Add --yes"),
    (["--project", "p", "--daily", "0"], "A $0 limit refuses every request of project 'p'"),
    (["--agent", "a", "--daily", "5", "--monthly", "$0.000000"], "Add --yes"),
    (["--project", "p", "--daily", "1", "--warn", "nan"], "--warn"),
    (["--project", "p", "--daily", "1", "--warn", "inf"], "--warn"),
    (["--project", "p" * 201, "--daily", "1"], "at most 200 characters"),
    (["--agent-type", "qa\x00x", "--daily", "1"], "without control characters"),
    (["--session", "run-1", "--daily", "1"], "--total-usd goes with --session"),
    (["--session", "run-1", "--total-usd", "1", "--monthly", "9"], "no daily or monthly"),
    (["--project", "p", "--total-usd", "1"], "--total-usd goes with --session"),
    (["--session", "run-1", "--project", "p", "--total-usd", "1"], "exactly one of"),
    (["--session", "run-1", "--total-usd", "0"], "refuses every request of session 'run-1'"),
])
def test_bad_amounts_and_targets_are_refused(migrated_ledger_url, args, message):
    result = runner.invoke(app, ["budgets", "set", *args, "--ledger-url", migrated_ledger_url])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert run("budgets", "list", "--format", "json", "--ledger-url",
               migrated_ledger_url)[1].strip() == "[]"


def test_a_zero_limit_needs_yes(migrated_ledger_url):
    url = ["--ledger-url", migrated_ledger_url]
    assert run("budgets", "set", "--per-request", "0", "--yes", *url)[0] == 0
    assert run("budgets", "set", "--project", "frozen", "--daily", "0", "--yes", *url)[0] == 0
    rows = json.loads(run("budgets", "list", "--format", "json", *url)[1])
    assert {(r["scope"], r["id"], r["period"], r["limit_usd"]) for r in rows} == {
        ("request", "*", "request", "0.000000"), ("project", "frozen", "day", "0.000000")}


def test_the_largest_limit_is_stored_exactly(migrated_ledger_url):
    url = ["--ledger-url", migrated_ledger_url]
    assert run("budgets", "set", "--global", "--monthly", "1e9", *url)[0] == 0
    [row] = json.loads(run("budgets", "list", "--format", "json", *url)[1])
    assert row["limit_usd"] == "1000000000.000000"


def test_unmigrated_database_names_the_fix(ledger_url):
    code, out = run("budgets", "status", "--ledger-url", ledger_url)
    assert code == 1 and "llmgw db upgrade" in out




def test_a_runs_cap_set_and_shown_by_session(migrated_ledger_url, tmp_path):
    from llmgw.budgets.rules import SESSION, TOTAL, TOTAL_START
    from tests.support import sim_config_dict

    url = ["--ledger-url", migrated_ledger_url]
    config = sim_config_dict("http://127.0.0.1:9", "http://127.0.0.1:9", migrated_ledger_url)
    config["llmgw"]["budgets"] = {"sessions": {"*": {"total_usd": 5}}}
    (tmp_path / "model_list.yaml").write_text(yaml.safe_dump(config))
    code, out = run("budgets", "set", "--session", "run-7", "--total-usd", "$2.50", *url)
    assert code == 0 and "session run-7 total: $2.5" in out
    # 1.20 of run-7's 2.50 spent, 0.30 more on hold
    engine = make_engine(migrated_ledger_url)
    store = BudgetStore(engine)
    now = utcnow()
    limit = Limit(SESSION, "run-7", TOTAL, 2_500_000, 0.8)
    key = CounterKey(SESSION, "run-7", TOTAL, TOTAL_START)
    hold = store.reserve(request_id="r1", amount_micros=1_500_000, limits=[limit], keys=[key],
                         created_at=now, agent_id="a", agent_type=None, project_id="p",
                         model_group="g")
    store.settle(hold, spent_micros=1_200_000, rows=[])
    store.reserve(request_id="r2", amount_micros=300_000, limits=[limit], keys=[key],
                  created_at=now, agent_id="a", agent_type=None, project_id="p", model_group="g")
    engine.dispose()
    code, out = run("budgets", "status", "--session", "run-7", "--format", "json", *url)
    assert code == 0
    assert json.loads(out) == [{"scope": "session", "id": "run-7", "period": "total",
                                "spent_usd": "1.200000", "reserved_usd": "0.300000",
                                "limit_usd": "2.500000", "used": 0.6, "resets_at": None,
                                "over_warn": False}]
    code, out = run("budgets", "status", "--session", "run-7", *url)
    assert code == 0 and "run-7" in out and "60.0%" in out and "never" in out
    # a run without a rule of its own has the config file's default, nothing spent yet
    [fresh] = json.loads(run("budgets", "status", "--session", "run-8", "--format", "json",
                             *url)[1])
    assert (fresh["spent_usd"], fresh["limit_usd"]) == ("0.000000", "5.000000")
    # runs are many: without --session none is listed
    assert all(r["scope"] != "session"
               for r in json.loads(run("budgets", "status", "--format", "json", *url)[1]))
    rows = json.loads(run("budgets", "list", "--format", "json", *url)[1])
    assert {(r["scope"], r["id"], r["period"], r["limit_usd"], r["source"]) for r in rows} == {
        ("session", "run-7", "total", "2.500000", "database"),
        ("session", "*", "total", "5.000000", "config")}


def test_no_cap_for_a_session_says_how_to_set_one(migrated_ledger_url):
    code, out = run("budgets", "status", "--session", "run-1", "--ledger-url",
                    migrated_ledger_url)
    assert code == 0 and "No cap applies to session run-1" in out and "budgets set --session" in out
