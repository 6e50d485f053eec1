"""Routing promises the Router does not keep by itself (llmgw.routing.siblings): siblings before
worse groups, tools only a native Responses provider runs, retry floors per group."""

from __future__ import annotations

from typing import Any

from llmgw.routing.siblings import (
    SIBLING_RETRY_KINDS,
    able_to_run_tools,
    deployment_id,
    retry_floors,
    siblings_first,
)


def dep(dep_id: str, model: str = "openai/gpt-4.1", **params: Any) -> dict[str, Any]:
    return {"model_info": {"id": dep_id}, "litellm_params": {"model": model, **params}}


A, B, C = dep("a"), dep("b"), dep("c")


def test_deployment_id_reads_model_info():
    assert deployment_id(A) == "a"
    assert deployment_id({"litellm_params": {}}) is None


def test_siblings_first_leaves_out_what_already_failed():
    assert siblings_first([A, B, C], ["a"]) == [B, C]
    assert siblings_first([A, B, C], ["a", None, "c"]) == [B]
    assert siblings_first([A, B, C], []) == [A, B, C]
    assert siblings_first([A, B, C], [None]) == [A, B, C]


def test_siblings_first_retries_what_it_has_when_everything_failed():
    assert siblings_first([A, B], ["a", "b"]) == [A, B]


HOSTED = {"input": "find it", "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}]}


def test_hosted_tools_go_to_a_native_responses_provider():
    native = dep("n", "openai/gpt-4.1")
    azure = dep("z", "azure/gpt-4.1")
    bridged = dep("b", "anthropic/claude-sonnet-4-5")
    custom = dep("x", "some-model", custom_llm_provider="openai")
    assert able_to_run_tools([bridged, native, azure, custom], HOSTED) == [native, azure, custom]


def test_without_a_native_provider_the_bridged_ones_stay():
    bridged = [dep("b", "anthropic/claude-sonnet-4-5"), dep("g", "gemini/gemini-2.5-pro")]
    assert able_to_run_tools(bridged, HOSTED) == bridged


def test_function_tools_and_chat_calls_keep_every_deployment():
    both = [dep("b", "anthropic/claude-sonnet-4-5"), dep("n", "openai/gpt-4.1")]
    functions = {"input": "x", "tools": [{"type": "function", "name": "f"},
                                         {"type": "namespace", "name": "ns"}]}
    assert able_to_run_tools(both, functions) == both
    assert able_to_run_tools(both, {"messages": [], "tools": [{"type": "web_search"}]}) == both
    assert able_to_run_tools(both, {"input": "x"}) == both


def test_a_group_of_n_retries_each_sibling_error_at_least_n_minus_1_times():
    floors = retry_floors({"trio": 3, "solo": 1}, {}, {}, 0, {})
    assert floors == {"trio": dict.fromkeys(SIBLING_RETRY_KINDS, 2)}


def test_counts_above_the_floor_stay_and_the_routers_policy_is_the_base():
    policy = {"TimeoutErrorRetries": 5, "BadRequestErrorRetries": 0}
    floors = retry_floors({"pair": 2}, policy, {}, 0, {})
    assert floors["pair"]["TimeoutErrorRetries"] == 5
    assert floors["pair"]["RateLimitErrorRetries"] == 1
    assert floors["pair"]["BadRequestErrorRetries"] == 0


def test_num_retries_is_the_count_a_kind_left_unset_has():
    floors = retry_floors({"pair": 2}, {}, {}, 3, {})
    assert floors["pair"] == dict.fromkeys(SIBLING_RETRY_KINDS, 3)


def test_a_groups_own_policy_replaces_the_routers_and_forced_counts_win():
    floors = retry_floors({"pair": 2, "solo": 1}, {"TimeoutErrorRetries": 9},
                          {"pair": {"InternalServerErrorRetries": 4,
                                    "AuthenticationErrorRetries": 2}, "solo": {"X": 1}}, 0,
                          {"AuthenticationErrorRetries": 0})
    assert floors["pair"] == {"InternalServerErrorRetries": 4, "TimeoutErrorRetries": 1,
                              "RateLimitErrorRetries": 1, "ServiceUnavailableErrorRetries": 1,
                              "AuthenticationErrorRetries": 0}
    assert floors["solo"] == {"X": 1, "AuthenticationErrorRetries": 0}
