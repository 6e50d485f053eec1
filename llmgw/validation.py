"""Step 1 of every call (DESIGN section 3): a call's arguments checked before anything is
reserved or written. Bad input raises `InvalidRequest` naming the parameter and the fix.

Everything is checked against the strictest place a value goes: PostgreSQL's text and json
(no NUL, no lone surrogate, no NaN or infinity), the ledger's column sizes, and OpenAI's
documented ranges for the sampling parameters. Parameters not known here pass through to
LiteLLM (it accepts many), checked only for values no JSON body or ledger can carry."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from llmgw.errors import InvalidRequest
from llmgw.types import MAX_NESTING, CompletionRequest, nested_problem, text_problem

# Keys the gateway sets itself; a caller passing them would bypass routing or leak secrets.
_RESERVED_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "api_key", "api_base", "base_url",
    "api_version", "organization", "litellm_metadata", "fallbacks", "disable_fallbacks",
    "custom_llm_provider", "base_model", "model_info", "specific_deployment",
    "azure_ad_token", "azure_ad_token_provider", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "vertex_credentials"})
# A per-call price makes LiteLLM register it for the model process-wide (`register_model`):
# a caller could set what every later request is charged. Prices live in model_list.yaml.
_PRICE_MARKERS = ("_cost", "cost_")
# LiteLLM's test hooks answer without the provider; the answer would then be cached and
# served to the project as a real one (mock_response is not part of the cache key).
_MOCK_PREFIX = "mock_"

# Above every model's output limit today; keeps the worst case inside the ledger's BIGINT.
MAX_OUTPUT_TOKENS = 1_000_000
MAX_RETRIES = 10
MAX_STOP_SEQUENCES = 4
INT64 = (-(2**63), 2**63 - 1)
# A ledger row's metadata, as JSON text: tags and ids, not documents.
MAX_METADATA_CHARS = 16_384
_GATEWAY_METADATA_KEY = "llmgw"  # the gateway's own notes in each row's metadata


def validate_call(agent_id: Any, project_id: Any, messages: Any, agent_type: Any,
                  model_group: Any, metadata: Any, params: dict[str, Any]) -> CompletionRequest:
    """The call as a `CompletionRequest`, or `InvalidRequest`; nothing is written either way."""
    _check_param_names(params)
    try:
        request = CompletionRequest(agent_id=agent_id, project_id=project_id, messages=messages,
                                    agent_type=agent_type, model_group=model_group,
                                    metadata=metadata or {}, params=params)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in errors)
        first = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else ""
        raise InvalidRequest(f"Invalid request: {problems}.",
                             hint=_FIELD_HINTS.get(first, _MESSAGES_HINT)) from None
    _check_metadata(request.metadata)
    for name, value in params.items():
        if value is None:  # LiteLLM treats None as not given
            continue
        check = _PARAM_CHECKS.get(name)
        if check is not None:
            check(name, value)
        elif why := nested_problem(value, name):
            _bad(f"{why}.", "Send text without NUL characters and numbers that are finite.")
    _check_token_limits(params)
    return request


_MESSAGES_HINT = ("Pass a non-empty list of {'role', 'content'} messages whose text has no "
                  "NUL characters and is valid UTF-8.")
_ID_HINT = ("Ids are 1-200 characters of printable text (no NUL, newline or other control "
            "characters), as the ledger stores them.")
_FIELD_HINTS = {"agent_id": _ID_HINT, "project_id": _ID_HINT, "agent_type": _ID_HINT,
                "model_group": _ID_HINT + " model_group names a group of model_list.yaml.",
                "messages": _MESSAGES_HINT, "metadata": "Pass metadata as a dict with str keys."}


def _bad(message: str, hint: str) -> None:
    raise InvalidRequest(f"Invalid request: {message}", hint=hint)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_param_names(params: dict[str, Any]) -> None:
    names = sorted(params)
    mocks = [k for k in names if k.startswith(_MOCK_PREFIX)]
    if mocks:
        _bad(f"{', '.join(mocks)}: LiteLLM's test hooks answer without the provider, and the "
             "answer would be cached and recorded as a real one.",
             "For canned answers run a simulator (`llmgw sim`) as a deployment.")
    prices = [k for k in names if any(m in k for m in _PRICE_MARKERS)]
    if prices:
        _bad(f"{', '.join(prices)}: a per-call price would change what every later request "
             "of the model is charged.", "Prices belong in model_list.yaml (model_info).")
    reserved = [k for k in names if k in _RESERVED_PARAMS]
    if reserved:
        raise InvalidRequest(f"Parameter(s) {', '.join(reserved)} cannot be passed to complete().",
                             hint="Choose the model with model_group= or agent_type=; credentials "
                                  "and endpoints belong in model_list.yaml; the gateway sets "
                                  "stream and stream_options itself (use stream()).")


def _check_metadata(metadata: dict[str, Any]) -> None:
    """Metadata is stored as JSON in every ledger row: plain JSON that PostgreSQL accepts."""
    hint = ("Pass metadata as a small JSON object: str keys; values str, finite numbers, bools, "
            "None, lists and dicts; no NUL characters.")
    if _GATEWAY_METADATA_KEY in metadata:
        _bad(f"metadata[{_GATEWAY_METADATA_KEY!r}] is reserved for the gateway's own notes.",
             "Rename the key.")
    why = _json_problem(metadata, "metadata", 0)
    if why:
        _bad(f"{why}.", hint)
    size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
    if size > MAX_METADATA_CHARS:
        _bad(f"metadata is {size} characters as JSON, over the limit of {MAX_METADATA_CHARS}.",
             "Keep ids and tags in metadata; store documents elsewhere and pass their id.")


def _json_problem(value: Any, path: str, depth: int) -> str | None:
    """Why `value` is not plain JSON a ledger can store, or None."""
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and not (
                INT64[0] <= value <= INT64[1]):
            return f"{path} is an integer outside 64 bits"
        return None
    if isinstance(value, str | float):
        return nested_problem(value, path)
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_NESTING:
            return f"{path} is nested more than {MAX_NESTING} levels deep"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"{path} has a key {_shown(key)} that is not a str"
                if why := text_problem(key):
                    return f"{path} has a key {key!r} that {why}"
                if found := _json_problem(item, f"{path}[{key!r}]", depth + 1):
                    return found
            return None
        for i, item in enumerate(value):
            if found := _json_problem(item, f"{path}[{i}]", depth + 1):
                return found
        return None
    return f"{path} is of type {type(value).__name__}, which is not JSON"


# -- sampling parameters (OpenAI's ranges) -------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _in_range(low: float, high: float, hint: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or not low <= value <= high:
            _bad(f"{name} must be a number from {low:g} to {high:g}, got {_shown(value)}.", hint)
    return check


def _positive_tokens(name: str, value: Any) -> None:
    if not _is_int(value) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        _bad(f"{name} must be a whole number from 1 to {MAX_OUTPUT_TOKENS:,}, got "
             f"{_shown(value)}.", f"Pass {name} as an int: the most tokens the answer may use.")


def _check_n(name: str, value: Any) -> None:
    if not _is_int(value) or value != 1:
        _bad(f"n must be 1, got {_shown(value)}: the gateway prices, caches and records one "
             "answer per request.", "Make one call per answer you need.")


def _check_stop(name: str, value: Any) -> None:
    hint = f"Pass stop as a str or a list of up to {MAX_STOP_SEQUENCES} str."
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, list | tuple) or len(items) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) for s in items)):
        _bad(f"stop must be a str or a list of at most {MAX_STOP_SEQUENCES} str, got "
             f"{_shown(value)}.", hint)
    if why := nested_problem(list(items), "stop"):
        _bad(f"{why}.", hint)


def _check_seed(name: str, value: Any) -> None:
    if not _is_int(value) or not INT64[0] <= value <= INT64[1]:
        _bad(f"seed must be a 64-bit integer, got {_shown(value)}.", "Pass seed as an int.")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _bad(f"{name} must be True or False, got {_shown(value)}.", f"Pass {name} as a bool.")


def _check_top_logprobs(name: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= 20:
        _bad(f"top_logprobs must be a whole number from 0 to 20, got {_shown(value)}.",
             "Pass top_logprobs as an int (with logprobs=True).")


def _check_logit_bias(name: str, value: Any) -> None:
    hint = "Pass logit_bias as {token_id: bias} with biases from -100 to 100."
    if not isinstance(value, dict):
        _bad(f"logit_bias must be a dict, got {_shown(value)}.", hint)
    for token, bias in value.items():
        if not (_is_int(token) or (isinstance(token, str) and token.isdigit())):
            _bad(f"logit_bias has a key {_shown(token)} that is not a token id.", hint)
        if not _is_number(bias) or not -100 <= bias <= 100:
            _bad(f"logit_bias[{token!r}] must be a number from -100 to 100, got "
                 f"{_shown(bias)}.", hint)


def _check_timeout(name: str, value: Any) -> None:
    # httpx.Timeout objects pass through; a bare number must be a usable number of seconds.
    if isinstance(value, bool) or (isinstance(value, int | float) and not (
            math.isfinite(value) and value > 0)):
        _bad(f"{name} must be a positive number of seconds, got {_shown(value)}.",
             f"Pass {name} in seconds, e.g. 30.")


def _check_retries(name: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_RETRIES:
        _bad(f"{name} must be a whole number from 0 to {MAX_RETRIES}, got {_shown(value)}.",
             "Set retries per group in router_settings of model_list.yaml.")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        _bad(f"{name} must be a str, got {_shown(value)}.", f"Pass {name} as a str.")
    if why := text_problem(value):
        _bad(f"{name} {why}.", f"Pass {name} without NUL characters.")


def _check_tool_choice(name: str, value: Any) -> None:
    hint = ("Pass tool_choice as 'auto', 'none', 'required' or {'type': 'function', "
            "'function': {'name': ...}}.")
    if not isinstance(value, str | dict):
        _bad(f"tool_choice must be a str or a dict, got {_shown(value)}.", hint)
    if why := nested_problem(value, "tool_choice"):
        _bad(f"{why}.", hint)


def _check_tools(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and t.get("type", "function") == "function" and
            isinstance(t.get("function"), dict) and t["function"].get("name") for t in value):
        raise InvalidRequest("tools must be a list of OpenAI-shaped function tools: "
                             "[{'type': 'function', 'function': {'name': ..., 'parameters': "
                             "{...}}}].", hint="Other tool types (e.g. MCP) are not supported.")
    if why := nested_problem(value, "tools"):
        _bad(f"{why}.", "Tool names, descriptions and schemas must not contain NUL characters "
                        "or non-finite numbers.")


_PARAM_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "temperature": _in_range(0, 2, "Pass temperature from 0 (repeatable) to 2 (most varied)."),
    "top_p": _in_range(0, 1, "Pass top_p from 0 to 1 (1 keeps every token)."),
    "presence_penalty": _in_range(-2, 2, "Pass presence_penalty from -2 to 2."),
    "frequency_penalty": _in_range(-2, 2, "Pass frequency_penalty from -2 to 2."),
    "max_tokens": _positive_tokens,
    "max_completion_tokens": _positive_tokens,
    "n": _check_n,
    "stop": _check_stop,
    "seed": _check_seed,
    "logprobs": _check_bool,
    "parallel_tool_calls": _check_bool,
    "top_logprobs": _check_top_logprobs,
    "logit_bias": _check_logit_bias,
    "timeout": _check_timeout,
    "request_timeout": _check_timeout,
    "num_retries": _check_retries,
    "max_retries": _check_retries,
    "user": _check_text,
    "tool_choice": _check_tool_choice,
    "tools": _check_tools,
}


def _check_token_limits(params: dict[str, Any]) -> None:
    """Both spellings bound the answer; the hold is sized by one, so they must agree."""
    max_tokens, max_completion = params.get("max_tokens"), params.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        _bad(f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion}) disagree.",
             "Pass one of them (max_completion_tokens is OpenAI's current name).")
