"""cache_key: stable for the same question, different whenever the answer could differ."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw.cache import KEY_PREFIX, cache_key

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi", "name": "alice"},
]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}}]
PARAMS: dict[str, Any] = {
    "temperature": 0, "top_p": 1, "max_tokens": 100, "stop": ["\n"], "tools": TOOLS,
    "tool_choice": "auto", "response_format": {"type": "json_object"}, "seed": 7,
}


def key(scope: str = "project:p1", group: str = "fast",
        messages: list[dict[str, Any]] | None = None, **params: Any) -> str:
    return cache_key(scope, group, MESSAGES if messages is None else messages,
                     {**PARAMS, **params})


def reordered(value: Any) -> Any:
    """The same value with every dict's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_shape_and_determinism() -> None:
    k = key()
    assert k == key()
    prefix, _, digest = k.rpartition(":")
    assert prefix == f"{KEY_PREFIX}project:p1"
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_stable_across_dict_orderings() -> None:
    assert cache_key("project:p1", "fast", reordered(MESSAGES), reordered(PARAMS)) == key()


@pytest.mark.parametrize(("param", "value"), [
    ("temperature", 0.5), ("top_p", 0.9), ("max_tokens", 101), ("stop", ["END"]),
    ("tools", TOOLS + [{"type": "function", "function": {"name": "other"}}]),
    ("tool_choice", "required"), ("response_format", {"type": "text"}), ("seed", 8),
    ("frequency_penalty", 0.1), ("some_provider_extra", {"x": 1}),
])
def test_changes_with_answer_shaping_params(param: str, value: Any) -> None:
    assert key(**{param: value}) != key()


def test_a_missing_param_differs_from_a_present_one() -> None:
    without = cache_key("project:p1", "fast", MESSAGES, {k: v for k, v in PARAMS.items()
                                                        if k != "seed"})
    assert without != key()


@pytest.mark.parametrize("change", ["content", "role", "name", "order", "extra", "dropped"])
def test_changes_with_any_message(change: str) -> None:
    msgs = [dict(m) for m in MESSAGES]
    if change == "content":
        msgs[1]["content"] = "hi!"
    elif change == "role":
        msgs[0]["role"] = "user"
    elif change == "name":
        msgs[1]["name"] = "bob"
    elif change == "order":
        msgs.reverse()
    elif change == "extra":
        msgs.append({"role": "user", "content": "and?"})
    else:
        msgs.pop(0)
    assert key(messages=msgs) != key()


def test_changes_with_scope_and_group() -> None:
    assert key(scope="project:p2") != key()
    assert key(group="high-reasoning") != key()


@pytest.mark.parametrize(("param", "value"), [
    ("timeout", 30), ("request_timeout", 30), ("metadata", {"agent_id": "a1"}),
    ("user", "someone"), ("num_retries", 5),
])
def test_ignores_params_that_cannot_change_the_answer(param: str, value: Any) -> None:
    assert key(**{param: value}) == key()


def test_scopes_have_distinct_prefixes() -> None:
    keys = {scope: key(scope=scope) for scope in
            ("project:a", "project:ab", "agent_type:qa", "global")}
    for scope, k in keys.items():
        assert k.startswith(f"{KEY_PREFIX}{scope}:")
        others = [o for o in keys if o != scope]
        assert not any(k.startswith(f"{KEY_PREFIX}{o}:") for o in others)
