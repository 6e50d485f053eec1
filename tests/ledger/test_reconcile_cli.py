"""`llmgw db reconcile` refuses an --older-than below the longest a request may run (it would
book requests still in flight at their worst case) unless --force."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from llmgw.budgets.rules import CounterKey, Limit
from llmgw.cli import app
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.store import utcnow
from tests.support import sim_config_dict

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _here(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no model_list.yaml unless a test writes one
    monkeypatch.delenv("LLMGW_CONFIG", raising=False)
    monkeypatch.delenv("LLMGW_LEDGER_URL", raising=False)


@pytest.fixture
def held(migrated_ledger_url: str) -> str:
    """A ledger with one open hold, made just now."""
    engine = make_engine(migrated_ledger_url)
    now = utcnow()
    BudgetStore(engine).reserve(
        request_id="r1", amount_micros=500, limits=[Limit("project", "p", "day", 10_000, 0.8)],
        keys=[CounterKey("project", "p", "day", now.replace(hour=0, minute=0, second=0,
                                                            microsecond=0))],
        created_at=now, agent_id="a", agent_type=None, project_id="p", model_group="g")
    engine.dispose()
    return migrated_ledger_url


def reconcile(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["db", "reconcile", *args, "--ledger-url", url])
    return result.exit_code, result.output


def open_holds(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM reservations WHERE state = 'open'")
                                ).scalar_one()
    finally:
        engine.dispose()


def test_without_a_config_the_default_request_timeout_is_the_floor(held):
    code, out = reconcile(held, "--older-than", "0")
    assert code == 2
    assert out.count("\n") == 1 and out.startswith("Error: --older-than 0 is shorter")
    assert "600s" in out and "--older-than 600s or more, or --force" in out
    assert open_holds(held) == 1  # nothing was touched
    assert reconcile(held, "--older-than", "10m")[0] == 0  # at the floor: allowed
    assert open_holds(held) == 1  # (the hold is younger than that)
    code, out = reconcile(held, "--older-than", "0", "--force")
    assert code == 0 and "Reconciled 1" in out
    assert open_holds(held) == 0


def test_the_routers_timeout_and_stream_timeout_set_the_floor(held, tmp_path):
    config = sim_config_dict("http://127.0.0.1:9", "http://127.0.0.1:9", held,
                             timeout=30, stream_timeout=15)
    config["model_list"][0]["litellm_params"]["timeout"] = 45  # one deployment waits longer
    (tmp_path / "model_list.yaml").write_text(json.dumps(config))
    code, out = reconcile(held, "--older-than", "59s")
    assert code == 2 and "(60s:" in out and "--older-than 60s or more" in out
    assert open_holds(held) == 1
    assert reconcile(held, "--older-than", "1m")[0] == 0


def test_a_duration_too_large_is_a_usage_error_not_a_traceback(held):
    code, out = reconcile(held, "--older-than", "99999999999999d")
    assert code == 2 and out.startswith("Error: --older-than must look like")
