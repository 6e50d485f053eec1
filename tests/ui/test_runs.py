"""The most expensive runs (`/ui/runs`): sessions by cost from the ledger over the report's
window, each linking to its requests, with its cap when one applies."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from llmgw.budgets.rules import TOTAL_START, CounterKey, Limit, Rule
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.timespec import utcnow
from tests.ui.browser import Browser
from tests.ui.conftest import Filled


@pytest.fixture
def admin_browser(filled: Filled, tmp_path: Path):
    with Browser(tmp_path / "profile") as browser:
        browser.goto(filled.base_url + "/ui/spend")
        browser.submit("form[action='/ui/login']", {"key": filled.admin_key()})
        yield browser


def _rows(browser: Browser) -> list[list[str]]:
    return browser.js("[...document.querySelectorAll('#runs tbody tr')]"
                      ".map(r => [...r.cells].map(c => c.textContent.trim()))")


def test_runs_by_cost_link_to_their_requests(filled: Filled, admin_browser: Browser,
                                             tmp_path: Path) -> None:
    # Three runs over the ledger's requests (the gateway records the session; here set in SQL):
    # run-old's are 45 days back only, outside a 30-day window.
    now = utcnow()
    with filled.engine.begin() as conn:
        for run, agent, newest, oldest in (("run-big", "dev-1", 0, 31), ("run-small", "qa-1", 0, 31),
                                           ("run-old", "pm-1", 40, 60)):
            conn.execute(text("UPDATE usage_events SET session_id = :run WHERE agent_id = :agent "
                              "AND ts >= :oldest AND ts < :newest"),
                         {"run": run, "agent": agent, "oldest": now - timedelta(days=oldest),
                          "newest": now - timedelta(days=newest) + timedelta(hours=1)})
    store = BudgetStore(filled.engine)
    store.set_rule(Rule("session", "run-big", "total", 90_000_000, 0.8), utcnow())
    key_limit = Limit("session", "run-big", "total", 90_000_000, 0.8)
    key = CounterKey("session", "run-big", "total", TOTAL_START)
    store.reserve(request_id="runs-hold", amount_micros=1_500_000, limits=[key_limit],
                  keys=[key], created_at=utcnow(), agent_id="dev-1", agent_type=None,
                  project_id="proj-a", model_group="primary")
    b = admin_browser
    b.goto(filled.base_url + "/ui/runs?since=30d")
    since = utcnow() - timedelta(days=30)
    expected = filled.sql(
        "SELECT session_id, SUM(cost_micros), COUNT(DISTINCT request_id) FROM usage_events "
        "WHERE session_id IS NOT NULL AND ts >= :since GROUP BY session_id "
        "ORDER BY SUM(cost_micros) DESC, session_id", since=since)
    rows = _rows(b)
    assert [r[0] for r in rows] == [e[0] for e in expected]
    assert {r[0] for r in rows} == {"run-big", "run-small"}
    costs = b.js("[...document.querySelectorAll('#runs tbody [data-micros]')]"
                 ".map(e => +e.dataset.micros)")
    assert costs == [int(e[1]) for e in expected] and costs == sorted(costs, reverse=True)
    assert [r[1] for r in rows] == [f"{e[2]:,}" for e in expected]
    # run-big's cap: what its counter holds (1.50 on hold here) of its $90 limit
    caps = json.loads(b.js("JSON.stringify([...document.querySelectorAll('#runs td.cap')]"
                           ".map(c => Object.assign({}, c.dataset)))"))
    big = [r[0] for r in rows].index("run-big")
    assert caps[big] == {"cap": "90000000", "spent": "0", "reserved": "1500000"}
    assert rows[big][8] == "1.500000 of 90.000000"
    assert next(r for r in rows if r[0] == "run-small")[8] == "-"  # no cap applies
    # every run links to the request list filtered by its session
    link = b.js("[...document.querySelectorAll('#runs td.session a')].map(a => a.href)")
    assert link == [filled.base_url + f"/ui/requests?session={e[0]}" for e in expected]
    b.goto(link[0])
    listed = b.js("[...document.querySelectorAll('#recent td.session')]"
                  ".map(c => c.textContent.trim())")
    assert listed and set(listed) == {expected[0][0]}
    b.screenshot(tmp_path / "runs.png")
    # all time: run-old too
    b.goto(filled.base_url + "/ui/runs")
    assert "run-old" in {r[0] for r in _rows(b)}
