"""OpenAISim's Responses API (`POST /v1/responses`) against the OpenAI SDK's types, the official
client and LiteLLM's real OpenAI Responses code, over HTTP on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from llmgw.sim import FaultPlan, OpenAISim, ToolCall
from llmgw.sim.wire import count_tokens
from tests.sim import assert_no_extra, sse_json
from tests.sim.conftest import fresh

KEY = "sk-sim-responses"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXEC = ToolCall(name="exec_command", arguments={"cmd": "ls /tmp/x"})
OUTPUT = "a.txt\nb.txt  (2 files)"
EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
# Like Codex: the shell tool nested in a namespace, next to hosted and unknown tool types.
CODEX_TOOLS = [
    {"type": "web_search"},
    {"type": "namespace", "name": "shell", "description": "Shell tools", "tools": [EXEC_TOOL]},
    {"type": "future_tool_kind", "name": "x", "config": {"a": 1}},
]
EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAISim]:
    with OpenAISim(api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sim(server: OpenAISim) -> OpenAISim:
    return fresh(server)  # type: ignore[return-value]


def post(
    sim: OpenAISim, body: dict, path: str = "/v1/responses", headers: dict | None = None
) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=body, headers=AUTH if headers is None else headers, timeout=5)


def create(sim: OpenAISim, body: dict) -> dict:
    resp = post(sim, body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def strict_response(data: dict) -> Response:
    """Parse as the SDK's Response; every key known to it (``store``, which the API sends, aside).

    Tools of a type the SDK does not know are echoed as sent; the SDK's client takes them (see
    the official-SDK test), its strict validation cannot, so they are left out here."""
    known = [t for t in data["tools"] if t["type"] != "future_tool_kind"]
    parsed = Response.model_validate({**data, "tools": known})
    assert set(parsed.model_extra or {}) <= {"store"}, parsed.model_extra
    for name in Response.model_fields:
        assert_no_extra(getattr(parsed, name), f"$.{name}")
    return parsed


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# -- JSON -----------------------------------------------------------------------------


def test_json_answer_is_a_strict_response_and_the_request_is_recorded_as_sent(sim: OpenAISim) -> None:
    body = {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in English."},
            user("What is the capital of France?"),
        ],
        "tools": [EXEC_TOOL, {"type": "web_search"}, {"type": "future_tool_kind", "x": 1}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": True,
        "max_output_tokens": 256,
        "prompt_cache_key": "session-1",
        "client_metadata": {"originator": "codex"},  # unknown to the API: kept in the record
    }
    data = create(sim, body)
    response = strict_response(data)
    assert data["id"].startswith("resp_") and data["object"] == "response" and data["status"] == "completed"
    assert (response.model, response.max_output_tokens, response.prompt_cache_key) == (
        "gpt-5",
        256,
        "session-1",
    )
    assert response.parallel_tool_calls is False and response.instructions == "Be brief."
    assert [t["type"] for t in data["tools"]] == ["function", "web_search", "future_tool_kind"]
    (message,) = data["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert (message["role"], message["status"]) == ("assistant", "completed")
    answer = "Simulated answer to: What is the capital of France?"
    assert message["content"] == [{"type": "output_text", "text": answer, "annotations": [], "logprobs": []}]
    assert response.output_text == answer

    (request,) = sim.requests
    assert request.json == body and request.path == "/v1/responses"
    (recorded,) = sim.responses
    # Instructions, both messages and every tool are counted as the prompt.
    assert recorded.prompt_tokens == data["usage"]["input_tokens"] > count_tokens("Be brief. What is the")
    assert recorded.completion_tokens == data["usage"]["output_tokens"] == count_tokens(answer)
    assert data["usage"]["total_tokens"] == recorded.prompt_tokens + recorded.completion_tokens
    assert data["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert (recorded.response_id, recorded.previous_response_id) == (data["id"], None)


def test_path_without_v1_and_a_string_input(sim: OpenAISim) -> None:
    resp = post(sim, {"model": "gpt-5", "input": "hello there"}, path="/responses")
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["output"][0]["content"][0]["text"] == "Simulated answer to: hello there"
    assert data["usage"]["input_tokens"] == 2


def test_reasoning_item_summary_usage_and_encrypted_content(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(thinking="Paris is the capital.", cached_tokens=3, prompt_tokens=50)
    body = {
        "model": "gpt-5",
        "input": "capital of France?",
        "reasoning": {"effort": "high", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }
    data = create(sim, body)
    strict_response(data)
    reasoning, message = data["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Paris is the capital."}]
    assert isinstance(reasoning["encrypted_content"], str) and reasoning["encrypted_content"]
    assert message["type"] == "message"
    usage = data["usage"]
    answer_tokens = count_tokens(message["content"][0]["text"])
    assert usage["output_tokens_details"]["reasoning_tokens"] == 4  # the thinking text's words
    assert usage["output_tokens"] == answer_tokens + 4  # reasoning is counted inside output
    assert usage["input_tokens"] == 50 and usage["input_tokens_details"]["cached_tokens"] == 3
    assert data["reasoning"] == {"effort": "high", "summary": "auto"}
    assert sim.responses[-1].thinking == "Paris is the capital." and sim.responses[-1].reasoning_tokens == 4

    # The plan's reasoning tokens; no summary asked, none sent, no encrypted content unasked.
    sim.plan = FaultPlan(reasoning_tokens=40)
    data = create(sim, {"model": "gpt-5", "input": "hi", "reasoning": {"effort": "low"}})
    reasoning, message = data["output"]
    assert reasoning["summary"] == [] and "encrypted_content" not in reasoning
    assert data["usage"]["output_tokens_details"]["reasoning_tokens"] == 40
    assert data["usage"]["output_tokens"] == 40 + count_tokens(message["content"][0]["text"])
    assert sim.responses[-1].thinking is None  # reasoned, but no text was sent
    # effort "none" does not reason.
    data = create(sim, {"model": "gpt-5.1", "input": "hi", "reasoning": {"effort": "none"}})
    assert [item["type"] for item in data["output"]] == ["message"]


def test_encrypted_reasoning_sent_back_is_verified(sim: OpenAISim) -> None:
    body = {
        "model": "gpt-5",
        "input": "first",
        "store": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }
    reasoning, message = create(sim, body)["output"]
    turn = [user("first"), reasoning, message, user("second")]
    follow = create(sim, {**body, "input": turn})
    assert follow["output"][-1]["content"][0]["text"] == "Simulated answer to: second"

    blob = reasoning["encrypted_content"]
    another_servers = OpenAISim().responses_api.sign_reasoning(reasoning["id"],
                                                               reasoning["summary"][0]["text"])
    for forged in (blob[:-8] + "AAAAAAA=", "not base64!", another_servers):
        resp = post(sim, {**body, "input": [user("first"), {**reasoning, "encrypted_content": forged}]})
        assert resp.status_code == 400, forged
        error = resp.json()["error"]
        assert error["code"] == "invalid_encrypted_content" and reasoning["id"] in error["message"]
    assert sim.responses[-1].fault == "invalid_encrypted_content"


def test_invalid_requests_are_400_and_a_wrong_key_401(sim: OpenAISim) -> None:
    for body, message in [
        ({"input": "hi"}, "'model'"),
        ({"model": "gpt-5"}, "'input'"),
        ({"model": "gpt-5", "input": 3}, "Invalid type for 'input'"),
        ({"model": "gpt-5", "input": "hi", "tools": [{"type": "function"}]}, "'tools[0].name'"),
    ]:
        resp = post(sim, body)
        assert resp.status_code == 400 and message in resp.json()["error"]["message"], body
    resp = post(sim, {"model": "gpt-5", "input": "hi"}, headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status_code == 401 and "sk-wrong" not in resp.text


# -- SSE ------------------------------------------------------------------------------


def stream(sim: OpenAISim, body: dict) -> list[dict]:
    resp = post(sim, {**body, "stream": True})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_json(resp.text)
    for number, (name, data) in enumerate(events):
        assert name == data["type"] and data["sequence_number"] == number
        if "response" in data:
            strict_response(data["response"])
            data = {**data, "response": {k: v for k, v in data["response"].items() if k != "store"}}
        assert_no_extra(EVENTS.validate_python(data), name or "?")
    return [data for _, data in events]


def test_stream_of_reasoning_then_text_is_the_full_event_sequence(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(thinking="Think it over.")
    body = {"model": "gpt-5", "input": "Say hi", "reasoning": {"effort": "low", "summary": "detailed"}}
    events = stream(sim, body)
    kinds = [e["type"] for e in events]
    text_deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * 3,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * text_deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert text_deltas > 1
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    summary = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert summary == "Think it over." and text == "Simulated answer to: Say hi"
    done = events[-1]["response"]
    strict_response(done)
    assert done["status"] == "completed" and done["output"][1]["content"][0]["text"] == text
    assert done["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    recorded = sim.responses[-1]
    assert recorded.stream and recorded.chunks == len(events) and recorded.usage == done["usage"]
    # The stored response is the one response.completed carried.
    assert httpx.get(f"{sim.base_url}/v1/responses/{done['id']}", headers=AUTH).json() == done


def test_stream_of_a_function_call(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_loop=[EXEC])
    events = stream(sim, {"model": "gpt-5", "input": "list /tmp/x", "tools": [EXEC_TOOL]})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done = events[2]["item"], events[-2]["item"]
    assert (added["arguments"], added["status"]) == ("", "in_progress")
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"cmd": "ls /tmp/x"} and done["arguments"] == arguments
    assert (
        done["call_id"].startswith("call_")
        and done["id"].startswith("fc_")
        and done["name"] == "exec_command"
    )


@pytest.mark.parametrize("kind", ["drop", "timeout"])
def test_stream_faults_cut_after_n_events(sim: OpenAISim, kind: str) -> None:
    sim.plan = FaultPlan(faults=[{"kind": kind, "after_chunks": 3}])
    received: list[bytes] = []
    body = {"model": "gpt-5", "input": "hi there", "stream": True}
    with pytest.raises(httpx.HTTPError):  # dropped, or the read timeout on the stall
        with httpx.stream(
            "POST", sim.base_url + "/v1/responses", headers=AUTH, json=body, timeout=1.0
        ) as resp:
            received.extend(resp.iter_bytes())
    (recorded,) = sim.wait_for_responses(1)
    assert (recorded.fault, recorded.chunks) == (kind, 3)
    names = [name for name, _ in sse_json(b"".join(received).decode())]
    assert names == ["response.created", "response.in_progress", "response.output_item.added"]
    # An answer cut short is not stored.
    assert sim.stored_response(recorded.response_id or "") is None


# -- the scripted tool loop -----------------------------------------------------------


def test_tool_loop_calls_the_offered_function_then_quotes_its_output(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_loop=[EXEC])
    ask = [user("List /tmp/x")]
    first = create(sim, {"model": "gpt-5", "input": ask, "tools": [EXEC_TOOL], "store": False})
    (call,) = first["output"]
    assert (call["type"], call["name"], json.loads(call["arguments"])) == (
        "function_call",
        "exec_command",
        {"cmd": "ls /tmp/x"},
    )
    assert call["status"] == "completed" and "namespace" not in call
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": OUTPUT}
    second = create(sim, {"model": "gpt-5", "input": [*ask, call, result], "tools": [EXEC_TOOL]})
    assert second["output"][0]["content"][0]["text"] == f"The tool returned: {OUTPUT}"
    # A new user turn after the result: the loop calls again; no tool offered: plain text.
    again = create(
        sim, {"model": "gpt-5", "input": [*ask, call, result, user("again")], "tools": [EXEC_TOOL]}
    )
    assert again["output"][0]["type"] == "function_call"
    plain = create(sim, {"model": "gpt-5", "input": ask})
    assert plain["output"][0]["content"][0]["text"] == "Simulated answer to: List /tmp/x"


def test_tool_loop_finds_the_function_inside_a_namespace_and_continues_by_id(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_loop=[EXEC])
    first = create(sim, {"model": "gpt-5", "input": "List /tmp/x", "tools": CODEX_TOOLS})
    (call,) = first["output"]
    assert (call["name"], call["namespace"]) == ("exec_command", "shell")
    # Codex-style continuation: only the output, chained to the stored response.
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": OUTPUT}
    body = {"model": "gpt-5", "previous_response_id": first["id"], "input": [result], "tools": CODEX_TOOLS}
    second = create(sim, body)
    assert second["previous_response_id"] == first["id"]
    assert second["output"][0]["content"][0]["text"] == f"The tool returned: {OUTPUT}"
    assert sim.responses[-1].previous_response_id == first["id"]
    # The earlier turns count as prompt: more than this request's input alone.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


# -- continuations and retrieval ------------------------------------------------------


def test_unknown_or_unstored_previous_response_is_404(sim: OpenAISim) -> None:
    resp = post(sim, {"model": "gpt-5", "input": "hi", "previous_response_id": "resp_nope"})
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {
            "message": "Previous response with id 'resp_nope' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }
    }
    recorded = sim.responses[-1]
    assert (recorded.status, recorded.fault, recorded.previous_response_id) == (
        404,
        "previous_response_not_found",
        "resp_nope",
    )
    unstored = create(sim, {"model": "gpt-5", "input": "hi", "store": False})
    assert unstored["store"] is False
    assert (
        post(sim, {"model": "gpt-5", "input": "x", "previous_response_id": unstored["id"]}).status_code == 404
    )
    assert httpx.get(f"{sim.base_url}/v1/responses/{unstored['id']}", headers=AUTH).status_code == 404
    # A chat request is never refused for it.
    chat = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], "previous_response_id": "x"}
    assert post(sim, chat, path="/v1/chat/completions").status_code == 200


def test_a_continuation_answers_the_earlier_question_when_no_new_one_is_asked(sim: OpenAISim) -> None:
    first = create(sim, {"model": "gpt-5", "input": "Name a colour"})
    second = create(sim, {"model": "gpt-5", "input": [], "previous_response_id": first["id"]})
    assert second["output"][0]["content"][0]["text"] == "Simulated answer to: Name a colour"
    stored = httpx.get(f"{sim.base_url}/responses/{second['id']}", headers=AUTH)
    assert stored.status_code == 200 and stored.json() == second
    assert httpx.get(f"{sim.base_url}/v1/responses/{second['id']}").status_code == 401


# -- the official SDK -----------------------------------------------------------------


async def test_official_sdk_create_stream_retrieve_and_errors(sim: OpenAISim) -> None:
    sim.plan = FaultPlan(tool_loop=[EXEC], cached_tokens=2)
    client = openai.AsyncOpenAI(base_url=sim.base_url + "/v1", api_key=KEY, max_retries=0)
    first = await client.responses.create(
        model="gpt-5",
        input="List /tmp/x",
        tools=CODEX_TOOLS,  # type: ignore[arg-type]  # an unknown tool type too
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert call.type == "function_call" and json.loads(call.arguments) == {"cmd": "ls /tmp/x"}
    assert call.namespace == "shell" and [t.type for t in first.tools][-1] == "future_tool_kind"
    assert first.usage is not None and first.usage.input_tokens_details.cached_tokens == 2
    assert first.usage.output_tokens_details.reasoning_tokens == sim.responses[-1].reasoning_tokens > 0

    result = {"type": "function_call_output", "call_id": call.call_id, "output": OUTPUT}
    async with client.responses.stream(
        model="gpt-5", previous_response_id=first.id, input=[result], tools=[EXEC_TOOL]
    ) as events:
        texts = [e.delta async for e in events if e.type == "response.output_text.delta"]
        final = await events.get_final_response()
    assert "".join(texts) == final.output_text == f"The tool returned: {OUTPUT}"

    raw = await client.responses.create(model="gpt-5", input="hi", stream=True)
    kinds = [event.type async for event in raw]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"

    retrieved = await client.responses.retrieve(final.id)
    assert retrieved.output_text == final.output_text and retrieved.usage == final.usage

    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="gpt-5", input="hi", previous_response_id="resp_gone")
    assert caught.value.code == "previous_response_not_found"
    sim.plan = FaultPlan.rate_limited(retry_after=3, times=1)
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-5", input="hi")
    await client.close()


# -- LiteLLM's OpenAI Responses code --------------------------------------------------


def litellm_kwargs(sim: OpenAISim, **extra: object) -> dict:
    return {"model": "openai/gpt-5", "api_base": sim.base_url + "/v1", "api_key": KEY, **extra}


async def test_litellm_aresponses_json_matches_the_record(sim: OpenAISim, litellm) -> None:
    sim.plan = FaultPlan(tool_loop=[EXEC], cached_tokens=1, reasoning_tokens=7)
    first = await litellm.aresponses(
        **litellm_kwargs(sim, input="List /tmp/x", tools=CODEX_TOOLS[1:2], reasoning={"effort": "low"})
    )
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and call.type == "function_call" and call.name == "exec_command"
    recorded = sim.responses[-1]
    # LiteLLM hands out its own id: resp_ + base64 of the provider, deployment and the sim's id.
    assert first.id.startswith("resp_") and recorded.response_id
    assert f"response_id:{recorded.response_id}" in base64.b64decode(first.id[5:] + "==").decode()
    assert first.usage.input_tokens == recorded.prompt_tokens
    assert first.usage.output_tokens == recorded.completion_tokens
    assert first.usage.output_tokens_details.reasoning_tokens == 7
    assert first.usage.input_tokens_details.cached_tokens == 1
    sent = sim.requests[-1].json
    assert sent["tools"] == CODEX_TOOLS[1:2] and sent["reasoning"] == {"effort": "low"}

    result = {"type": "function_call_output", "call_id": call.call_id, "output": OUTPUT}
    second = await litellm.aresponses(**litellm_kwargs(sim, input=[result], previous_response_id=first.id))
    assert second.output[-1].content[0].text == f"The tool returned: {OUTPUT}"
    assert sim.requests[-1].json["previous_response_id"] == recorded.response_id  # decoded again


async def test_litellm_aresponses_stream_and_router(sim: OpenAISim, litellm) -> None:
    events = await litellm.aresponses(**litellm_kwargs(sim, input="Say hi", stream=True))
    kinds, text, completed = [], "", None
    async for event in events:
        kinds.append(str(getattr(event.type, "value", event.type)))
        if kinds[-1] == "response.output_text.delta":
            text += event.delta
        if kinds[-1] == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert text == "Simulated answer to: Say hi"
    assert completed is not None and completed.usage.output_tokens == sim.responses[-1].completion_tokens

    params = {"model": "openai/gpt-5", "api_base": sim.base_url + "/v1", "api_key": KEY}
    router = litellm.Router(model_list=[{"model_name": "gpt", "litellm_params": params}], num_retries=0)
    answer = await router.aresponses(model="gpt", input="Route me")
    assert answer.output[-1].content[0].text == "Simulated answer to: Route me"
    assert sim.requests[-1].json["model"] == "gpt-5"


async def test_litellm_maps_responses_faults(sim: OpenAISim, litellm) -> None:
    sim.plan = FaultPlan.error(503, times=1)
    with pytest.raises(litellm.ServiceUnavailableError):
        await litellm.aresponses(**litellm_kwargs(sim, input="hi", num_retries=0))
    # LiteLLM maps any invalid_request_error body to BadRequestError, whatever the status.
    with pytest.raises(litellm.BadRequestError) as caught:
        await litellm.aresponses(**litellm_kwargs(sim, input="hi", previous_response_id="resp_nope"))
    assert caught.value.status_code == 404 and "previous_response_not_found" in str(caught.value)
    with pytest.raises(litellm.AuthenticationError):
        await litellm.aresponses(**{**litellm_kwargs(sim, input="hi"), "api_key": "sk-wrong"})


async def test_litellm_sends_encrypted_reasoning_back_intact(sim: OpenAISim, litellm) -> None:
    """Stateless (store: false) as Codex runs: the reasoning item returns with its encrypted content."""
    options = {"store": False, "reasoning": {"effort": "low", "summary": "auto"}}
    options["include"] = ["reasoning.encrypted_content"]
    first = await litellm.aresponses(**litellm_kwargs(sim, input="first", **options))
    items = [item.model_dump(exclude_none=True) for item in first.output]
    assert items[0]["type"] == "reasoning" and items[0]["encrypted_content"]
    turn = [{"role": "user", "content": "first"}, *items, {"role": "user", "content": "second"}]
    second = await litellm.aresponses(**litellm_kwargs(sim, input=turn, **options))
    assert second.output[-1].content[0].text == "Simulated answer to: second"
    assert sim.requests[-1].json["input"][1]["encrypted_content"] == items[0]["encrypted_content"]
    forged = [*turn[:1], {**items[0], "encrypted_content": items[0]["encrypted_content"][:-8] + "AAAAAAA="}]
    with pytest.raises(litellm.BadRequestError) as caught:
        await litellm.aresponses(**litellm_kwargs(sim, input=forged, **options))
    assert "invalid_encrypted_content" in str(caught.value) or "could not be verified" in str(caught.value)
