"""Building answers (llmgw.pipeline.completions) from what LiteLLM returned: the Completion of a provider
answer, usage with every token kind, costs in integer micro-dollars, a cached answer and its
replay as stream events, and a stream's chunks accumulated."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from llmgw._litellm import import_litellm
from llmgw.cache import CachedAnswer
from llmgw.config.agents import Resolution
from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.pipeline.completions import (
    StreamAccumulator,
    cached_completion,
    completion_of,
    replay,
    stream_completion,
    usage_of,
)
from llmgw.pipeline.context import RequestContext
from llmgw.redact import Redactor
from llmgw.routing.recorder import RequestTrace
from llmgw.types import Attempt, ContentDelta, ToolCallDelta, Usage

ROUTE = Resolution("primary", None, "default")
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "lookup_owner", "arguments": '{"component": "billing"}'}}


def config() -> Config:
    return config_from_dict({
        "model_list": [
            {"model_name": "primary", "litellm_params": {"model": "anthropic/claude-sim",
                                                         "api_key": "sk-unit-a"},
             "model_info": {"id": "prim-1", "input_cost_per_token": "0.000003",
                            "output_cost_per_token": "0.000015",
                            "cache_read_input_token_cost": 3e-07,
                            "cache_creation_input_token_cost": 3.75e-06,
                            "cache_creation_input_token_cost_above_1hr": 6e-06}},
            {"model_name": "backup", "litellm_params": {"model": "openai/gpt-sim",
                                                        "api_key": "sk-unit-b"},
             "model_info": {"id": "back-1", "input_cost_per_token": "0.000001",
                            "output_cost_per_token": "0.000002"}}],
        "router_settings": {"fallbacks": [{"primary": ["backup"]}]},
        "llmgw": {"default_group": "primary", "ledger": {"url": "sqlite:///unused.db"},
                  "cache": {"backend": "none"}}})


def provider_answer(*, usage: dict[str, Any] | None = None, hidden: dict[str, Any] | None = None,
                    content: str | None = "Billing is owned by the payments team.",
                    tool_calls: list[dict[str, Any]] | None = None,
                    finish_reason: str = "stop") -> Any:
    """A chat answer as LiteLLM's Router returns it, with its hidden params."""
    litellm = import_litellm()
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    response = litellm.ModelResponse(
        id="chatcmpl-1", model="gpt-sim",
        choices=[{"index": 0, "finish_reason": finish_reason, "message": message}],
        usage=usage or {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150})
    response._hidden_params = hidden if hidden is not None else {}
    return response


def served_by(dep_id: str, group: str, **more: Any) -> dict[str, Any]:
    return {"model_id": dep_id, "additional_headers": {"x-litellm-model-group": group},
            **more}


# -- a provider answer -----------------------------------------------------------------------


def test_a_completion_is_priced_at_litellms_response_cost_in_micro_dollars():
    response = provider_answer(hidden=served_by("back-1", "backup", response_cost=0.0012355,
                                                custom_llm_provider="openai",
                                                _response_ms="12.34567"))
    done = completion_of(response, RequestTrace("req-1"), ROUTE, "req-1", time.perf_counter(),
                         config())
    assert done.cost_micros == 1236  # 1235.5 micro-dollars, rounded half-even (not cut)
    assert done.content == "Billing is owned by the payments team."
    assert done.finish_reason == "stop"
    assert (done.model_group, done.requested_group) == ("backup", "primary")
    assert (done.deployment, done.provider, done.model) == ("back-1", "openai", "openai/gpt-sim")
    assert done.usage == Usage(prompt_tokens=120, completion_tokens=30)
    (ok,) = done.attempts
    assert (ok.attempt, ok.status, ok.cost_micros, ok.latency_ms) == (1, "ok", 1236, 12.346)
    assert ok.rates == {"input": "0.000001", "output": "0.000002", "cache_read": "0.000001",
                        "cache_write": "0.000001", "cache_write_1h": "0.000001"}
    assert done.request_id == "req-1" and done.raw is response


def test_without_a_response_cost_the_tokens_are_priced_at_the_deployments_rates():
    response = provider_answer(hidden=served_by("prim-1", "primary"))
    done = completion_of(response, RequestTrace("req-1"), ROUTE, "req-1", time.perf_counter(),
                         config())
    assert done.cost_micros == 120 * 3 + 30 * 15  # $3 / $15 per M tokens
    assert done.provider == "anthropic"  # from the deployment when LiteLLM says nothing


def test_the_serving_attempt_follows_the_failed_hops():
    failed = Attempt(attempt=1, model_group="primary", deployment="prim-1", status="error",
                     error_class="ProviderUnavailable")
    trace = RequestTrace("req-1", failures=[failed])
    done = completion_of(provider_answer(hidden=served_by("back-1", "backup",
                                                          response_cost=0.0003)),
                         trace, ROUTE, "req-1", time.perf_counter(), config())
    assert [(a.attempt, a.deployment, a.status) for a in done.attempts] == [
        (1, "prim-1", "error"), (2, "back-1", "ok")]
    assert done.cost_micros == 300


def test_tool_calls_are_plain_dicts():
    response = provider_answer(content=None, tool_calls=[TOOL_CALL], finish_reason="tool_calls",
                               hidden=served_by("back-1", "backup", response_cost=0))
    done = completion_of(response, RequestTrace("req-1"), ROUTE, "req-1", time.perf_counter(),
                         config())
    (call,) = done.tool_calls
    assert call["id"] == "call_1" and call["function"] == TOOL_CALL["function"]
    assert done.content is None and done.finish_reason == "tool_calls"


def test_an_answer_without_a_known_deployment_costs_nothing_and_keeps_the_route_group():
    done = completion_of(provider_answer(), RequestTrace("req-1"), ROUTE, "req-1",
                         time.perf_counter(), config())
    assert (done.cost_micros, done.deployment, done.model_group) == (0, None, "primary")
    assert done.model == "gpt-sim"


# -- usage -----------------------------------------------------------------------------------


def test_usage_carries_cache_reads_writes_and_reasoning():
    response = provider_answer(usage={
        "prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
        "cache_creation_input_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 300, "cache_creation_tokens": 100,
                                  "cache_creation_token_details": {
                                      "ephemeral_5m_input_tokens": 60,
                                      "ephemeral_1h_input_tokens": 40}},
        "completion_tokens_details": {"reasoning_tokens": 50}})
    assert usage_of(response) == Usage(prompt_tokens=1000, completion_tokens=200,
                                       cached_tokens=300, cache_write_tokens=100,
                                       cache_write_1h_tokens=40, reasoning_tokens=50)


def test_cache_writes_reported_only_in_the_prompt_details_are_counted():
    response = provider_answer(usage={
        "prompt_tokens": 500, "completion_tokens": 10, "total_tokens": 510,
        "prompt_tokens_details": {"cache_creation_tokens": 70}})
    usage = usage_of(response)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens, usage.cached_tokens) == (
        70, 0, 0)


def test_no_usage_is_zero_usage():
    class Bare:
        usage = None

    assert usage_of(Bare()) == Usage()


# -- a cached answer -------------------------------------------------------------------------


def hit(**more: Any) -> CachedAnswer:
    return CachedAnswer(content="Billing is owned by the payments team, who ship on Tuesdays.",
                        tool_calls=[TOOL_CALL], finish_reason="stop",
                        usage=Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=20),
                        cost_micros=810, model_group="backup", requested_group="primary",
                        deployment="back-1", provider="openai", model="openai/gpt-sim",
                        request_id="req-first", created_at=datetime(2026, 1, 2, tzinfo=UTC),
                        **more)


def test_a_cache_hit_costs_nothing_and_saves_what_the_answer_first_cost():
    done = cached_completion(hit(), ROUTE, "req-2", time.perf_counter())
    assert done.cached and done.cost_micros == 0 and done.saved_micros == 810
    assert done.request_id == "req-2" and done.requested_group == "primary"
    assert (done.model_group, done.deployment, done.provider) == ("backup", "back-1", "openai")
    assert done.usage.cached_tokens == 20 and done.tool_calls == [TOOL_CALL]
    (attempt,) = done.attempts
    assert (attempt.status, attempt.cost_micros, attempt.deployment) == ("cached", 0, "back-1")
    assert done.body is None


def test_a_cached_dialect_body_gets_the_new_requests_id():
    body = {"id": "msg_req-first", "type": "message", "content": [{"type": "text", "text": "x"}]}
    done = cached_completion(hit(body=body, dialect="anthropic"), ROUTE, "req-2",
                             time.perf_counter())
    assert done.body == {**body, "id": "msg_req-2"} and done.dialect == "anthropic"
    assert body["id"] == "msg_req-first"  # the stored answer is not changed


def test_replay_streams_the_whole_text_in_word_pieces_then_the_tool_calls():
    done = cached_completion(hit(), ROUTE, "req-2", time.perf_counter())
    events = replay(done)
    texts = [e for e in events if isinstance(e, ContentDelta)]
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert "".join(e.text for e in texts) == done.content
    assert len(texts) > 1 and all(len(e.text) <= 25 or " " not in e.text.strip() for e in texts)
    assert all(e.request_id == "req-2" for e in events)
    assert events[-1] is calls[-1]
    (call,) = calls
    assert (call.index, call.id, call.name, call.arguments) == (
        0, "call_1", "lookup_owner", '{"component": "billing"}')


def test_replay_of_an_empty_answer_is_no_text_event():
    done = cached_completion(hit().model_copy(update={"content": "", "tool_calls": []}),
                             ROUTE, "req-3", time.perf_counter())
    assert replay(done) == []


# -- a stream --------------------------------------------------------------------------------


def chunk(content: str | None = None, *, tool: dict[str, Any] | None = None,
          finish: str | None = None, usage: dict[str, Any] | None = None) -> Any:
    litellm = import_litellm()
    delta: dict[str, Any] = {"content": content}
    if tool is not None:
        delta["tool_calls"] = [tool]
    made = litellm.ModelResponseStream(choices=[{"index": 0, "delta": delta,
                                                 "finish_reason": finish}])
    if usage is not None:
        made.usage = litellm.Usage(**usage)
    return made


def test_a_stream_accumulates_text_tool_calls_usage_and_finish_reason():
    acc = StreamAccumulator("req-9")
    assert acc.empty
    events = [*acc.add(chunk("Hello ")), *acc.add(chunk("world")),
              *acc.add(chunk(tool={"index": 0, "id": "call_7", "type": "function",
                                   "function": {"name": "lookup", "arguments": '{"a"'}})),
              *acc.add(chunk(tool={"index": 0, "function": {"arguments": ': 1}'}})),
              *acc.add(chunk(finish="tool_calls")),
              *acc.add(chunk(usage={"prompt_tokens": 40, "completion_tokens": 12,
                                    "total_tokens": 52,
                                    "completion_tokens_details": {"reasoning_tokens": 5}}))]
    assert not acc.empty and acc.text == "Hello world"
    assert [type(e).__name__ for e in events] == ["ContentDelta", "ContentDelta",
                                                  "ToolCallDelta", "ToolCallDelta"]
    assert all(e.request_id == "req-9" for e in events)
    assert acc.tool_call_list() == [{"id": "call_7", "type": "function",
                                     "function": {"name": "lookup", "arguments": '{"a": 1}'}}]
    assert acc.finish_reason == "tool_calls"
    assert acc.usage == Usage(prompt_tokens=40, completion_tokens=12, reasoning_tokens=5)


def test_a_usage_chunk_with_zero_tokens_is_not_the_streams_usage():
    acc = StreamAccumulator()
    acc.add(chunk(usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}))
    assert acc.usage is None and acc.provider_usage is None


def test_a_cut_stream_from_an_unknown_deployment_is_partial_and_costs_nothing():
    acc = StreamAccumulator("req-4")
    acc.add(chunk("Half an answ"))
    response = provider_answer()
    ctx = RequestContext(request_id="req-4", agent_id="a", agent_type=None, project_id="p",
                         stream=True)
    done = stream_completion(response, acc, RequestTrace("req-4"), ROUTE, ctx,
                             [{"role": "user", "content": "Who owns billing?"}],
                             time.perf_counter(), config(), Redactor(), status="partial",
                             error=None)
    assert done.content == "Half an answ" and done.cost_micros == 0
    (final,) = done.attempts
    assert (final.status, final.error_class) == ("partial", "StreamClosed")
    assert final.error_message == "the caller stopped reading the stream"
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0


@pytest.mark.parametrize("text", [
    "word0", " ".join(f"word{i}" for i in range(24)), " ".join(f"word{i}" for i in range(200)),
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long first word",
    "two  spaces and a trailing one "])
def test_replay_pieces_join_back_to_the_text(text: str):
    done = cached_completion(hit().model_copy(update={"content": text, "tool_calls": []}),
                             ROUTE, "req-5", time.perf_counter())
    events = replay(done)
    assert all(isinstance(e, ContentDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == text
