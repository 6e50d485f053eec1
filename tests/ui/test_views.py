"""Each view in headless Chromium, signed in through the page's form, against a ledger filled
by real gateway calls: the DOM's numbers equal plain SQL sums (and the CLI's output), and a
PNG of each view is saved in the test's tmp dir."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from llmgw.cli import app as cli_app
from llmgw.ledger.timespec import utcnow
from tests.ui.browser import Browser
from tests.ui.conftest import Filled

# `LLMGW_UI_DOCS_SHOT=1 pytest tests/ui/test_views.py -k "spend and sqlite"` renews it.
DOCS_SHOT_ENV = "LLMGW_UI_DOCS_SHOT"
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "ui-spend.png"


@pytest.fixture
def admin_browser(filled: Filled, tmp_path: Path):
    with Browser(tmp_path / "profile") as browser:
        browser.goto(filled.base_url + "/ui/spend")
        assert browser.url().endswith("/ui/login")  # not signed in yet
        landed = browser.submit("form[action='/ui/login']", {"key": filled.admin_key()})
        assert landed == filled.base_url + "/ui/spend"
        yield browser


def no_script(browser: Browser) -> None:
    """The page works with JavaScript off: it has none (and its CSP would run none)."""
    assert browser.js("document.scripts.length") == 0


def micros(browser: Browser, selector: str) -> int:
    return int(browser.js(f"document.querySelector({json.dumps(selector)})"
                          ".dataset.micros"))


def table(browser: Browser, selector: str) -> list[list[str]]:
    return browser.js(f"[...document.querySelectorAll({json.dumps(selector + ' tr')})]"
                      ".map(r => [...r.cells].map(c => c.textContent.trim()))")


def test_spend_view_totals_equal_sql_sums(filled: Filled, admin_browser: Browser,
                                          shots: Path) -> None:
    b = admin_browser
    since = b.js("document.querySelector('#period-cost').dataset.since")
    first = datetime.fromisoformat(since)
    today = first + timedelta(days=29)
    assert micros(b, "#period-cost") == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE ts >= :t", t=first)
    assert micros(b, "#today-cost") == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE ts >= :t", t=today)
    assert micros(b, "#saved") == filled.scalar(
        "SELECT SUM(saved_micros) FROM usage_events WHERE ts >= :t", t=first) > 0
    assert b.js("document.querySelector('#refused').textContent") == "1"
    # every bar: that day's sum; its stacked segments add up to it
    bars = b.js("[...document.querySelectorAll('svg.chart rect.day')].map(r => "
                "[r.dataset.day, +r.dataset.costMicros])")
    assert len(bars) == 30
    by_day = {d: 0 for d, _ in bars}
    for ts, cost in filled.sql("SELECT ts, cost_micros FROM usage_events WHERE ts >= :t",
                               t=first):
        by_day[str(ts)[:10]] += cost
    assert dict(bars) == by_day
    assert sum(1 for _, c in bars if c) == 8  # DAYS_BACK inside the window
    legend = b.js("[...document.querySelectorAll('#legend b')].map(e => +e.dataset.micros)")
    assert sum(legend) == micros(b, "#period-cost")
    groups = filled.sql("SELECT model_group, SUM(cost_micros) FROM usage_events WHERE ts >= :t "
                        "GROUP BY model_group HAVING SUM(cost_micros) > 0", t=first)
    assert sorted(legend) == sorted(int(c) for _, c in groups)
    # every stacked segment: that day's and that group's sum
    segments = b.js("[...document.querySelectorAll('svg.chart rect.seg')].map(r => "
                    "[r.dataset.day, r.dataset.key, +r.dataset.micros])")
    cells: dict[tuple[str, str], int] = {}
    for ts, group, cost in filled.sql("SELECT ts, model_group, cost_micros FROM usage_events "
                                      "WHERE ts >= :t AND cost_micros > 0", t=first):
        cells[(str(ts)[:10], group)] = cells.get((str(ts)[:10], group), 0) + cost
    assert {(d, k): c for d, k, c in segments} == cells and len(segments) == len(cells)
    no_script(b)
    b.screenshot(shots / "spend.png")
    if os.environ.get(DOCS_SHOT_ENV):  # the README's picture, from this very page
        shutil.copyfile(shots / "spend.png", DOCS_SHOT)
    b.goto(filled.base_url + "/ui/spend?stack=agent-type")
    types = b.js("[...document.querySelectorAll('#legend li')].map(e => e.textContent.trim())")
    assert any(t.startswith("software-architect") for t in types)
    b.screenshot(shots / "spend-by-agent-type.png")


def test_usage_tables_agree_with_sql_and_the_cli(filled: Filled, admin_browser: Browser,
                                                 shots: Path) -> None:
    b = admin_browser
    for by, column in (("agent", "agent_id"), ("agent-type", "agent_type"), ("model", "model"),
                       ("deployment", "deployment_id")):
        b.goto(f"{filled.base_url}/ui/usage?by={by}")
        rows = table(b, "#usage tbody")
        expected = filled.sql(
            f"SELECT COALESCE({column}, '-'), COUNT(DISTINCT request_id), SUM(cost_micros), "
            f"{KINDS_SQL} FROM usage_events GROUP BY COALESCE({column}, '-')")
        # requests, cost, then cache reads, cache writes, of which 1h, reasoning
        assert {r[0]: (_count(r[1]), _micros(r[12]), *map(_count, r[8:12])) for r in rows} == {
            k: tuple(int(v) for v in values) for k, *values in expected}
        total = table(b, "#usage tfoot")[0]
        assert _count(total[1]) == filled.scalar(
            "SELECT COUNT(DISTINCT request_id) FROM usage_events")
        assert _micros(total[12]) == filled.scalar("SELECT SUM(cost_micros) FROM usage_events")
        assert _micros(total[13]) == filled.scalar("SELECT SUM(saved_micros) FROM usage_events")
        assert [_count(c) for c in total[8:12]] == [
            int(v) for v in filled.sql(f"SELECT {KINDS_SQL} FROM usage_events")[0]]
        assert all(_count(c) > 0 for c in total[8:12])  # the sims answered every kind
        no_script(b)
    b.screenshot(shots / f"usage-by-{by}.png")
    # sortable: by requests, ascending
    b.goto(f"{filled.base_url}/ui/usage?by=agent&sort=requests&dir=asc")
    counts = [int(r[1].replace(",", "")) for r in table(b, "#usage tbody")]
    assert counts == sorted(counts) and len(set(counts)) > 1
    # filters as `llmgw usage report`: the CSV link is the CLI's CSV, byte for byte
    since = (utcnow() - timedelta(days=3)).strftime("%Y-%m-%d")
    b.goto(f"{filled.base_url}/ui/usage?by=model&since={since}&agent=dev-1")
    href = b.js("document.querySelector('#csv').href")
    # The page's CSP lets no script fetch: download it with the browser's own session cookie.
    jar = {c["name"]: c["value"] for c in b.cookies()}
    download = httpx.get(href, cookies=jar)
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    csv_text = download.text
    cli = CliRunner().invoke(cli_app, ["usage", "report", "--by", "model", "--since", since,
                                       "--agent", "dev-1", "--format", "csv",
                                       "--ledger-url", filled.ledger_url])
    assert cli.exit_code == 0, cli.output
    assert csv_text == cli.output and csv_text.count("\n") >= 2
    total = table(b, "#usage tfoot")[0]
    assert _micros(total[12]) == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE agent_id = 'dev-1' AND ts >= :t",
        t=datetime.fromisoformat(since))


def test_budgets_view_shows_every_limit_with_counters(filled: Filled, admin_browser: Browser,
                                                      shots: Path) -> None:
    b = admin_browser
    b.goto(filled.base_url + "/ui/budgets")
    rows = b.js("[...document.querySelectorAll('#budgets tbody tr')].map(r => "
                "[r.dataset.scope, r.dataset.id, r.dataset.period, "
                "[...r.querySelectorAll('[data-micros]')].map(c => +c.dataset.micros), "
                "r.cells[r.cells.length - 1].textContent.trim(), !!r.querySelector('svg.bar')])")
    seen = {(s, i, p): (m, refused, bar) for s, i, p, m, refused, bar in rows}
    assert set(seen) >= {("project", "proj-a", "month"), ("project", "proj-b", "day"),
                         ("agent", "blocked-bot", "day"), ("agent_type", "qa-engineer", "day"),
                         ("global", "*", "month")}
    for (scope, sid, period), (values, _, bar) in seen.items():
        if scope == "request":
            continue
        (spent, reserved), = filled.sql(
            "SELECT spent_micros, reserved_micros FROM budget_counters WHERE scope = :s AND "
            "scope_id = :i AND period = :p ORDER BY period_start DESC LIMIT 1",
            s=scope, i=sid, p=period) or [(0, 0)]
        assert values[:2] == [spent, reserved] and bar
    assert seen[("agent", "blocked-bot", "day")][1] == "1"  # the refusal, in its window
    assert seen[("project", "proj-a", "month")][0][0] > 0
    refusals = table(b, "#refusals tbody")
    assert [r[1] for r in refusals] == [filled.refused_id]
    no_script(b)
    b.screenshot(shots / "budgets.png")


def test_request_story_from_a_click(filled: Filled, admin_browser: Browser,
                                    shots: Path) -> None:
    b = admin_browser
    b.goto(filled.base_url + "/ui/requests")
    link = b.js(f"[...document.querySelectorAll('#recent a')].find(a => a.textContent === "
                f"{json.dumps(filled.fallback_id)}).href")
    b.goto(link)
    attempts = table(b, "#attempts tbody")
    assert [(r[0], r[2], r[3], r[5]) for r in attempts] == [
        ("1", "primary", "primary-anthropic", "error"), ("2", "backup", "backup-openai", "ok")]
    assert "ProviderUnavailable" in attempts[0][6]
    expected = filled.sql("SELECT attempt, cost_micros, prompt_tokens, completion_tokens, "
                          "cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, "
                          "reasoning_tokens FROM usage_events WHERE request_id = :r ORDER BY attempt",
                          r=filled.fallback_id)
    # #, ..., prompt, cache reads, cache writes, of which 1h, completion, reasoning, cost, rates
    assert [(int(r[0]), _micros(r[14]), _count(r[8]), _count(r[12]), _count(r[9]),
             _count(r[10]), _count(r[11]), _count(r[13])) for r in attempts] == [
        tuple(int(v) for v in row) for row in expected]
    assert (_count(attempts[1][9]), _count(attempts[1][13])) == (512, 30)
    rates = filled.sql("SELECT rates FROM usage_events WHERE request_id = :r ORDER BY attempt",
                       r=filled.fallback_id)[1][0]
    if isinstance(rates, str):
        rates = json.loads(rates)
    shown = b.js("[...document.querySelectorAll('#attempts tbody tr')[1]"
                 ".querySelectorAll('.rates [data-kind]')].map(e => e.textContent)")
    assert shown == [f"{kind} {rate}" for kind, rate in (rates or {}).items()]
    assert b.js("document.querySelector('#route').textContent").startswith("agent_type")
    assert b.js("document.querySelector('#answered-by').textContent") == "backup"
    (amount, settled), = filled.sql("SELECT amount_micros, settled_micros FROM reservations "
                                    "WHERE request_id = :r", r=filled.fallback_id)
    held = b.js("[...document.querySelectorAll('#reservation [data-micros]')]"
                ".map(e => +e.dataset.micros)")
    assert held == [amount, settled] and settled == micros(b, "#cost") > 0
    no_script(b)
    b.screenshot(shots / "story.png")
    # search by id: the cached one
    b.goto(filled.base_url + "/ui/requests")
    b.submit("form[action='/ui/requests']", {"id": filled.cached_id})
    assert b.js("document.querySelector('#cache').textContent").startswith("answered from")
    assert table(b, "#attempts tbody")[0][5] == "cached"
    b.screenshot(shots / "story-cached.png")


def test_health_view_lists_every_deployment(filled: Filled, admin_browser: Browser,
                                            shots: Path) -> None:
    b = admin_browser
    b.goto(filled.base_url + "/ui/health")
    rows = b.js("[...document.querySelectorAll('#health tbody tr')].map(r => "
                "[r.dataset.deployment, [...r.cells].map(c => c.textContent.trim())])")
    assert {d for d, _ in rows} == {"primary-anthropic", "backup-openai", "solo-openai",
                                    "auth-anthropic", "auth-openai"}
    cells = dict(rows)
    assert cells["backup-openai"][3].startswith("up")
    assert cells["auth-anthropic"][3].startswith("down")  # the wrong key
    # this server's own attempts (conftest's calls through the HTTP front)
    assert cells["backup-openai"][6:9] == ["4", "0", "0.0%"]
    assert cells["primary-anthropic"][6:9] == ["1", "1", "100.0%"]
    no_script(b)
    b.screenshot(shots / "health.png")


KINDS_SQL = ("SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cache_write_1h_tokens), "
             "SUM(reasoning_tokens)")


def _count(cell: str) -> int:
    return int(cell.replace(",", ""))


def _micros(usd: str) -> int:
    whole, _, frac = usd.replace(",", "").partition(".")
    return int(whole) * 1_000_000 + int(frac.ljust(6, "0"))


def test_request_list_filters_by_session_and_shows_it(filled: Filled, admin_browser: Browser,
                                                      shots: Path) -> None:
    # Two requests of one agent run (the gateway records the session; here set in SQL).
    with filled.engine.begin() as conn:
        conn.execute(text("UPDATE usage_events SET session_id = 'run-ui-7' "
                          "WHERE request_id IN (:a, :b)"),
                     {"a": filled.fallback_id, "b": filled.cached_id})
    b = admin_browser
    b.goto(filled.base_url + "/ui/requests")
    assert "session" in table(b, "#recent thead")[0]
    b.submit("form[action='/ui/requests']", {"session": "run-ui-7"})
    assert "session=run-ui-7" in b.url()
    rows = table(b, "#recent tbody")
    expected = filled.sql("SELECT request_id, session_id, cost_micros FROM usage_events "
                          "WHERE session_id = 'run-ui-7' ORDER BY ts DESC, id DESC")
    assert [(r[1], r[4]) for r in rows] == [(e[0], e[1]) for e in expected]
    assert {r[1] for r in rows} == {filled.fallback_id, filled.cached_id}
    costs = b.js("[...document.querySelectorAll('#recent tbody [data-micros]')]"
                 ".map(e => +e.dataset.micros)")
    assert costs == [int(e[2]) for e in expected]
    # The session cell links to the same filtered list.
    link = b.js("document.querySelector('#recent td.session a').href")
    assert link.endswith("/ui/requests?session=run-ui-7")
    no_script(b)
    b.screenshot(shots / "requests-session.png")
    b.goto(filled.base_url + "/ui/requests?session=no-such-run")
    assert table(b, "#recent tbody") == [["No requests in this session."]]
