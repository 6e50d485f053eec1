"""validate_call: every bad input is an InvalidRequest naming its parameter; good input
passes unchanged, unknown LiteLLM parameters included."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from llmgw.errors import InvalidRequest
from llmgw.ledger.models import Reservation, UsageEvent
from llmgw.pipeline.params import MAX_OUTPUT_TOKENS
from llmgw.pipeline.validation import MAX_METADATA_CHARS, validate_call, validate_id
from llmgw.types import ID_MAX_CHARS

ASK = [{"role": "user", "content": "Plan the release."}]


class _Opaque:
    """Not JSON; its repr is the same in every process (xdist compares test ids)."""

    def __repr__(self) -> str:
        return "<opaque>"


def call(*, agent_id: Any = "dev-1", project_id: Any = "proj-a", messages: Any = None,
         agent_type: Any = None, model_group: Any = None, metadata: Any = None, **params: Any):
    return validate_call(agent_id, project_id, ASK if messages is None else messages,
                         agent_type, model_group, metadata, params)


def refused(**kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call(**kwargs)
    assert info.value.hint, "every refusal names the fix"
    return info.value


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def looped() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": [1]}, "temperature"),
    ({"temperature": -3}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -0.1}, "top_p"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"frequency_penalty": "0"}, "frequency_penalty"),
    ({"max_completion_tokens": -5}, "max_completion_tokens"),
    ({"max_completion_tokens": "x"}, "max_completion_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_completion_tokens": 10.0}, "max_completion_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": MAX_OUTPUT_TOKENS + 1}, "max_tokens"),
    ({"max_tokens": 2**70}, "max_tokens"),
    ({"max_tokens": 100, "max_completion_tokens": 200}, "max_completion_tokens"),
    ({"n": 5}, "n"),
    ({"n": 0}, "n"),
    ({"n": True}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 7}, "stop"),
    ({"stop": ["ok", 1]}, "stop"),
    ({"stop": "a\x00"}, "stop"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"logit_bias": {"50256": 101}}, "logit_bias"),
    ({"logit_bias": {"the": 1}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": math.nan}, "timeout"),
    ({"num_retries": -1}, "num_retries"),
    ({"num_retries": 10**6}, "num_retries"),
    ({"user": 5}, "user"),
    ({"user": "u\x00"}, "user"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"tools": [{"type": "mcp", "server_url": "x"}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": "a\x00"}}]},
     "tools"),
    # unknown parameters pass through, but not with values no JSON body or ledger carries
    ({"reasoning_effort": "lo\x00w"}, "reasoning_effort"),
    ({"some_provider_knob": math.nan}, "some_provider_knob"),
    ({"extra_body": {"x": [math.inf]}}, "extra_body"),
    ({"extra_body": deep(40)}, "extra_body"),
    # set by the gateway or model_list.yaml only
    ({"api_key": "sk-x"}, "api_key"),
    ({"stream": True}, "stream"),
    ({"stream_options": {"include_usage": False}}, "stream_options"),
    ({"input_cost_per_token": 0, "output_cost_per_token": 0}, "input_cost_per_token"),
    ({"cache_read_input_token_cost": 0}, "cache_read_input_token_cost"),
    ({"cost_per_second": 0}, "cost_per_second"),
    ({"mock_response": "POISON"}, "mock_response"),
    ({"mock_testing_fallbacks": True}, "mock_testing_fallbacks"),
    ({"base_model": "gpt-4o-mini"}, "base_model"),
]


@pytest.mark.parametrize(("params", "name"), BAD_PARAMS,
                         ids=[f"{n}={p[n]!r}"[:50] for p, n in BAD_PARAMS])
def test_a_bad_parameter_is_refused_by_name(params, name):
    assert name in str(refused(**params))


BAD_CALLS: list[tuple[dict[str, Any], str]] = [
    ({"project_id": "proj\x00a"}, "project_id"),
    ({"agent_id": "dev\x00"}, "agent_id"),
    ({"agent_type": "qa\x00"}, "agent_type"),
    ({"model_group": "solo\x00"}, "model_group"),
    ({"project_id": "proj\na"}, "project_id"),
    ({"agent_id": "dev\ud800"}, "agent_id"),
    ({"agent_id": "x" * (ID_MAX_CHARS + 1)}, "agent_id"),
    ({"agent_type": "t" * (ID_MAX_CHARS + 1)}, "agent_type"),
    ({"project_id": b"proj-a"}, "project_id"),
    ({"project_id": 7}, "project_id"),
    ({"agent_type": ""}, "agent_type"),
    ({"project_id": "  "}, "project_id"),
    ({"metadata": {"x": math.nan}}, "metadata"),
    ({"metadata": {"x": math.inf}}, "metadata"),
    ({"metadata": {"x": "a\x00b"}}, "metadata"),
    ({"metadata": {"k\x00": 1}}, "metadata"),
    ({"metadata": {"x": {"k\x00": 1}}}, "metadata"),
    ({"metadata": {"x": {1: "a"}}}, "metadata"),
    ({"metadata": {"x": "\udc80"}}, "metadata"),
    ({"metadata": {"x": [{"y": -math.inf}]}}, "metadata"),
    ({"metadata": {"x": _Opaque()}}, "metadata"),
    ({"metadata": {"x": {"a"}}}, "metadata"),
    ({"metadata": {"x": 10**30}}, "metadata"),
    ({"metadata": {"x": deep(40)}}, "metadata"),
    ({"metadata": {"x": looped()}}, "metadata"),
    ({"metadata": {"x": "y" * MAX_METADATA_CHARS}}, "metadata"),
    ({"metadata": {"llmgw": "mine"}}, "metadata"),
    ({"metadata": ["not", "a", "dict"]}, "metadata"),
    ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages"),
    # an assistant turn's tool calls must say which function, with string arguments
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                                                      "tool_calls": ["f()"]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "a\udfffb"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a\x00"}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": "hi", "name": "n\x00"}]}, "messages"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "f", "arguments": '{"a": "\x00"}'}}]}]}, "messages"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_CALLS,
                         ids=[f"{n}={k[n]!r}"[:50] for k, n in BAD_CALLS])
def test_a_bad_id_metadata_or_message_is_refused_by_name(kwargs, name):
    assert name in str(refused(**kwargs))


def test_the_limit_on_ids_is_the_ledgers_column_size():
    for table, column in ((UsageEvent, "agent_id"), (UsageEvent, "project_id"),
                          (UsageEvent, "agent_type"), (UsageEvent, "model_group"),
                          (Reservation, "agent_id"), (Reservation, "project_id")):
        assert table.__table__.c[column].type.length == ID_MAX_CHARS
    assert call(agent_id="é" * ID_MAX_CHARS).agent_id == "é" * ID_MAX_CHARS


GOOD_PARAMS: list[dict[str, Any]] = [
    {"temperature": 0}, {"temperature": 2}, {"temperature": 0.7},
    {"top_p": 0}, {"top_p": 1.0},
    {"presence_penalty": -2, "frequency_penalty": 2.0},
    {"max_tokens": 1}, {"max_completion_tokens": MAX_OUTPUT_TOKENS},
    {"max_tokens": 300, "max_completion_tokens": 300},
    {"n": 1},
    {"stop": "\n"}, {"stop": ["a", "b", "c", "d"]}, {"stop": ("END",)},
    {"seed": 0}, {"seed": -(2**63)},
    {"logprobs": True, "top_logprobs": 5},
    {"logit_bias": {"50256": -100, 11: 5.5}},
    {"timeout": 30}, {"timeout": 0.5}, {"timeout": httpx.Timeout(5.0)},
    {"num_retries": 0}, {"max_retries": 3},
    {"user": "end-user-17"},
    {"tool_choice": "auto"},
    {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "number", "maximum": 1.5}}}}}]},
    {"response_format": {"type": "json_object"}},
    # LiteLLM's own pass-through parameters stay working
    {"reasoning_effort": "low", "extra_headers": {"anthropic-beta": "x"},
     "extra_body": {"x": [1, 2.5]}, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"temperature": None, "max_tokens": None, "seed": None},
]


@pytest.mark.parametrize("params", GOOD_PARAMS, ids=[repr(p)[:50] for p in GOOD_PARAMS])
def test_good_parameters_pass_unchanged(params):
    assert call(**params).params == params


def test_good_ids_metadata_and_messages_pass():
    messages = [{"role": "system", "content": "Be brief.\n\tTabs and newlines are text."},
                {"role": "user", "content": [{"type": "text", "text": "Plan it 🚀"}]},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                    "name": "f", "arguments": '{"a": 1}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"}]
    metadata = {"ticket": "REL-1", "score": 0.5, "n": 3, "ok": True, "none": None,
                "tags": ["a", "b"], "nested": {"k": [1, {"z": "é"}]}}
    request = call(agent_id="dev-é", project_id="shop:checkout", agent_type="qa-engineer",
                   model_group="solo", metadata=metadata, messages=messages)
    assert (request.agent_id, request.project_id, request.agent_type, request.model_group) == (
        "dev-é", "shop:checkout", "qa-engineer", "solo")
    assert request.metadata == metadata
    assert [m["role"] for m in request.message_dicts] == ["system", "user", "assistant", "tool"]


def test_the_refusal_says_what_to_do():
    error = refused(temperature="hot")
    assert "from 0 to 2" in error.message and "'hot'" in error.message
    error = refused(max_tokens=100, max_completion_tokens=200)
    assert "Pass one of them" in error.hint
    error = refused(project_id="a\x00b")
    assert "printable" in error.hint
    error = refused(input_cost_per_token=0)
    assert "model_list.yaml" in error.hint
    error = refused(mock_response="x")
    assert "llmgw sim" in error.hint


@pytest.mark.parametrize("value", ["qa\x00", "qa\n", "", "  ", "t" * (ID_MAX_CHARS + 1), b"qa", 7,
                                   None])
def test_validate_id_refuses_what_a_call_would_refuse(value):
    with pytest.raises(InvalidRequest, match="agent_type") as info:
        validate_id("agent_type", value)
    assert "printable" in (info.value.hint or "")


def test_validate_id_returns_a_good_id():
    assert validate_id("agent_type", "qa-engineer é") == "qa-engineer é"
