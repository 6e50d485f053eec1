"""GeminiSim on the wire and through LiteLLM's gemini provider (no Google SDK is installed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from llmgw.sim.faults import Fault, FaultPlan, ToolCall
from llmgw.sim.gemini import GeminiSim
from tests.sim import sse_json
from tests.sim.conftest import fresh

KEY = "AIza-sim-test"
HEADERS = {"x-goog-api-key": KEY}
SYSTEM = "Be brief."
QUESTION = "What is the capital of France?"
BODY = {
    "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
    "systemInstruction": {"parts": [{"text": SYSTEM}]},
    "generationConfig": {"maxOutputTokens": 64},
}
DECLARATIONS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ANSWER = f"Simulated answer to: {QUESTION}"
RESPONSE_KEYS = {"candidates", "usageMetadata", "modelVersion", "responseId"}


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiSim]:
    with GeminiSim(api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sim(server: GeminiSim) -> GeminiSim:
    return fresh(server)  # type: ignore[return-value]


def url(sim: GeminiSim, model: str = "gemini-sim", method: str = "generateContent") -> str:
    return f"{sim.base_url}/v1beta/models/{model}:{method}"


def post(sim: GeminiSim, body: dict, *, headers: dict | None = None, **kw: str) -> httpx.Response:
    return httpx.post(url(sim, **kw), json=body, headers=HEADERS if headers is None else headers, timeout=5)


def stream_sse(sim: GeminiSim, body: dict) -> list[dict]:
    resp = httpx.post(url(sim, method="streamGenerateContent") + "?alt=sse", json=body, headers=HEADERS)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_json(resp.text)
    assert all(name is None for name, _ in events)  # Gemini sends bare data: lines, no [DONE]
    return [data for _, data in events]


def text_of(chunks: list[dict]) -> str:
    return "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])


# -- wire format -----------------------------------------------------------------------


def test_json_response_has_gemini_shape(sim: GeminiSim) -> None:
    resp = post(sim, BODY)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert set(data) == RESPONSE_KEYS
    [candidate] = data["candidates"]
    assert candidate == {
        "content": {"parts": [{"text": ANSWER}], "role": "model"},
        "finishReason": "STOP",
        "index": 0,
    }
    assert data["modelVersion"] == "gemini-sim" and data["responseId"]
    # Default usage: words of the system instruction and contents, of the answer.
    assert data["usageMetadata"] == {
        "promptTokenCount": 8,
        "candidatesTokenCount": 9,
        "totalTokenCount": 17,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    }
    [record] = sim.wait_for_responses(1)
    assert record.usage == data["usageMetadata"]
    assert (record.model, record.answer, record.prompt_tokens, record.completion_tokens) == (
        "gemini-sim",
        ANSWER,
        8,
        9,
    )
    # The model lives in the URL: the recorded body is exactly what was sent.
    assert sim.requests[0].json == BODY and sim.requests[0].path.endswith("/gemini-sim:generateContent")


def test_cached_tokens_are_inside_the_prompt_count(sim: GeminiSim) -> None:
    sim.plan = FaultPlan(answer="Paris.", prompt_tokens=120, completion_tokens=7, cached_tokens=100)
    usage = post(sim, BODY).json()["usageMetadata"]
    assert usage["promptTokenCount"] == 120 and usage["cachedContentTokenCount"] == 100
    assert usage["candidatesTokenCount"] == 7 and usage["totalTokenCount"] == 127
    assert usage["cacheTokensDetails"] == [{"modality": "TEXT", "tokenCount": 100}]


def test_thought_tokens_are_counted_apart_from_the_candidates(sim: GeminiSim) -> None:
    # Gemini reports thinking as thoughtsTokenCount, outside candidatesTokenCount and inside
    # the total; the neutral completion count (the plan's) holds both, as OpenAI's does.
    sim.plan = FaultPlan(prompt_tokens=120, completion_tokens=50, reasoning_tokens=30, cached_tokens=100)
    usage = post(sim, BODY).json()["usageMetadata"]
    assert (usage["candidatesTokenCount"], usage["thoughtsTokenCount"]) == (20, 30)
    assert usage["totalTokenCount"] == 170 and usage["cachedContentTokenCount"] == 100
    [record] = sim.wait_for_responses(1)
    assert (record.completion_tokens, record.reasoning_tokens, record.cached_tokens) == (50, 30, 100)


def test_no_thoughts_no_thought_count(sim: GeminiSim) -> None:
    sim.plan = FaultPlan(prompt_tokens=10, completion_tokens=5)
    assert "thoughtsTokenCount" not in post(sim, BODY).json()["usageMetadata"]


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_stream_carries_the_thought_count_on_every_chunk(sim: GeminiSim, sse: bool) -> None:
    sim.plan = FaultPlan(prompt_tokens=120, completion_tokens=50, reasoning_tokens=30, cached_tokens=100)
    if sse:
        chunks = stream_sse(sim, BODY)
    else:
        chunks = httpx.post(url(sim, method="streamGenerateContent"), json=BODY, headers=HEADERS).json()
    *running, last = chunks
    assert running and all(c["usageMetadata"]["thoughtsTokenCount"] == 30 for c in running)
    assert all(c["usageMetadata"]["totalTokenCount"] == 150 for c in running)
    final = last["usageMetadata"]
    counts = final["candidatesTokenCount"], final["thoughtsTokenCount"], final["totalTokenCount"]
    assert counts == (20, 30, 170)
    assert final["cachedContentTokenCount"] == 100
    assert sim.wait_for_responses(1)[0].usage == final


def test_snake_case_fields_count_too(sim: GeminiSim) -> None:
    # The API accepts proto field names; LiteLLM sends system_instruction that way.
    body = {"contents": BODY["contents"], "system_instruction": {"parts": [{"text": SYSTEM}]}}
    assert post(sim, body).json()["usageMetadata"]["promptTokenCount"] == 8


def test_sse_stream_carries_usage_on_every_chunk_and_totals_on_the_last(sim: GeminiSim) -> None:
    chunks = stream_sse(sim, BODY)
    assert len(chunks) == len(ANSWER.split()) and text_of(chunks) == ANSWER
    assert all(set(c) == RESPONSE_KEYS for c in chunks)
    assert len({c["responseId"] for c in chunks}) == 1
    *running, last = chunks
    assert all("finishReason" not in c["candidates"][0] for c in running)
    assert all(c["usageMetadata"]["totalTokenCount"] == 8 for c in running)
    assert all("candidatesTokenCount" not in c["usageMetadata"] for c in running)
    assert last["candidates"][0]["finishReason"] == "STOP"
    record = sim.wait_for_responses(1)[0]
    assert last["usageMetadata"] == record.usage and record.stream and record.chunks == len(chunks)


def test_stream_without_alt_sse_is_one_json_array(sim: GeminiSim) -> None:
    resp = httpx.post(url(sim, method="streamGenerateContent"), json=BODY, headers=HEADERS)
    assert resp.headers["content-type"].startswith("application/json")
    chunks = resp.json()
    assert isinstance(chunks, list) and len(chunks) == len(ANSWER.split())
    assert text_of(chunks) == ANSWER and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    sim.wait_for_responses(1)  # streams are recorded after the last byte: let it land in this test


def test_function_call_json_and_stream(sim: GeminiSim) -> None:
    sim.plan = FaultPlan(tool_call=ToolCall(arguments={"city": "Paris"}))
    body = {**BODY, "tools": [{"functionDeclarations": DECLARATIONS}]}
    candidate = post(sim, body).json()["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    [part] = candidate["content"]["parts"]
    record = sim.wait_for_responses(1)[0]
    call = {"id": record.tool_call["id"], "name": "get_weather", "args": {"city": "Paris"}}
    assert part == {"functionCall": call}

    [chunk] = stream_sse(sim, body)  # a call arrives whole, in one chunk
    assert chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["args"] == {"city": "Paris"}
    assert chunk["candidates"][0]["finishReason"] == "STOP"
    sim.wait_for_responses(2)


@pytest.mark.parametrize(
    ("headers", "query", "status", "reason"),
    [
        ({}, "", 403, "PERMISSION_DENIED"),
        ({"x-goog-api-key": "AIza-wrong-secret"}, "", 400, "INVALID_ARGUMENT"),
        ({}, "?key=AIza-wrong-secret", 400, "INVALID_ARGUMENT"),
        ({}, f"?key={KEY}", 200, None),
    ],
    ids=["no-key", "wrong-header", "wrong-query", "query-key"],
)
def test_auth_like_google(sim: GeminiSim, headers: dict, query: str, status: int, reason: str | None) -> None:
    resp = httpx.post(url(sim) + query, json=BODY, headers=headers)
    assert resp.status_code == status
    if reason is not None:
        error = resp.json()["error"]
        assert (error["code"], error["status"]) == (status, reason)
        assert "wrong-secret" not in resp.text and KEY not in resp.text
    if status == 400:
        assert resp.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
def test_error_bodies_match_google(sim: GeminiSim, status: int, name: str) -> None:
    sim.plan = FaultPlan.error(status, retry_after=3 if status == 429 else None)
    resp = post(sim, BODY)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"code", "message", "status"} and error["message"]
    assert (error["code"], error["status"]) == (status, name)
    assert resp.headers.get("retry-after") == ("3" if status == 429 else None)


def test_invalid_requests_are_400(sim: GeminiSim) -> None:
    for body in ({}, {"contents": []}, {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}):
        resp = post(sim, body)
        assert resp.status_code == 400 and resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    resp = httpx.post(url(sim), content=b"{not json", headers=HEADERS)
    assert resp.status_code == 400


def test_models_list_and_get(sim: GeminiSim) -> None:
    listing = httpx.get(sim.base_url + "/v1beta/models", headers=HEADERS).json()
    assert [m["name"] for m in listing["models"]] == ["models/gemini-sim", "models/gemini-sim-flash"]
    assert "generateContent" in listing["models"][0]["supportedGenerationMethods"]
    one = httpx.get(f"{sim.base_url}/v1beta/models/gemini-sim?key={KEY}")
    assert one.status_code == 200 and one.json()["name"] == "models/gemini-sim"
    assert httpx.get(sim.base_url + "/v1beta/models/nope", headers=HEADERS).status_code == 404
    assert httpx.get(sim.base_url + "/v1beta/models").status_code == 403


def test_fault_rules_match_the_model_in_the_url(sim: GeminiSim) -> None:
    sim.plan = FaultPlan(faults=[Fault(kind="http_error", status=503, model="gemini-sim-flash")])
    assert post(sim, BODY).status_code == 200
    assert post(sim, BODY, model="gemini-sim-flash").status_code == 503
    assert post(sim, BODY, model="gemini-sim-flash", method="streamGenerateContent").status_code == 503


# -- LiteLLM's gemini provider ----------------------------------------------------------


def kwargs(sim: GeminiSim, model: str = "gemini-2.5-flash", **extra: object) -> dict:
    # A model LiteLLM knows: for unknown names it folds the system prompt into the
    # user turn (see test_litellm_folds_the_system_prompt_for_unknown_models).
    return {
        "model": f"gemini/{model}",
        "api_base": sim.base_url + "/v1beta",
        "api_key": KEY,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "num_retries": 0,
        "max_retries": 0,
        **extra,
    }


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_litellm_reads_thought_and_cached_tokens(sim: GeminiSim, litellm, stream: bool) -> None:
    # LiteLLM adds thoughtsTokenCount to the candidates (the total says they are apart) and
    # reports it as reasoning inside the completion, the cached count as a cache read.
    sim.plan = FaultPlan(prompt_tokens=120, completion_tokens=50, reasoning_tokens=30, cached_tokens=100)
    if stream:
        chunks = [c async for c in await litellm.acompletion(
            **kwargs(sim, stream=True, stream_options={"include_usage": True}))]
        usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    else:
        usage = (await litellm.acompletion(**kwargs(sim))).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 50)
    assert usage.completion_tokens_details.reasoning_tokens == 30
    assert usage.prompt_tokens_details.cached_tokens == 100
    sim.wait_for_responses(1)


async def test_litellm_folds_the_system_prompt_for_unknown_models(sim: GeminiSim, litellm) -> None:
    # LiteLLM 1.106.2 quirk, pinned: a model missing from its price map is assumed to
    # lack system instructions, so the system text becomes the first user part.
    await litellm.acompletion(**kwargs(sim, model="gemini-sim"))
    body = sim.wait_for_requests(1)[0].json
    assert "system_instruction" not in body and "systemInstruction" not in body
    assert body["contents"][0]["parts"] == [{"text": SYSTEM}, {"text": QUESTION}]


async def test_litellm_stream_errors_arrive_wrapped(sim: GeminiSim, litellm) -> None:
    # LiteLLM 1.106.2: an HTTP error answering a Gemini *stream* surfaces as
    # MidStreamFallbackError (a ServiceUnavailableError); the real one and its headers
    # are on original_exception. 401 is the exception: it stays AuthenticationError.
    from litellm.exceptions import MidStreamFallbackError

    sim.plan = FaultPlan.rate_limited(retry_after=2)
    with pytest.raises(MidStreamFallbackError) as caught:
        stream = await litellm.acompletion(**kwargs(sim, stream=True))
        _ = [chunk async for chunk in stream]
    original = caught.value.original_exception
    assert isinstance(original, litellm.RateLimitError)
    assert original.litellm_response_headers["retry-after"] == "2"

    sim.plan = FaultPlan.error(401)
    with pytest.raises(litellm.AuthenticationError):
        stream = await litellm.acompletion(**kwargs(sim, stream=True))
        _ = [chunk async for chunk in stream]


async def test_litellm_swallows_a_malformed_gemini_stream(sim: GeminiSim, litellm) -> None:
    # LiteLLM 1.106.2 quirk, pinned: a data line that is not JSON switches its parser to
    # "accumulate partial JSON"; a stream that ends there yields nothing and no error.
    sim.plan = FaultPlan.malformed()
    stream = await litellm.acompletion(**kwargs(sim, stream=True))
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert sim.wait_for_responses(1)[0].fault == "malformed"


async def test_litellm_timeout(litellm) -> None:
    # A server of its own: after its timeout LiteLLM's client keeps the connection open
    # for seconds, so the held request would be recorded late, into a later test.
    with GeminiSim(FaultPlan.timeout(), api_key=KEY) as sim:
        with pytest.raises(litellm.Timeout):
            await litellm.acompletion(**kwargs(sim, timeout=0.3))
    [record] = sim.wait_for_responses(1)  # stop() let the held request go
    assert (record.status, record.fault) == (0, "timeout")


async def test_litellm_ignores_timeout_on_gemini_streams(litellm) -> None:
    # LiteLLM 1.106.2 quirk, pinned: the Gemini stream path never passes `timeout` to its
    # HTTP client, so a stalled stream hangs (default client timeout: 600 s). Callers need
    # their own deadline. A server of its own: stopping it frees the held connection.
    with GeminiSim(FaultPlan.timeout(after_chunks=2), api_key=KEY) as sim:

        async def consume() -> list:
            stream = await litellm.acompletion(**kwargs(sim, stream=True, timeout=0.2))
            return [chunk async for chunk in stream]

        task = asyncio.ensure_future(consume())
        await asyncio.to_thread(sim.wait_for_requests, 1)
        done, _ = await asyncio.wait({task}, timeout=1.0)  # five times LiteLLM's timeout
        task.cancel()
        assert not done, task.exception()
    assert sim.wait_for_responses(1)[0].chunks == 2  # stop() let the held stream go
