"""The ruvector provider through a real `litellm.Router`, against the ruvLLM, Ollama and OpenAI simulators."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from llmgw._litellm import import_litellm
from llmgw.providers import register, ruvector
from llmgw.providers.ruvector import HIDDEN_KEY, RuVectorLLM, flatten_messages
from llmgw.sim.faults import FaultPlan
from llmgw.sim.ollama import OllamaSim
from llmgw.sim.openai import OpenAISim
from llmgw.sim.ruvllm import RuvLLMSim

litellm = import_litellm()
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

KEY = "sk-cloud-sim"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]
QUERY = "System: Be brief.\nUser: What is the capital of France?"
ANSWER = "Simulated answer to: " + QUERY[:60]
CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                  "_async_failure_callback", "input_callback", "service_callback")


# -- fixtures: simulators, one Router for the module ----------------------------------------

class Restartable:
    """A ruvLLM simulator that a test may stop and start again on the same port."""

    def __init__(self) -> None:
        self.sim = RuvLLMSim().start()
        self.port = self.sim.port

    def restart(self) -> RuvLLMSim:
        self.sim.stop()
        self.sim = RuvLLMSim(port=self.port).start()
        return self.sim


class SuccessEvents(CustomLogger):  # type: ignore[misc]
    """LiteLLM's success callbacks, by llmgw_request_id; they run after the call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def expect(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        return self.events.setdefault(request_id, asyncio.get_running_loop().create_future())

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        rid = ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get("llmgw_request_id")
        future = self.events.get(rid)
        if future is not None:  # thread-safe in case LiteLLM logs from another thread
            future.get_loop().call_soon_threadsafe(
                lambda: future.done() or future.set_result(kwargs))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def provider() -> Iterator[RuVectorLLM]:
    handler = register()
    yield handler
    handler.clock = ruvector.time.monotonic
    handler.reset()


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Any]]:
    with RuvLLMSim(model_used="B1_2", confidence=0.91, context_size=2048, latency_ms=7.25) as ruv, \
            OllamaSim() as ollama, OpenAISim(api_key=KEY) as cloud:
        flaky = Restartable()
        try:
            yield {"ruv": ruv, "ollama": ollama, "cloud": cloud, "flaky": flaky}
        finally:
            flaky.sim.stop()


def deployment(group: str, model: str, api_base: str, **params: Any) -> dict[str, Any]:
    return {"model_name": group, "litellm_params": {"model": model, "api_base": api_base, **params},
            "model_info": {"id": f"{group}-1", "input_cost_per_token": 0, "output_cost_per_token": 0}}


@pytest.fixture(scope="module")
def router(provider: RuVectorLLM, sims: dict[str, Any]) -> Iterator[Any]:
    ollama = {"ollama_api_base": sims["ollama"].base_url, "ollama_model": "llama3.2"}
    cloud = deployment("cloud", "openai/sim-gpt", sims["cloud"].base_url + "/v1", api_key=KEY)
    cloud["model_info"].update(input_cost_per_token=1e-6, output_cost_per_token=2e-6,
                               cache_read_input_token_cost=0, cache_creation_input_token_cost=0)
    before = {id(cb) for name in CALLBACK_LISTS for cb in getattr(litellm, name)}
    built = litellm.Router(
        model_list=[
            deployment("ruv", "ruvector/auto", sims["ruv"].base_url, **ollama),
            deployment("flaky", "ruvector/balanced", sims["flaky"].sim.base_url, retry_after_s=30,
                       **ollama),
            deployment("solo", "ruvector/fast", f"http://127.0.0.1:{closed_port()}"),
            cloud,
        ],
        num_retries=0,
        fallbacks=[{"ruv": ["cloud"]}, {"solo": ["cloud"]}],
        # A failing deployment must not be cooled down for the next test; the provider's
        # own cool-down (Ollama fallback) is what these tests look at.
        disable_cooldowns=True,
    )
    events = SuccessEvents()
    litellm.callbacks.append(events)
    built.success_events = events
    try:
        yield built
    finally:
        # Leave LiteLLM's globals as found: take out what this Router and we added.
        for name in CALLBACK_LISTS:
            current = getattr(litellm, name)
            current[:] = [cb for cb in current if id(cb) in before]


@pytest.fixture
def ruv(sims: dict[str, Any], provider: RuVectorLLM) -> RuvLLMSim:
    provider.reset()
    provider.clock = ruvector.time.monotonic
    for name in ("ruv", "ollama", "cloud"):
        sims[name].set_plan(FaultPlan())
        sims[name].reset()
    return sims["ruv"]


def meta(agent: str = "dev-1", project: str = "proj-a", request_id: str | None = None) -> dict[str, str]:
    out = {"project_id": project, "agent_id": agent}
    if request_id:
        out["llmgw_request_id"] = request_id
    return out


def queries(sim: RuvLLMSim) -> list[dict[str, Any]]:
    return [r.json for r in sim.requests if r.path == "/query"]


# -- flattening and registration ------------------------------------------------------------

def test_flatten_is_readable_and_deterministic() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "assistant", "content": "It is sunny.\nAround 18 C."},
        {"role": "user", "content": "Thanks"},
    ]
    expected = (
        "System: Be brief.\n"
        "User: Weather in Paris?\n[image]\n"
        'Assistant: [calls get_weather({"city": "Paris"})]\n'
        "Tool (get_weather): 18 C, sunny\n"
        "Assistant: It is sunny.\nAround 18 C.\n"
        "User: Thanks"
    )
    assert flatten_messages(messages) == expected
    assert flatten_messages([dict(m) for m in messages]) == expected


def test_register_is_idempotent_and_appends_only() -> None:
    saved = litellm.custom_provider_map
    other = {"provider": "someone-else", "custom_handler": object()}
    try:
        litellm.custom_provider_map = [other]
        first = register()
        assert register() is first
        assert litellm.custom_provider_map[0] is other
        assert [e["provider"] for e in litellm.custom_provider_map] == ["someone-else", "ruvector"]
        assert "ruvector" in litellm.provider_list
        litellm.custom_provider_map = [{"provider": "ruvector", "custom_handler": object()}]
        with pytest.raises(RuntimeError, match="already registered"):
            register()
    finally:
        litellm.custom_provider_map = saved
    register()
    assert litellm.model_cost["ruvector/auto"]["input_cost_per_token"] == 0.0


# -- through the Router ---------------------------------------------------------------------

async def test_query_is_the_flattened_conversation_with_a_created_session(router, ruv) -> None:
    resp = await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta())
    assert resp.choices[0].message.content == ANSWER
    session_request, query_request = ruv.requests
    assert (session_request.method, session_request.path) == ("POST", "/session")
    [sid] = ruv.sessions
    assert query_request.path == "/query"
    assert query_request.json == {"query": QUERY, "session_id": sid}


async def test_each_project_agent_keeps_its_own_session(router, ruv) -> None:
    for agent, project in [("dev-1", "proj-a"), ("dev-1", "proj-a"), ("dev-2", "proj-a"),
                           ("dev-1", "proj-b"), ("dev-2", "proj-a")]:
        await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta(agent, project))
    ids = [q["session_id"] for q in queries(ruv)]
    assert ids[0] == ids[1] and ids[2] == ids[4]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert [r.path for r in ruv.requests].count("/session") == 3  # created once per pair
    assert set(ruv.sessions) == set(ids)


async def test_no_identity_means_no_session(router, ruv) -> None:
    await router.acompletion(model="ruv", messages=MESSAGES)
    assert [r.path for r in ruv.requests] == ["/query"] and queries(ruv)[0]["session_id"] is None


async def test_tokens_are_counted_and_cost_is_zero_without_warnings(router, ruv) -> None:
    seen: list[logging.LogRecord] = []
    collector = logging.Handler(logging.WARNING)
    collector.emit = seen.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        lg.setLevel(logging.WARNING)  # another test may have quieted them
    try:
        done = router.success_events.expect("req-cost")
        resp = await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta(request_id="req-cost"))
        logged = await asyncio.wait_for(done, 10)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(collector)
            lg.setLevel(level)
    assert resp.usage.prompt_tokens == litellm.token_counter(messages=MESSAGES)
    assert resp.usage.completion_tokens == litellm.token_counter(text=ANSWER, count_response_tokens=True)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp._hidden_params["response_cost"] == 0.0 and logged["response_cost"] == 0.0
    assert resp._hidden_params["model_id"] == "ruv-1"
    assert [r.getMessage() for r in seen] == []


async def test_ruvllm_facts_are_in_hidden_params(router, ruv) -> None:
    resp = await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta())
    facts = resp._hidden_params[HIDDEN_KEY]
    assert facts == {"served_by": "ruvllm", "model": "auto", "model_used": "B1_2", "confidence": 0.91,
                     "context_size": 2048, "latency_ms": 7.25, "session_id": queries(ruv)[0]["session_id"],
                     "api_base": ruv.base_url}
    assert resp.model == "ruvector/auto"


async def test_a_500_from_ruvllm_falls_back_to_the_cloud_group(router, ruv, sims) -> None:
    ruv.plan = FaultPlan.error(500)
    resp = await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta())
    assert resp._hidden_params["model_id"] == "cloud-1"
    assert resp._hidden_params["additional_headers"]["x-litellm-attempted-fallbacks"] == 1
    assert [r.status for r in ruv.wait_for_responses(1)] == [500]  # /query answers only
    assert len(sims["cloud"].wait_for_responses(1)) == 1
    assert not sims["ollama"].requests  # an HTTP error is an answer: no Ollama fallback


@pytest.mark.parametrize(
    ("plan", "error", "status"),
    [
        (FaultPlan.error(401), "AuthenticationError", 401),
        (FaultPlan.rate_limited(retry_after=3), "RateLimitError", 429),
        (FaultPlan.error(500), "InternalServerError", 500),
        (FaultPlan.error(502), "InternalServerError", 500),
        (FaultPlan.error(503), "ServiceUnavailableError", 503),
        (FaultPlan.malformed(), "InternalServerError", 500),
        (FaultPlan.drop(), "InternalServerError", 500),
        (FaultPlan.timeout(), "Timeout", 408),
    ],
    ids=["401", "429", "500", "502", "503", "malformed", "drop", "timeout"],
)
async def test_errors_map_to_litellm_exceptions_on_the_router(router, ruv, plan, error, status) -> None:
    ruv.plan = plan
    extra = {"timeout": 0.5} if status == 408 else {}
    with pytest.raises(getattr(litellm, error)) as caught:
        await router.acompletion(model="ruv", messages=MESSAGES, disable_fallbacks=True, **extra)
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.litellm_response_headers["retry-after"] == "3"
    # The record of a request the client gave up on lands when the server notices.
    await asyncio.to_thread(ruv.wait_for_responses, 1)


async def test_unreachable_without_ollama_is_503_and_the_router_falls_back(router, ruv, sims) -> None:
    with pytest.raises(litellm.ServiceUnavailableError, match="unreachable"):
        await router.acompletion(model="solo", messages=MESSAGES, disable_fallbacks=True)
    resp = await router.acompletion(model="solo", messages=MESSAGES)
    assert resp._hidden_params["model_id"] == "cloud-1"
    assert not sims["ollama"].requests


async def test_unreachable_ruvllm_is_answered_by_ollama_until_the_cooldown_ends(router, ruv, sims,
                                                                                provider) -> None:
    flaky, ollama = sims["flaky"], sims["ollama"]
    base = f"http://127.0.0.1:{flaky.port}"
    now = [1000.0]
    provider.clock = lambda: now[0]
    first = await router.acompletion(model="flaky", messages=MESSAGES, metadata=meta())
    assert first._hidden_params[HIDDEN_KEY]["served_by"] == "ruvllm"
    sid = first._hidden_params[HIDDEN_KEY]["session_id"]

    flaky.sim.stop()
    resp = await router.acompletion(model="flaky", messages=MESSAGES, metadata=meta(),
                                    temperature=0.2, max_tokens=50)
    facts = resp._hidden_params[HIDDEN_KEY]
    assert facts["served_by"] == "ollama" and facts["ollama_model"] == "llama3.2"
    assert facts["api_base"] == ollama.base_url and "unreachable" in facts["fallback_reason"]
    [record] = ollama.wait_for_responses(1)
    assert resp.choices[0].message.content == record.answer
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (
        record.usage["prompt_eval_count"], record.usage["eval_count"])
    [sent] = [r.json for r in ollama.requests if r.path == "/api/chat"]
    assert sent == {"model": "llama3.2", "messages": MESSAGES, "stream": False,
                    "options": {"temperature": 0.2, "num_predict": 50}}
    assert resp._hidden_params["response_cost"] == 0.0
    assert provider.down_until(base) == 1030.0

    # Back on the same port, but inside the cool-down: still Ollama, ruvLLM is not asked.
    restarted = flaky.restart()
    now[0] += 29
    resp = await router.acompletion(model="flaky", messages=MESSAGES, metadata=meta())
    assert resp._hidden_params[HIDDEN_KEY]["served_by"] == "ollama"
    assert restarted.requests == [] and len(ollama.wait_for_responses(2)) == 2

    now[0] += 2  # the cool-down has passed: ruvLLM again, same session id
    resp = await router.acompletion(model="flaky", messages=MESSAGES, metadata=meta())
    assert resp._hidden_params[HIDDEN_KEY]["served_by"] == "ruvllm"
    assert queries(restarted) == [{"query": QUERY, "session_id": sid}]
    assert provider.down_until(base) is None


async def test_stream_is_one_content_chunk_then_usage(router, ruv) -> None:
    stream = await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta(), stream=True,
                                      stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == [ANSWER]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        litellm.token_counter(messages=MESSAGES),
        litellm.token_counter(text=ANSWER, count_response_tokens=True))
    [facts] = [c.ruvector for c in chunks if getattr(c, "ruvector", None)]
    assert facts["served_by"] == "ruvllm" and facts["model_used"] == "B1_2"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


async def test_feedback_for_a_recent_request(router, ruv, provider) -> None:
    await router.acompletion(model="ruv", messages=MESSAGES, metadata=meta(request_id="req-fb"))
    exchange = provider.exchange("req-fb")
    assert exchange is not None and (exchange.query, exchange.response) == (QUERY, ANSWER)
    assert await provider.feedback_for("req-fb", 0.8) is True
    [fb] = ruv.feedback
    assert (fb.query, fb.response, fb.quality) == (QUERY, ANSWER, 0.8)
    assert ruv.requests[-1].json == {"query": QUERY, "response": ANSWER, "quality": 0.8}
    with pytest.raises(LookupError):
        await provider.feedback_for("req-unknown", 0.5)
    with pytest.raises(ValueError):
        await provider.feedback_for("req-fb", 1.5)


# -- without a Router: sessions that cannot be created, unknown models, sync calls ----------

class NoSessionSim(RuvLLMSim):
    """An older ruvLLM without POST /session."""

    async def _new_session(self, request: web.Request) -> web.Response:
        await self.receive(request)
        return web.Response(status=404)


async def test_a_failing_session_endpoint_gives_a_stable_own_id(provider) -> None:
    provider.reset()
    async with NoSessionSim() as old:
        for _ in range(2):
            await litellm.acompletion(model="ruvector/quality", api_base=old.base_url, messages=MESSAGES,
                                      metadata=meta("dev-9", "proj-z"))
        expected = "llmgw-" + hashlib.sha256(b"proj-z\0dev-9").hexdigest()[:32]
        assert [q["session_id"] for q in queries(old)] == [expected, expected]
        assert [r.path for r in old.requests].count("/session") == 1  # the fallback id is cached


async def test_unknown_model_is_a_clear_bad_request(ruv) -> None:
    with pytest.raises(litellm.BadRequestError, match="unknown ruvector model 'turbo'"):
        await litellm.acompletion(model="ruvector/turbo", api_base=ruv.base_url, messages=MESSAGES)
    assert ruv.requests == []


def test_sync_completion_and_stream(ruv) -> None:
    resp = litellm.completion(model="ruvector/fast", api_base=ruv.base_url, messages=MESSAGES,
                              metadata=meta())
    assert resp.choices[0].message.content == ANSWER
    assert resp._hidden_params[HIDDEN_KEY]["served_by"] == "ruvllm"
    chunks = list(litellm.completion(model="ruvector/fast", api_base=ruv.base_url, messages=MESSAGES,
                                     metadata=meta(), stream=True))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == [ANSWER]
    assert len({q["session_id"] for q in queries(ruv)}) == 1


def test_each_event_loop_gets_its_own_client(ruv) -> None:
    async def once() -> str:
        resp = await litellm.acompletion(model="ruvector/auto", api_base=ruv.base_url, messages=MESSAGES)
        return resp.choices[0].message.content

    # Two asyncio.run loops in a row: a client kept from the first (closed) loop would fail.
    assert [asyncio.run(once()), asyncio.run(once())] == [ANSWER, ANSWER]


async def test_ollama_fallback_failures_are_mapped_too(ruv, sims) -> None:
    ollama = sims["ollama"]
    ollama.plan = FaultPlan.error(503)
    kw = {"model": "ruvector/auto", "api_base": f"http://127.0.0.1:{closed_port()}", "messages": MESSAGES,
          "ollama_api_base": ollama.base_url, "ollama_model": "llama3.2"}
    with pytest.raises(litellm.ServiceUnavailableError, match="Ollama fallback .* answered HTTP 503"):
        await litellm.acompletion(**kw)
    with pytest.raises(litellm.ServiceUnavailableError, match="unreachable too"):
        await litellm.acompletion(**{**kw, "ollama_api_base": f"http://127.0.0.1:{closed_port()}"})
    del kw["ollama_model"]
    with pytest.raises(litellm.BadRequestError, match="ollama_model is missing"):
        await litellm.acompletion(**kw)


def test_recent_exchanges_are_bounded() -> None:
    keeper = RuVectorLLM(keep_recent=2)
    for i in range(3):
        keeper._remember(ruvector.Exchange(f"r{i}", "http://x", "q", "a", "ruvllm"))
    assert [keeper.exchange(f"r{i}") is not None for i in range(3)] == [False, True, True]
