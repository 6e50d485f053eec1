"""A call's LiteLLM parameters checked before anything is reserved: OpenAI's documented
ranges for the ones the gateway knows (sampling, token limits, retries, tools). Parameters
not known here pass through to LiteLLM (it accepts many), checked only for values no JSON
body, cache key or ledger can carry (NUL, lone surrogates, NaN, infinity)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

from llmgw.errors import InvalidRequest
from llmgw.types import nested_problem, text_problem

# Above every model's output limit today; keeps the worst case inside the ledger's BIGINT.
MAX_OUTPUT_TOKENS = 1_000_000
MAX_RETRIES = 10
MAX_STOP_SEQUENCES = 4
INT64 = (-(2**63), 2**63 - 1)


def check_params(params: dict[str, Any]) -> None:
    """Raise `InvalidRequest` naming the first bad parameter; None values count as absent."""
    for name, value in params.items():
        if value is None:  # LiteLLM treats None as not given
            continue
        check = _PARAM_CHECKS.get(name)
        if check is not None:
            check(name, value)
        elif why := nested_problem(value, name):
            refuse(f"{why}.", "Send text without NUL characters and numbers that are finite.")
    _check_token_limits(params)


def refuse(message: str, hint: str) -> NoReturn:
    raise InvalidRequest(f"Invalid request: {message}", hint=hint)


def shown(value: Any) -> str:
    """A bad value as the error shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _in_range(low: float, high: float, hint: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or not low <= value <= high:
            refuse(f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}.", hint)
    return check


def _positive_tokens(name: str, value: Any) -> None:
    if not _is_int(value) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        refuse(f"{name} must be a whole number from 1 to {MAX_OUTPUT_TOKENS:,}, got "
               f"{shown(value)}.", f"Pass {name} as an int: the most tokens the answer may use.")


def _check_n(name: str, value: Any) -> None:
    if not _is_int(value) or value != 1:
        refuse(f"n must be 1, got {shown(value)}: the gateway prices, caches and records one "
               "answer per request.", "Make one call per answer you need.")


def _check_stop(name: str, value: Any) -> None:
    hint = f"Pass stop as a str or a list of up to {MAX_STOP_SEQUENCES} str."
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, list | tuple) or len(items) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) for s in items)):
        refuse(f"stop must be a str or a list of at most {MAX_STOP_SEQUENCES} str, got "
               f"{shown(value)}.", hint)
    if why := nested_problem(list(items), "stop"):
        refuse(f"{why}.", hint)


def _check_seed(name: str, value: Any) -> None:
    if not _is_int(value) or not INT64[0] <= value <= INT64[1]:
        refuse(f"seed must be a 64-bit integer, got {shown(value)}.", "Pass seed as an int.")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        refuse(f"{name} must be True or False, got {shown(value)}.", f"Pass {name} as a bool.")


def _check_top_logprobs(name: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= 20:
        refuse(f"top_logprobs must be a whole number from 0 to 20, got {shown(value)}.",
               "Pass top_logprobs as an int (with logprobs=True).")


def _check_logit_bias(name: str, value: Any) -> None:
    hint = "Pass logit_bias as {token_id: bias} with biases from -100 to 100."
    if not isinstance(value, dict):
        refuse(f"logit_bias must be a dict, got {shown(value)}.", hint)
    for token, bias in value.items():
        if not (_is_int(token) or (isinstance(token, str) and token.isdigit())):
            refuse(f"logit_bias has a key {shown(token)} that is not a token id.", hint)
        if not _is_number(bias) or not -100 <= bias <= 100:
            refuse(f"logit_bias[{token!r}] must be a number from -100 to 100, got "
                   f"{shown(bias)}.", hint)


def _check_timeout(name: str, value: Any) -> None:
    # httpx.Timeout objects pass through; a bare number must be a usable number of seconds.
    if isinstance(value, bool) or (isinstance(value, int | float) and not (
            math.isfinite(value) and value > 0)):
        refuse(f"{name} must be a positive number of seconds, got {shown(value)}.",
               f"Pass {name} in seconds, e.g. 30.")


def _check_retries(name: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_RETRIES:
        refuse(f"{name} must be a whole number from 0 to {MAX_RETRIES}, got {shown(value)}.",
               "Set retries per group in router_settings of model_list.yaml.")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        refuse(f"{name} must be a str, got {shown(value)}.", f"Pass {name} as a str.")
    if why := text_problem(value):
        refuse(f"{name} {why}.", f"Pass {name} without NUL characters.")


def _check_tool_choice(name: str, value: Any) -> None:
    hint = ("Pass tool_choice as 'auto', 'none', 'required' or {'type': 'function', "
            "'function': {'name': ...}}.")
    if not isinstance(value, str | dict):
        refuse(f"tool_choice must be a str or a dict, got {shown(value)}.", hint)
    if why := nested_problem(value, "tool_choice"):
        refuse(f"{why}.", hint)


def _check_tools(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and t.get("type", "function") == "function" and
            isinstance(t.get("function"), dict) and t["function"].get("name") for t in value):
        raise InvalidRequest("tools must be a list of OpenAI-shaped function tools: "
                             "[{'type': 'function', 'function': {'name': ..., 'parameters': "
                             "{...}}}].", hint="Other tool types (e.g. MCP) are not supported.")
    if why := nested_problem(value, "tools"):
        refuse(f"{why}.", "Tool names, descriptions and schemas must not contain NUL characters "
                          "or non-finite numbers.")


def _check_max_cost(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0 or value > 1_000_000:
        refuse(f"max_cost_usd must be a positive number of dollars, got {shown(value)}.",
               "Pass max_cost_usd as the most this call may cost, e.g. 0.01.")


def _check_prefer(name: str, value: Any) -> None:
    if value not in ("cheapest", "fastest"):
        refuse(f"prefer must be 'cheapest' or 'fastest', got {shown(value)}.",
               "Pass prefer='cheapest' or prefer='fastest', or leave it out for the Router's "
               "routing strategy.")


_PARAM_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "max_cost_usd": _check_max_cost,
    "prefer": _check_prefer,
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
# The parameters checked by name above (`llmgw.pipeline.validation` lets them past its name checks).
CHECKED_PARAMS = frozenset(_PARAM_CHECKS)


def _check_token_limits(params: dict[str, Any]) -> None:
    """Both spellings bound the answer; the hold is sized by one, so they must agree."""
    max_tokens, max_completion = params.get("max_tokens"), params.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        refuse(f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion}) disagree.",
               "Pass one of them (max_completion_tokens is OpenAI's current name).")
