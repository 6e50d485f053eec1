"""GET /v1/models in OpenAI's and Anthropic's shapes (groups and aliases), `/` for probes,
and /v1/usage by session against plain SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import insert, text

from llmgw.config.loading import config_from_dict
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.models import UsageEvent
from llmgw.ledger.timespec import utcnow
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from tests.server.conftest import Running, port_of, start_server, stop_server
from tests.support import ledger_rows, sim_config_dict

pytestmark = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

ALIASES = {"claude-*haiku*": "backup", "claude-sonnet-4-5": "primary", "claude-*": "primary",
           "gpt-*": "backup"}
GROUPS = ["authg", "autho", "backup", "primary", "solo"]


@pytest.fixture
def served(sims, migrated_ledger_url: str) -> Iterator[Running]:
    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url)
    data["llmgw"]["model_aliases"] = ALIASES
    server = start_server(create_app(config_from_dict(data), ServerSettings(key_cache_s=0)))
    engine = make_engine(migrated_ledger_url)
    try:
        yield Running(f"http://127.0.0.1:{port_of(server)}", migrated_ledger_url,
                      ApiKeyStore(engine), server)
    finally:
        stop_server(server)
        engine.dispose()


def test_openai_list_has_auto_groups_and_every_alias_with_its_group(served):
    oa = openai.OpenAI(base_url=served.base_url + "/v1", api_key=served.key(), max_retries=0)
    listed = [(m.id, m.model_group) for m in oa.models.list()]  # type: ignore[attr-defined]
    assert listed == [("auto", None), *((g, g) for g in GROUPS), *ALIASES.items()]


def test_anthropic_list_shape_for_claude_code_and_the_sdk(served):
    key = served.key()
    response = httpx.get(served.base_url + "/v1/models",
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    body = response.json()
    ids = ["auto", *GROUPS, "claude-sonnet-4-5"]  # patterns are no model one can pick
    assert [m["id"] for m in body["data"]] == ids
    assert all(m["type"] == "model" and m["created_at"] for m in body["data"])
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, "auto",
                                                                    "claude-sonnet-4-5")
    assert body["data"][-1]["display_name"] == "claude-sonnet-4-5 -> primary"
    # The SDK pages with limit / after_id and gets every model once.
    client = anthropic.Anthropic(base_url=served.base_url, api_key=key, max_retries=0)
    assert [m.id for m in client.models.list(limit=2)] == ids
    page = client.models.list(limit=3)
    assert page.has_more and [m.id for m in page.data] == ids[:3]
    back = httpx.get(served.base_url + "/v1/models", params={"before_id": "solo", "limit": 2},
                     headers={"x-api-key": key, "anthropic-version": "2023-06-01"}).json()
    assert [m["id"] for m in back["data"]] == ["backup", "primary"] and back["has_more"]


def test_aliases_route_requests_and_unknown_names_say_how_to_add_one(served):
    oa = openai.OpenAI(base_url=served.base_url + "/v1", api_key=served.key(), max_retries=0)
    done = oa.chat.completions.create(model="gpt-5-codex",
                                      messages=[{"role": "user", "content": "hi"}])
    assert done.model == "backup"
    with pytest.raises(openai.NotFoundError) as info:
        oa.chat.completions.create(model="gemini-2.5-pro",
                                   messages=[{"role": "user", "content": "hi"}])
    assert "llmgw.model_aliases" in info.value.message
    assert "authg, autho, backup, primary, solo" in info.value.message


def test_root_answers_probes_without_a_key_and_records_nothing(served):
    head = httpx.head(served.base_url + "/")
    assert head.status_code == 200 and head.content == b""
    got = httpx.get(served.base_url + "/")
    assert got.status_code == 200 and got.json()["status"] == "ok"
    assert ledger_rows(served.ledger_url) == []


KINDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")


def _event(request_id: str, attempt: int, session: str | None, cost: int, project: str = "proj-a",
           status: str = "ok") -> dict[str, object]:
    return dict(request_id=request_id, attempt=attempt, ts=utcnow() - timedelta(minutes=30),
                agent_id="dev-1", project_id=project, model_group="primary", status=status,
                prompt_tokens=10, completion_tokens=5, cost_micros=cost, saved_micros=0,
                stream=False, session_id=session,
                # every token kind, different per row so a wrong sum shows
                cache_read_tokens=cost % 7 + 1, cache_write_tokens=cost % 5 + 2,
                cache_write_1h_tokens=cost % 3, reasoning_tokens=cost % 4 + 1)


def test_usage_by_session_and_for_one_session_equal_plain_sql(served):
    engine = make_engine(served.ledger_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(UsageEvent.__table__), [
                _event("a1", 1, "run-1", 0, status="error"), _event("a1", 2, "run-1", 700),
                _event("a2", 1, "run-1", 300), _event("b1", 1, "run-2", 50),
                _event("c1", 1, None, 9), _event("z1", 1, "run-1", 10**6, project="proj-b")])
        with engine.connect() as conn:
            want = {r[0] or "-": (int(r[1]), int(r[2])) for r in conn.execute(text(
                "SELECT session_id, COUNT(DISTINCT request_id), SUM(cost_micros) "
                "FROM usage_events WHERE project_id = 'proj-a' GROUP BY session_id"))}
            kinds = {r[0] or "-": tuple(int(v) for v in r[1:]) for r in conn.execute(text(
                f"SELECT session_id, {', '.join(f'SUM({k})' for k in KINDS)} "
                "FROM usage_events WHERE project_id = 'proj-a' GROUP BY session_id"))}
    finally:
        engine.dispose()
    key = {"authorization": f"Bearer {served.key()}"}
    report = httpx.get(served.base_url + "/v1/usage", params={"by": "session"},
                       headers=key).json()
    assert {r["key"]: (r["requests"], r["cost_micros"]) for r in report["rows"]} == want
    assert {r["key"]: tuple(r[k] for k in KINDS) for r in report["rows"]} == kinds
    assert tuple(report["total"][k] for k in KINDS) == tuple(
        sum(v[i] for v in kinds.values()) for i in range(4))
    assert report["total"]["cost_micros"] == sum(v[1] for v in want.values()) == 1_059
    one = httpx.get(served.base_url + "/v1/usage", params={"by": "agent", "session": "run-1"},
                    headers=key).json()
    assert one["session"] == "run-1"
    assert [(r["key"], r["requests"], r["attempts"], r["errors"], r["cost_micros"])
            for r in one["rows"]] == [("dev-1", 2, 3, 1, 1_000)]  # proj-b's row is not ours
    assert one["total"]["cost_micros"] == 1_000
