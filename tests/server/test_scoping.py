"""Identity is the key, never the body: what each kind of key may and may not do."""

from __future__ import annotations

from datetime import timedelta

import httpx
import openai
import pytest

from llmgw.ledger.engine import make_engine
from llmgw.ledger.report import usage_report
from llmgw.ledger.timespec import utcnow
from tests.support import ledger_rows

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

HI = [{"role": "user", "content": "Say hi"}]


def client(running, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers or None)


def test_agent_key_cannot_name_another_agent_or_project(running):
    key = running.key(project="proj-a", agent="dev-1")
    for headers, kwargs, code in (
            ({"X-LLMGW-Agent": "dev-2"}, {}, "agent_not_allowed"),
            ({"X-LLMGW-Project": "proj-b"}, {}, "project_not_allowed")):
        with pytest.raises(openai.PermissionDeniedError) as info:
            client(running, key, **headers).chat.completions.create(model="backup",
                                                                    messages=HI, **kwargs)
        assert info.value.code == code
    assert ledger_rows(running.ledger_url) == []
    # naming itself is fine; the body's `user` is the end user, never another agent
    client(running, key, **{"X-LLMGW-Agent": "dev-1"}).chat.completions.create(
        model="backup", messages=HI, user="dev-1")
    client(running, key).chat.completions.create(model="backup", messages=HI, user="dev-2")
    rows = ledger_rows(running.ledger_url)
    assert [(r["project_id"], r["agent_id"]) for r in rows] == [("proj-a", "dev-1")] * 2


def test_any_agent_key_needs_an_agent_from_user_or_header(running):
    key = running.key(project="proj-a", agent=None)
    with pytest.raises(openai.BadRequestError) as info:
        client(running, key).chat.completions.create(model="backup", messages=HI)
    assert info.value.code == "agent_required"
    assert ledger_rows(running.ledger_url) == []
    client(running, key).chat.completions.create(model="backup", messages=HI, user="bot-7")
    client(running, key, **{"X-LLMGW-Agent": "bot-8"}).chat.completions.create(
        model="backup", messages=HI)
    with pytest.raises(openai.PermissionDeniedError):  # the project is still the key's
        client(running, key, **{"X-LLMGW-Project": "proj-b"}).chat.completions.create(
            model="backup", messages=HI, user="bot-9")
    assert [(r["project_id"], r["agent_id"]) for r in ledger_rows(running.ledger_url)] == [
        ("proj-a", "bot-7"), ("proj-a", "bot-8")]


def test_revoked_and_expired_keys_get_401(running):
    issued = running.keys.create(project_id="proj-a", agent_id="dev-1")
    oa = client(running, issued.secret)
    oa.chat.completions.create(model="backup", messages=HI)
    running.keys.revoke(issued.info.id)
    with pytest.raises(openai.AuthenticationError):
        oa.chat.completions.create(model="backup", messages=HI)
    expired = running.keys.create(project_id="proj-a", agent_id="dev-1",
                                  now=utcnow() - timedelta(days=2), expires_in=timedelta(days=1))
    with pytest.raises(openai.AuthenticationError):
        client(running, expired.secret).chat.completions.create(model="backup", messages=HI)
    assert len(ledger_rows(running.ledger_url)) == 1


def test_anthropic_style_x_api_key_header_is_accepted(running):
    response = httpx.post(running.base_url + "/v1/chat/completions",
                          headers={"x-api-key": running.key()},
                          json={"model": "backup", "messages": HI})
    assert response.status_code == 200, response.text


def _usage(running, key: str, **params: str) -> httpx.Response:
    return httpx.get(running.base_url + "/v1/usage", params=params,
                     headers={"authorization": f"Bearer {key}"})


def test_usage_is_scoped_to_the_keys_project_and_admin_reads_all(running):
    a, b = running.key(project="proj-a", agent="dev-a"), running.key(project="proj-b",
                                                                     agent="dev-b")
    client(running, a).chat.completions.create(model="backup", messages=HI)
    client(running, b).chat.completions.create(model="backup", messages=HI)
    client(running, b).chat.completions.create(model="solo", messages=HI)
    mine = _usage(running, a, by="agent", since="7d")
    assert mine.status_code == 200, mine.text
    report = mine.json()
    assert report["project"] == "proj-a"
    assert [r["key"] for r in report["rows"]] == ["dev-a"]
    assert report["total"]["requests"] == 1
    assert _usage(running, a, project="proj-b").status_code == 403
    admin = running.admin_key()
    everything = _usage(running, admin, by="project").json()
    engine = make_engine(running.ledger_url)
    try:
        expected = usage_report(engine, by="project")
    finally:
        engine.dispose()
    # the same report functions as the CLI: the same figures to the micro-dollar
    assert [(r["key"], r["requests"], r["cost_micros"]) for r in everything["rows"]] == [
        (r.key, r.requests, r.cost_micros) for r in expected]
    assert {r["key"] for r in everything["rows"]} == {"proj-a", "proj-b"}
    only_b = _usage(running, admin, by="model-group", project="proj-b").json()
    assert {r["key"] for r in only_b["rows"]} == {"backup", "solo"}
    assert _usage(running, a, by="nonsense").status_code == 400
    assert _usage(running, a, since="yesterday-ish").status_code == 400


def test_admin_key_reads_usage_only(running):
    admin = running.admin_key()
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(running, admin).chat.completions.create(model="backup", messages=HI)
    assert info.value.code == "admin_key_reads_usage_only"
    with pytest.raises(openai.PermissionDeniedError):
        client(running, admin).models.list()
    estimate = httpx.post(running.base_url + "/v1/estimate",
                          headers={"authorization": f"Bearer {admin}"},
                          json={"model": "backup", "messages": HI})
    assert estimate.status_code == 403
    assert ledger_rows(running.ledger_url) == []
