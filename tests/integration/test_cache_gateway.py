"""The answer cache through LLMGateway, on memory and on a real Redis."""

from __future__ import annotations

import logging

import pytest

from llmgw.config.loading import config_from_dict
from llmgw.ledger.engine import make_engine
from llmgw.ledger.report import usage_report
from llmgw.sim import FaultPlan
from llmgw.types import ContentDelta, StreamDone
from tests.support import ledger_rows, sim_config_dict

ASK = [{"role": "user", "content": "Summarise the sprint."}]


@pytest.fixture(params=["memory", "redis"])
def cache_settings(request):
    if request.param == "memory":
        return {"backend": "memory"}
    url = request.getfixturevalue("redis_url")
    from redis import Redis

    Redis.from_url(url).flushdb()
    return {"backend": "redis", "url": url}


def make(sims, url, cache, **llmgw):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, url)
    data["llmgw"]["cache"] = cache
    data["llmgw"].update(llmgw)
    return LLMGateway(config_from_dict(data))


async def test_hit_costs_nothing_and_the_report_shows_the_saving(sims, tmp_path, cache_settings):
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(answer="Done: 3 stories.", prompt_tokens=100,
                                  completion_tokens=50))
    gw = make(sims, url, cache_settings)
    try:
        first = await gw.complete("pm-1", "shop", ASK, model_group="backup")
        again = await gw.complete("pm-1", "shop", ASK, model_group="backup")
        streamed = [e async for e in gw.stream("pm-1", "shop", ASK, model_group="backup")]
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == 1  # only the first call reached the provider
    assert (again.cached, again.content, again.cost_micros) == (True, first.content, 0)
    assert again.saved_micros == first.cost_micros > 0
    assert "".join(e.text for e in streamed if isinstance(e, ContentDelta)) == first.content
    assert isinstance(streamed[-1], StreamDone) and streamed[-1].completion.cached
    rows = ledger_rows(url)
    assert [(r["status"], r["cost_micros"], r["saved_micros"], r["stream"]) for r in rows] == [
        ("ok", first.cost_micros, 0, False), ("cached", 0, first.cost_micros, False),
        ("cached", 0, first.cost_micros, True)]
    assert rows[1]["metadata"]["llmgw"]["cache"]["first_request_id"] == first.request_id
    engine = make_engine(url)
    try:
        [line] = usage_report(engine, by="project")
    finally:
        engine.dispose()
    assert (line.requests, line.cached, line.cost_micros, line.saved_micros) == (
        3, 2, first.cost_micros, 2 * first.cost_micros)


async def test_never_across_projects_and_any_changed_parameter_misses(sims, tmp_path,
                                                                      cache_settings):
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    openai_sim, _ = sims
    gw = make(sims, url, cache_settings)
    calls = [dict(project_id="a"), dict(project_id="b"), dict(project_id="a", max_tokens=10),
             dict(project_id="a", temperature=0), dict(project_id="a", seed=7),
             dict(project_id="a", stop=["\n"]), dict(project_id="a", top_p=0.5),
             dict(project_id="a", response_format={"type": "json_object"}),
             dict(project_id="a", model_group="solo"),
             dict(project_id="a", messages=[{"role": "user", "content": "Summarise it."}])]
    try:
        for kw in calls:
            kw = {"model_group": "backup", "messages": ASK, **kw}
            done = await gw.complete("pm-1", kw.pop("project_id"), kw.pop("messages"), **kw)
            assert not done.cached, kw
        # the same call again, per project: hits
        assert (await gw.complete("pm-1", "a", ASK, model_group="backup")).cached
        assert (await gw.complete("pm-1", "b", ASK, model_group="backup")).cached
        # opted out, or asking for variety: not served from the cache
        assert not (await gw.complete("pm-1", "a", ASK, model_group="backup", cache=False)).cached
        assert not (await gw.complete("pm-1", "a", ASK, model_group="backup",
                                      temperature=0.9)).cached
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == len(calls) + 2


async def test_fallback_answer_is_kept_under_the_group_that_served_it(sims, tmp_path):
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    openai_sim, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan.error(500))
    gw = make(sims, url, {"backend": "memory"})
    try:
        first = await gw.complete("a", "p", ASK, model_group="primary")
        assert first.model_group == "backup"
        anthropic_sim.set_plan(FaultPlan())
        # primary is back: its own answer, not the fallback's cached one
        assert not (await gw.complete("a", "p", ASK, model_group="primary")).cached
        # asked of the serving group directly: the fallback's answer is a hit
        hit = await gw.complete("a", "p", ASK, model_group="backup")
    finally:
        await gw.aclose()
    assert hit.cached and hit.content == first.content and hit.model_group == "backup"


async def test_memory_ttl_expires_with_the_clock(sims, tmp_path):
    from llmgw.cache.backends import MemoryCache
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    clock = [1000.0]
    gw = make(sims, url, {"backend": "memory", "ttl_s": 60})
    gw.cache = MemoryCache(clock=lambda: clock[0])
    try:
        await gw.complete("a", "p", ASK, model_group="backup")
        clock[0] += 59
        assert (await gw.complete("a", "p", ASK, model_group="backup")).cached
        clock[0] += 2
        assert not (await gw.complete("a", "p", ASK, model_group="backup")).cached
    finally:
        await gw.aclose()


async def test_redis_down_requests_still_succeed_uncached(sims, tmp_path, caplog):
    import socket

    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    openai_sim, _ = sims
    gw = make(sims, url, {"backend": "redis", "url": dead})
    try:
        with caplog.at_level(logging.WARNING, logger="llmgw.cache"):
            for _ in range(3):
                done = await gw.complete("a", "p", ASK, model_group="backup")
                assert done.content and not done.cached
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == 3
    warnings = [r for r in caplog.records if r.name == "llmgw.cache"]
    assert len(warnings) == 1 and "uncached" in warnings[0].getMessage()
    assert [r["status"] for r in ledger_rows(url)] == ["ok", "ok", "ok"]


async def test_semantic_paraphrase_hits_and_a_near_miss_does_not(sims, tmp_path):
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    openai_sim, _ = sims
    gw = make(sims, url, {"backend": "memory", "semantic": {"enabled": True, "threshold": 0.92}})
    ask = lambda text: gw.complete("support-1", "help", [{"role": "user", "content": text}],  # noqa: E731
                                   model_group="backup")
    try:
        first = await ask("How do I reset my password?")
        paraphrase = await ask("What are the steps to reset my password?")
        near_miss = await ask("How do I delete my account?")
        with_tools = await gw.complete("support-1", "help", [{"role": "user", "content":
                                       "What are the steps to reset my password?"}],
                                       model_group="backup", tools=[{"type": "function",
                                       "function": {"name": "lookup", "parameters": {}}}])
    finally:
        await gw.aclose()
    assert paraphrase.cached and paraphrase.content == first.content
    assert not near_miss.cached and not with_tools.cached
    assert len(openai_sim.requests) == 3
    row = ledger_rows(url)[1]
    assert row["status"] == "cached" and row["metadata"]["llmgw"]["cache"]["similarity"] >= 0.92


# -- isolation between projects whose ids prefix each other --------------------------

# Each id is a prefix of another, or a Redis glob pattern that would match the others.
PREFIXED = ["a", "a:b", "a*", "a?", "a[b]", "a\\b"]


def _ledger(tmp_path) -> str:
    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return url


async def _stream(gw, project: str, messages) -> tuple[str, object]:
    events = [e async for e in gw.stream("pm-1", project, messages, model_group="backup")]
    assert isinstance(events[-1], StreamDone), events[-1]
    return "".join(e.text for e in events if isinstance(e, ContentDelta)), events[-1].completion


def _first_request_ids(url: str) -> dict[str, set[str]]:
    """Per project, the requests its cached rows say paid for their answers."""
    out: dict[str, set[str]] = {}
    for row in ledger_rows(url):
        if row["status"] == "cached":
            out.setdefault(row["project_id"], set()).add(
                row["metadata"]["llmgw"]["cache"]["first_request_id"])
    return out


async def test_streamed_answers_never_cross_projects(sims, tmp_path, cache_settings):
    url = _ledger(tmp_path)
    openai_sim, _ = sims
    gw = make(sims, url, cache_settings)
    first = {}
    try:
        for project in PREFIXED:  # each project's first stream reaches the provider
            openai_sim.set_plan(FaultPlan(answer=f"Answer for {project}."))
            text, done = await _stream(gw, project, ASK)
            assert (done.cached, text) == (False, f"Answer for {project}."), project
            first[project] = done.request_id
        openai_sim.set_plan(FaultPlan(answer="Nobody's answer."))
        for project in reversed(PREFIXED):  # then each is served its own, streamed or not
            text, done = await _stream(gw, project, ASK)
            assert (done.cached, text) == (True, f"Answer for {project}."), project
            again = await gw.complete("pm-1", project, ASK, model_group="backup")
            assert (again.cached, again.content) == (True, f"Answer for {project}."), project
        text, done = await _stream(gw, "b", ASK)  # a project never seen: no one's answer
        assert (done.cached, text) == (False, "Nobody's answer.")
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == len(PREFIXED) + 1
    assert _first_request_ids(url) == {p: {first[p]} for p in PREFIXED}


async def test_semantic_hits_never_cross_projects(sims, tmp_path, cache_settings):
    url = _ledger(tmp_path)
    openai_sim, _ = sims
    gw = make(sims, url, {**cache_settings, "semantic": {"enabled": True, "threshold": 0.92}})
    asked = [{"role": "user", "content": "How do I reset my password?"}]
    paraphrase = [{"role": "user", "content": "What are the steps to reset my password?"}]
    projects = ["a", "a:b", "a*"]
    first = {}
    try:
        for project in projects:
            openai_sim.set_plan(FaultPlan(answer=f"Reset steps for {project}."))
            done = await gw.complete("support-1", project, asked, model_group="backup")
            assert not done.cached, project
            first[project] = done.request_id
        openai_sim.set_plan(FaultPlan(answer="Nobody's answer."))
        for project in reversed(projects):  # a paraphrase: the project's own answer only
            hit = await gw.complete("support-1", project, paraphrase, model_group="backup")
            assert (hit.cached, hit.content) == (True, f"Reset steps for {project}."), project
            text, done = await _stream(gw, project, paraphrase)
            assert (done.cached, text) == (True, f"Reset steps for {project}."), project
        # Projects that never asked: no similar answer of another project is theirs.
        assert not (await gw.complete("support-1", "b", paraphrase, model_group="backup")).cached
        text, done = await _stream(gw, "a:c", paraphrase)
        assert (done.cached, text) == (False, "Nobody's answer.")
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == len(projects) + 2
    assert _first_request_ids(url) == {p: {first[p]} for p in projects}
    similar = [r for r in ledger_rows(url) if r["status"] == "cached"]
    assert len(similar) == 2 * len(projects)
    assert all(r["metadata"]["llmgw"]["cache"]["similarity"] >= 0.92 for r in similar)


async def test_clear_and_stats_of_one_project_leave_the_ids_it_prefixes(sims, tmp_path,
                                                                          cache_settings):
    from llmgw.cache import scope_of

    url = _ledger(tmp_path)
    openai_sim, _ = sims
    gw = make(sims, url, cache_settings)
    scope = {p: scope_of("project", project_id=p, agent_type=None) for p in PREFIXED}
    other = [{"role": "user", "content": "And the one before?"}]
    try:
        for project in PREFIXED:
            openai_sim.set_plan(FaultPlan(answer=f"Answer for {project}."))
            await gw.complete("pm-1", project, ASK, model_group="backup")
        await gw.complete("pm-1", "a", other, model_group="backup")  # `a` has two entries
        assert await gw.cache.clear(scope["a"]) == 2
        assert {p: (await gw.cache.stats(scope[p])).entries for p in PREFIXED} == {
            p: 0 if p == "a" else 1 for p in PREFIXED}
        openai_sim.set_plan(FaultPlan(answer="A new answer."))
        for project in PREFIXED[1:]:
            again = await gw.complete("pm-1", project, ASK, model_group="backup")
            assert (again.cached, again.content) == (True, f"Answer for {project}."), project
        again = await gw.complete("pm-1", "a", ASK, model_group="backup")
        assert (again.cached, again.content) == (False, "A new answer.")
    finally:
        await gw.aclose()
    assert len(openai_sim.requests) == len(PREFIXED) + 2
