"""Who may see what on /ui: key scoping (project A's session never sees project B, by view
or URL), secrets (no key or session token in a page, a URL or a log; the cookie's flags), and
bad input (a clear 4xx page, never a traceback)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from llmgw.server.ui.csrf import CSRF_COOKIE
from llmgw.server.ui.sessions import COOKIE
from tests.ui.browser import Browser
from tests.ui.conftest import Filled, login_token, sign_in

A_PAGES = ("/ui/spend", "/ui/spend?stack=agent-type", "/ui/usage", "/ui/usage?by=project",
           "/ui/usage?by=agent-type", "/ui/usage?by=deployment", "/ui/usage.csv?by=agent",
           "/ui/budgets", "/ui/requests", "/ui/health")


def _period_cost(html: str) -> int:
    found = re.search(r'id="period-cost" data-micros="(\d+)"', html)
    assert found, html[:500]
    return int(found.group(1))


def _since(html: str) -> str:
    found = re.search(r'data-since="([^"]+)"', html)
    assert found
    return found.group(1).replace("T", " ")


# -- key scoping ---------------------------------------------------------------------------


def test_project_session_sees_its_project_only(filled: Filled) -> None:
    a = sign_in(filled, filled.key("proj-a", agent_id=None))
    for path in A_PAGES:
        page = a.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "proj-b" not in page.text and "pm-1" not in page.text, path
    # naming B's agent filters A's project: nothing
    other = a.get("/ui/usage?agent=pm-1&by=project").text
    assert "No usage recorded" in other and "proj-b" not in other
    spend = a.get("/ui/spend").text
    assert _period_cost(spend) == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE project_id = 'proj-a' AND ts >= :t",
        t=_since(spend))
    assert 'id="scope">project proj-a<' in spend and 'name="project"' not in spend
    csv_rows = a.get("/ui/usage.csv?by=project").text.splitlines()
    assert [line.split(",")[0] for line in csv_rows] == ["key", "proj-a"]
    # a limit shared with other projects: its limit shows, its spend does not
    budgets = a.get("/ui/budgets").text
    global_row = re.search(r'<tr data-scope="global".*?</tr>', budgets, re.DOTALL)
    assert global_row and "shared across projects" in global_row.group(0)
    assert 'data-scope="project" data-id="proj-a"' in budgets
    # qa-1 is also an agent of proj-b: its counter's spend is not A's to see; dev-1 is A's only
    qa_row = re.search(r'<tr data-scope="agent" data-id="qa-1".*?</tr>', budgets, re.DOTALL)
    assert qa_row and "shared across projects" in qa_row.group(0)
    dev_row = re.search(r'<tr data-scope="agent" data-id="dev-1".*?</tr>', budgets, re.DOTALL)
    assert dev_row and "shared" not in dev_row.group(0) and "svg" in dev_row.group(0)


def test_project_session_cannot_reach_another_project_by_url(filled: Filled) -> None:
    a = sign_in(filled, filled.key("proj-a", agent_id="dev-1"))
    for path in ("/ui/spend?project=proj-b", "/ui/usage?project=proj-b&by=agent",
                 "/ui/usage.csv?project=proj-b", "/ui/budgets?project=proj-b",
                 "/ui/requests?project=proj-b", "/ui/health?project=proj-b",
                 f"/ui/requests/{filled.b_request_id}?project=proj-b"):
        page = a.get(path)
        assert page.status_code == 403, path
        assert "sees project &#39;proj-a&#39; only" in page.text
        assert "text/html" in page.headers["content-type"]
    # B's request id is "not found", exactly like an id that never existed
    unknown = "0" * 32
    for path in (f"/ui/requests/{filled.b_request_id}", f"/ui/requests?id={filled.b_request_id}"):
        page = a.get(path)
        assert page.status_code == 404
        other = a.get(path.replace(filled.b_request_id, unknown))
        assert page.text.replace(filled.b_request_id, unknown) == other.text
    assert a.get(f"/ui/requests/{filled.fallback_id}").status_code == 200  # its own: fine


def test_admin_session_switches_between_projects(filled: Filled) -> None:
    admin = sign_in(filled, filled.admin_key())
    page = admin.get("/ui/spend?project=proj-b").text
    assert _period_cost(page) == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE project_id = 'proj-b' AND ts >= :t",
        t=_since(page)) > 0
    assert '<option value="proj-b" selected>' in page and '<option value="proj-a">' in page
    everything = admin.get("/ui/spend").text
    assert _period_cost(everything) == filled.scalar(
        "SELECT SUM(cost_micros) FROM usage_events WHERE ts >= :t", t=_since(everything))
    assert admin.get(f"/ui/requests/{filled.b_request_id}").status_code == 200
    # the nav keeps the chosen project
    assert 'href="/ui/budgets?project=proj-b"' in page


# -- secrets -------------------------------------------------------------------------------


@pytest.fixture
def all_logs() -> Iterator[list[str]]:
    """Every log line of the process (the server runs in it), access log included; but the
    test's own HTTP client's (httpx, httpcore), which is not the server."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith(("httpx", "httpcore")):
                lines.append(self.format(record) + " " + repr(record.args))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    names = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "llmgw")
    levels = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(levels[name])


def test_key_and_session_token_never_in_pages_urls_or_logs(filled: Filled,
                                                           all_logs: list[str]) -> None:
    key = filled.key("proj-a", agent_id=None)
    client = httpx.Client(base_url=filled.base_url, timeout=60)
    signed = client.post("/ui/login", data={"csrftoken": login_token(client), "key": key})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/spend"
    (cookie,) = [c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
    token = client.cookies[COOKIE]
    assert key not in token and key not in cookie
    pages = [client.get(path) for path in A_PAGES]
    pages.append(client.get(f"/ui/requests/{filled.fallback_id}"))
    for page in pages:
        assert page.status_code == 200
        assert key not in page.text and token not in page.text
        assert key not in str(page.url) and page.headers["cache-control"] == "no-store"
        assert page.headers.get("content-security-policy", "").startswith("default-src 'none'")
    # a key in the URL is never taken
    stranger = httpx.Client(base_url=filled.base_url, timeout=60)
    for attempt in (stranger.get("/ui/login", params={"key": key}),
                    stranger.post("/ui/login", params={"key": key},
                                  data={"csrftoken": login_token(stranger)})):
        assert attempt.status_code in (200, 400), attempt.text
        assert not any(c.startswith(COOKIE + "=") for c in attempt.headers.get_list("set-cookie"))
    wrong = stranger.post("/ui/login", data={"csrftoken": login_token(stranger), "key": key + "x"})
    assert wrong.status_code == 401 and key not in wrong.text
    assert all_logs, "the server logged nothing: the check would be empty"
    assert any("dashboard sign-in" in line for line in all_logs)
    assert any("uvicorn.access" in line and "/ui/login" in line for line in all_logs)
    for line in all_logs:
        assert key not in line and token not in line and key[6:20] not in line


def test_browser_cookie_flags_and_sign_out(filled: Filled, tmp_path: Path) -> None:
    key = filled.key("proj-a", agent_id=None)
    with Browser(tmp_path / "profile") as b:
        b.goto(filled.base_url + "/ui/login")
        assert b.submit("form[action='/ui/login']", {"key": key}).endswith("/ui/spend")
        (cookie,) = [c for c in b.cookies() if c["name"] == COOKIE]
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
            COOKIE, True, "Strict", "/ui")
        readable = b.js("document.cookie")  # HttpOnly: no script can read the session
        assert [c.split("=")[0] for c in readable.split("; ")] == [CSRF_COOKIE]
        assert cookie["value"] not in readable
        assert key not in b.html() and cookie["value"] not in b.html()
        token = cookie["value"]
        assert b.submit("form[action='/ui/logout']", {}).endswith("/ui/login")
        assert [c["name"] for c in b.cookies()] == [CSRF_COOKIE]  # the next form's token
    # the signed-out token is dead, not just forgotten by the browser
    replay = httpx.get(filled.base_url + "/ui/spend", cookies={COOKIE: token})
    assert replay.status_code == 303 and replay.headers["location"] == "/ui/login"


def test_revoked_key_ends_its_sessions_and_forged_cookies_fail(filled: Filled) -> None:
    issued = filled.keys.create(project_id="proj-a")
    client = sign_in(filled, issued.secret)
    assert client.get("/ui/spend").status_code == 200
    filled.keys.revoke(issued.info.id)
    assert client.get("/ui/spend").status_code == 303  # key_cache_s=0 in this server
    token = sign_in(filled, filled.key("proj-a")).cookies[COOKIE]
    body, mac = token.split(".")
    for forged in (body + "." + mac[::-1], body[:-2] + "AA." + mac, "x", "", "a.b.c"):
        page = httpx.get(filled.base_url + "/ui/budgets", cookies={COOKIE: forged})
        assert page.status_code == 303


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("path, status, says", [
    ("/ui/requests/ffffffffffffffffffffffffffffffff", 404, "No such request"),
    ("/ui/requests?id=nope", 404, "No such request"),
    ("/ui/requests/" + "x" * 65, 400, "at most 64"),
    ("/ui/requests?id=" + quote("a\x00b"), 400, "control characters"),
    ("/ui/usage?since=yesterdayish", 400, "Cannot read since"),
    ("/ui/usage?since=2026-13-45", 400, "Cannot read since"),
    ("/ui/usage?until=99999999d", 400, "Cannot read until"),
    ("/ui/usage?since=2026-11-02&until=2026-11-01", 400, "is not before until"),
    ("/ui/usage.csv?since=bad", 400, "Cannot read since"),
    ("/ui/usage?limit=" + "9" * 40, 400, "from 1 to 1000"),
    ("/ui/usage?limit=0", 400, "from 1 to 1000"),
    ("/ui/usage?limit=-5", 400, "from 1 to 1000"),
    ("/ui/requests?limit=1e9", 400, "from 1 to 1000"),
    ("/ui/usage?by=everything", 400, "Unknown by"),
    ("/ui/usage?sort=cost_micros;drop", 400, "Unknown sort"),
    ("/ui/usage?dir=sideways", 400, "Unknown dir"),
    ("/ui/spend?stack=model", 400, "Unknown stack"),
    ("/ui/usage?agent=" + "a" * 201, 400, "at most 200"),
    ("/ui/spend?project=" + "p" * 201, 400, "at most 200"),
    ("/ui/no-such-page", 404, "There is no page"),
])
def test_bad_input_gets_a_clear_page(filled: Filled, path: str, status: int, says: str) -> None:
    admin = sign_in(filled, filled.admin_key())
    page = admin.get(path)
    assert page.status_code == status, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert says in page.text.replace("&#39;", "'")
    assert "Traceback" not in page.text and 'class="problem"' in page.text.replace(
        'class="card narrow problem"', 'class="problem"')


def test_signed_out_visitors_are_sent_to_sign_in(filled: Filled) -> None:
    for path in ("/ui", "/ui/spend", "/ui/usage.csv", "/ui/budgets", "/ui/requests/x",
                 "/ui/health"):
        page = httpx.get(filled.base_url + path, follow_redirects=True)
        assert page.url.path == "/ui/login" and page.status_code == 200
        assert 'type="password"' in page.text
    client = httpx.Client(base_url=filled.base_url, timeout=60)
    huge = client.post("/ui/login", content=f"csrftoken={login_token(client)}&key=".encode()
                       + b"k" * 10_000,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413 and COOKIE not in huge.headers.get("set-cookie", "")
    empty = client.post("/ui/login", data={"csrftoken": login_token(client), "key": ""})
    assert empty.status_code == 400 and "Paste an API key" in empty.text
