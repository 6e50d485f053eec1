"""CSRF on /ui: every form that POSTs carries asgi-csrf's signed double-submit token. A post
from anywhere else (no token, a forged one, another cookie's, another origin's page in a real
Chromium) is a 403 that changes nothing; the API (/v1/*, /mcp) never goes through the check."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from itsdangerous.url_safe import URLSafeSerializer

from llmgw.server.ui.csrf import CSRF_COOKIE
from llmgw.server.ui.sessions import COOKIE
from tests.ui.browser import Browser
from tests.ui.conftest import Filled, login_token, page_token, sign_in

EVIL = "http://evil.example"


def _client(filled: Filled) -> httpx.Client:
    return httpx.Client(base_url=filled.base_url, timeout=60)


def _session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]


def _refused(response: httpx.Response, *, ours: bool = True) -> None:
    assert response.status_code == 403, response.text
    assert not _session_cookies(response)
    if ours:  # our page, not a bare library message
        assert "Form refused" in response.text and 'class="card narrow problem"' in response.text


def _keys_touched(filled: Filled) -> int:
    return filled.scalar("SELECT COUNT(*) FROM api_keys WHERE last_used_at IS NOT NULL")


# -- sign-in -------------------------------------------------------------------------------


def test_cross_site_sign_in_is_refused_and_changes_nothing(filled: Filled) -> None:
    key = filled.key("proj-a", agent_id=None)
    touched = _keys_touched(filled)
    bare = _client(filled)  # a visitor who never opened the sign-in page: no cookie at all
    _refused(bare.post("/ui/login", data={"key": key}, headers={"Origin": EVIL}), ours=False)
    _refused(bare.post("/ui/login", data={"key": key}))
    _refused(bare.post("/ui/login", data={"key": key, "csrftoken": "guessed"}))
    _refused(bare.post("/ui/login", content=f"key={key}".encode(),  # <form enctype=text/plain>
                       headers={"content-type": "text/plain"}))
    _refused(bare.post("/ui/login", data={"key": key}, files={"f": ("a.txt", b"x")}))
    _refused(bare.post("/ui/login", content=b"csrftoken=\xff&key=" + key.encode(),
                       headers={"content-type": "application/x-www-form-urlencoded"}))
    # the cookie and the field agree, but the cookie is not signed by this server
    forged = URLSafeSerializer("someone else's secret").dumps("abc", "csrftoken")
    for value in ("plain-value", forged):
        _refused(bare.post("/ui/login", data={"key": key, "csrftoken": value},
                           cookies={CSRF_COOKIE: value}))
    # a page's token works with its own cookie only
    mine, theirs = _client(filled), _client(filled)
    their_token = login_token(theirs)
    login_token(mine)
    assert their_token != mine.cookies[CSRF_COOKIE]
    _refused(mine.post("/ui/login", data={"key": key, "csrftoken": their_token}))
    assert _keys_touched(filled) == touched, "a refused sign-in looked the key up"
    # the same key, sent from the sign-in page with its token, is a valid one
    signed = mine.post("/ui/login", data={"key": key, "csrftoken": login_token(mine)})
    assert signed.status_code == 303 and _session_cookies(signed)
    assert _keys_touched(filled) == touched + 1


# -- sign-out ------------------------------------------------------------------------------


def test_cross_site_sign_out_is_refused_and_the_session_lives(filled: Filled) -> None:
    client = sign_in(filled, filled.key("proj-a", agent_id=None))
    page = client.get("/ui/spend")
    assert page.status_code == 200
    token = page_token(page.text)
    assert token == client.cookies[CSRF_COOKIE]  # double submit: the field equals the cookie
    other = login_token(_client(filled))
    for attempt in ({}, {"csrftoken": ""}, {"csrftoken": "forged"}, {"csrftoken": other},
                    {"csrftoken": token + "x"}):
        _refused(client.post("/ui/logout", data=attempt))
    _refused(client.post("/ui/logout", data={}, headers={"Origin": EVIL}), ours=False)
    assert client.get("/ui/budgets").status_code == 200, "a refused sign-out ended the session"
    out = client.post("/ui/logout", data={"csrftoken": token})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert client.get("/ui/spend").status_code == 303


def test_token_is_signed_strict_and_renewed_at_sign_in_and_sign_out(filled: Filled) -> None:
    client = _client(filled)
    first = client.get("/ui/login")
    (cookie,) = [c for c in first.headers.get_list("set-cookie") if c.startswith(CSRF_COOKIE)]
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "samesite=strict" in flags and "path=/ui" in flags
    before = page_token(first.text)
    assert client.cookies[CSRF_COOKIE] == before and "." in before  # value.signature
    signed = client.post("/ui/login", data={"key": filled.key("proj-a"), "csrftoken": before})
    assert signed.status_code == 303 and CSRF_COOKIE not in client.cookies
    during = page_token(client.get("/ui/spend").text)
    assert during != before and client.cookies[CSRF_COOKIE] == during
    assert not client.get("/ui/usage").headers.get_list("set-cookie")  # kept, not re-issued
    _refused(client.post("/ui/logout", data={"csrftoken": before}))  # not this session's
    assert client.post("/ui/logout", data={"csrftoken": during}).status_code == 303
    assert CSRF_COOKIE not in client.cookies and COOKIE not in client.cookies
    assert login_token(client) not in (before, during)


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture
def elsewhere() -> Iterator[dict[str, Any]]:
    """Another origin on this machine (127.0.0.1, another port): the Host/Origin check lets
    loopback origins of any port through, and it is the same site, so the SameSite=Strict
    session cookie goes along: only the token stops a forged form."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"pages": pages, "url": f"http://127.0.0.1:{server.server_address[1]}"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _form(action: str, fields: dict[str, str]) -> str:
    inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in fields.items())
    return f'<!doctype html><form method="post" action="{action}">{inputs}</form>'


def test_browser_refuses_forms_posted_from_another_origin(filled: Filled, tmp_path: Any,
                                                           elsewhere: dict[str, Any]) -> None:
    base, attacker_key = filled.base_url, filled.key("proj-b", agent_id=None)
    elsewhere["pages"]["/out"] = _form(base + "/ui/logout", {"csrftoken": "forged"})
    elsewhere["pages"]["/in"] = _form(base + "/ui/login", {"key": attacker_key})

    def ui_cookies(b: Browser) -> dict[str, str]:
        found = b.send("Network.getCookies", urls=[base + "/ui/spend"])["cookies"]
        return {c["name"]: c["value"] for c in found}

    with Browser(tmp_path / "victim") as b:
        b.goto(base + "/ui/login")
        landed = b.submit("form[action='/ui/login']", {"key": filled.key("proj-a")})
        assert landed.endswith("/ui/spend"), b.html()[-1500:]
        session = ui_cookies(b)[COOKIE]
        b.goto(elsewhere["url"] + "/out")
        assert b.submit("form", {}) == base + "/ui/logout"
        assert "Form refused" in b.html()
        assert ui_cookies(b)[COOKIE] == session
        assert b.goto(base + "/ui/spend").endswith("/ui/spend")  # still signed in
        assert 'id="scope">project proj-a' in b.html()
        # the form from the dashboard's own page signs out
        assert b.submit("form[action='/ui/logout']", {}).endswith("/ui/login")
        assert COOKIE not in ui_cookies(b)
        # a login CSRF: the attacker's own key, posted from their page, signs nobody in
        b.goto(elsewhere["url"] + "/in")
        assert b.submit("form", {}) == base + "/ui/login"
        assert "Form refused" in b.html() and COOKIE not in ui_cookies(b)


# -- the API -------------------------------------------------------------------------------


def test_api_routes_do_not_go_through_the_check(filled: Filled) -> None:
    client = sign_in(filled, filled.key("proj-a", agent_id=None))
    client.get("/ui/spend")
    assert {COOKIE, CSRF_COOKIE} <= set(client.cookies.keys())
    agent = {"Authorization": f"Bearer {filled.key('proj-a', agent_id='api-1')}"}
    # the dashboard's cookies are path /ui: send them by hand, as a confused browser might
    cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    with httpx.Client(base_url=filled.base_url, timeout=60) as api:
        answer = api.post("/v1/chat/completions", headers={**agent, "cookie": cookies},
                          json={"model": "backup", "max_tokens": 64,
                                "messages": [{"role": "user", "content": "no token needed"}]})
        assert answer.status_code == 200, answer.text
        assert "set-cookie" not in answer.headers and "vary" not in answer.headers
        mcp = api.post("/mcp", headers={**agent, "cookie": cookies,
                                        "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                           "protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "csrf-test", "version": "1"}}})
        assert mcp.status_code == 200, mcp.text
        assert "set-cookie" not in mcp.headers
