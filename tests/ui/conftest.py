"""A ledger filled by real gateway calls over the simulators (30 days of them: the gateway's
clock is moved back per day), then a real uvicorn server with `/ui` on it, and keys.

Once per module and backend: filling takes seconds and the views only read."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from llmgw.budgets.rules import ANY, Rule
from llmgw.config.loading import config_from_dict
from llmgw.errors import BudgetExceeded
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.timespec import utcnow
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from llmgw.sim import FaultPlan
from tests.fixtures.databases import BACKENDS, drop_database_url, fresh_database_url
from tests.integration.conftest import anthropic_sim, openai_sim  # noqa: F401
from tests.server.conftest import port_of, start_server, stop_server
from tests.support import sim_config_dict

DAYS_BACK = (0, 1, 2, 4, 7, 12, 20, 29, 45)  # 45: outside the 30-day view
USD = 1_000_000


@dataclass
class Filled:
    base_url: str
    ledger_url: str
    engine: Any
    keys: ApiKeyStore
    fallback_id: str = ""  # proj-a: primary failed, backup answered
    cached_id: str = ""  # proj-a: answered from the cache
    refused_id: str = ""  # proj-a: blocked-bot's $0 budget
    b_request_id: str = ""  # one of proj-b's
    secrets: list[str] = field(default_factory=list)  # every key issued, for leak checks

    def key(self, project: str = "proj-a", **kw: Any) -> str:
        secret = self.keys.create(project_id=project, **kw).secret
        self.secrets.append(secret)
        return secret

    def admin_key(self) -> str:
        secret = self.keys.create(project_id=None, admin=True).secret
        self.secrets.append(secret)
        return secret

    def sql(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).all()

    def scalar(self, query: str, **params: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(query), params).scalar_one() or 0)


def ui_config(openai_url: str, anthropic_url: str, ledger_url: str) -> Any:
    data = sim_config_dict(openai_url, anthropic_url, ledger_url)
    data["llmgw"]["cache"] = {"backend": "memory"}
    return config_from_dict(data)


def _usage(back: int, i: int) -> FaultPlan:
    """What the simulators answer that day: token counts that vary, so the chart does; cache
    reads and reasoning (OpenAI and Anthropic), cache writes of both TTLs (Anthropic)."""
    return FaultPlan(prompt_tokens=600 + 250 * (back % 5), completion_tokens=400 + 300 * i,
                     cached_tokens=100 * (back % 4), reasoning_tokens=50 * i,
                     cache_write_5m_tokens=40 * (back % 3), cache_write_1h_tokens=20 * i)


async def _fill(config: Any, sims: tuple[Any, Any], filled: Filled) -> None:
    from llmgw.gateway import LLMGateway

    openai, anthropic = sims
    moment = {"now": utcnow()}
    gw = LLMGateway(config, clock=lambda: moment["now"])
    try:
        for back in DAYS_BACK:
            moment["now"] = utcnow() - timedelta(days=back)
            for i in range(1 + back % 3):
                for sim in sims:
                    sim.set_plan(_usage(back, i))
                await gw.complete("dev-1", "proj-a", _ask(f"design {back}-{i}"),
                                  agent_type="software-architect", max_tokens=2048)
                await gw.complete("qa-1", "proj-a", _ask(f"edge cases {back}-{i}"),
                                  agent_type="qa-engineer", max_tokens=2048)
                done = await gw.complete("pm-1", "proj-b", _ask(f"risks {back}-{i}"),
                                         max_tokens=2048)
                filled.b_request_id = done.request_id
        moment["now"] = utcnow()
        for sim in sims:
            sim.set_plan(FaultPlan())
        await gw.complete("dev-1", "proj-a", _ask("the same question"),
                          agent_type="software-architect", max_tokens=2048)
        hit = await gw.complete("dev-1", "proj-a", _ask("the same question"),
                                agent_type="software-architect", max_tokens=2048)
        assert hit.cached
        filled.cached_id = hit.request_id
        anthropic.set_plan(FaultPlan.error(500, times=1))
        openai.set_plan(FaultPlan(prompt_tokens=900, cached_tokens=512, completion_tokens=80,
                                  reasoning_tokens=30))
        fell = await gw.complete("dev-1", "proj-a", _ask("fall back please"),
                                 agent_type="software-architect", max_tokens=2048)
        anthropic.set_plan(FaultPlan())
        openai.set_plan(FaultPlan())
        assert fell.model_group == "backup"
        filled.fallback_id = fell.request_id
        # proj-b has an agent of the same name as one of proj-a's: one counter for both
        await gw.complete("qa-1", "proj-b", _ask("same name, other project"), max_tokens=2048)
        with pytest.raises(BudgetExceeded):
            await gw.complete("blocked-bot", "proj-a", _ask("anything"), max_tokens=2048)
        (filled.refused_id,) = filled.sql(
            "SELECT request_id FROM usage_events WHERE status = 'refused'")[0]
    finally:
        await gw.aclose()


def _ask(text_: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text_}]


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           openai_sim: Any, anthropic_sim: Any) -> Iterator[Filled]:  # noqa: F811
    for sim in (openai_sim, anthropic_sim):
        sim.set_plan(FaultPlan())
        sim.reset()
    url = fresh_database_url(request.param, tmp_path_factory.mktemp("ui-ledger"))
    upgrade(url)
    engine = make_engine(url)
    store = BudgetStore(engine)
    now = utcnow()
    for rule in (Rule("project", "proj-a", "month", 50 * USD, 0.8),
                 Rule("project", "proj-b", "day", 5 * USD, 0.5),
                 Rule("agent", "blocked-bot", "day", 0, 0.8),
                 Rule("agent", "qa-1", "day", 20 * USD, 0.8),
                 Rule("agent", "dev-1", "month", 30 * USD, 0.8),
                 Rule("agent_type", "qa-engineer", "day", 20 * USD, 0.8),
                 Rule("global", ANY, "month", 1000 * USD, 0.9)):
        store.set_rule(rule, now)
    config = ui_config(openai_sim.base_url, anthropic_sim.base_url, url)
    result = Filled("", url, engine, ApiKeyStore(engine))
    asyncio.run(_fill(config, (openai_sim, anthropic_sim), result))
    server = start_server(create_app(config, ServerSettings(key_cache_s=0)))
    result.base_url = f"http://127.0.0.1:{port_of(server)}"
    try:
        _through_the_server(result, anthropic_sim)
        yield result
    finally:
        stop_server(server)
        engine.dispose()
        drop_database_url(url)
        for sim in (openai_sim, anthropic_sim):
            sim.set_plan(FaultPlan())
            sim.reset()


def _through_the_server(filled: Filled, anthropic: Any) -> None:
    """A few calls through the HTTP front, so its own gateway has stats for the health view:
    three on backup, and one on primary whose first attempt fails (it falls back)."""
    headers = {"Authorization": f"Bearer {filled.key('proj-a', agent_id='web-1')}"}
    with httpx.Client(base_url=filled.base_url, headers=headers, timeout=60) as client:
        for i in range(3):
            answer = client.post("/v1/chat/completions", json={
                "model": "backup", "messages": _ask(f"over http {i}"), "max_tokens": 256})
            assert answer.status_code == 200, answer.text
        anthropic.set_plan(FaultPlan.error(500, times=1))
        answer = client.post("/v1/chat/completions", json={
            "model": "primary", "messages": _ask("over http, falling back"), "max_tokens": 256})
        anthropic.set_plan(FaultPlan())
        assert answer.status_code == 200 and answer.headers["x-llmgw-model-group"] == "backup"


def page_token(html: str) -> str:
    """The CSRF token in a page's forms (the hidden `csrftoken` field)."""
    found = re.findall(r'name="csrftoken" value="([^"]*)"', html)
    assert found and len(set(found)) == 1, html[:500]
    return found[0]


def login_token(client: httpx.Client) -> str:
    """Open the sign-in page as a browser would: its form's token (the cookie is now set)."""
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    return page_token(page.text)


def sign_in(filled: Filled, key: str) -> httpx.Client:
    """An httpx client holding a dashboard session (the browser tests sign in by the form)."""
    client = httpx.Client(base_url=filled.base_url, timeout=60)
    response = client.post("/ui/login", data={"csrftoken": login_token(client), "key": key})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/spend"
    return client


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test's screenshots go (its tmp dir)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
