"""Step 1 of every call (docs/architecture.md): a call's arguments checked before anything is
reserved or written. Bad input raises `InvalidRequest` naming the parameter and the fix.

Ids and metadata are checked against the strictest place they go: PostgreSQL's text and json
(no NUL, no lone surrogate, no NaN or infinity) and the ledger's column sizes. The LiteLLM
parameters are checked by `llmgw.pipeline.params`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmgw.errors import InvalidRequest
from llmgw.pipeline.params import CHECKED_PARAMS, INT64, check_params, refuse, shown
from llmgw.types import (
    MAX_NESTING,
    CompletionRequest,
    IdText,
    check_id_text,
    nested_problem,
    text_problem,
)

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

# The parameters `llmgw.pipeline.params` checks by name: none is a test hook, a price or reserved.
_CHECKED_PARAMS = frozenset(
    name for name in CHECKED_PARAMS if name not in _RESERVED_PARAMS
    and not name.startswith(_MOCK_PREFIX) and not any(m in name for m in _PRICE_MARKERS))

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
    if request.metadata:  # most calls pass none: nothing to check
        _check_metadata(request.metadata)
    if params:
        check_params(params)
    return request


_ID_ADAPTER: TypeAdapter[str] = TypeAdapter(IdText)


def validate_id(name: str, value: Any) -> str:
    """An agent id, project id, agent type or group name as every ledger stores it, for ids
    that reach the ledger without a call (e.g. `register_agent`); `InvalidRequest` if not."""
    try:
        return check_id_text(_ID_ADAPTER.validate_python(value))
    except (ValidationError, ValueError) as exc:
        why = (exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc))
        raise InvalidRequest(f"Invalid request: {name}: {why}.", hint=_ID_HINT) from None


def validate_optional_id(name: str, value: Any) -> str | None:
    """`validate_id` for an id a call may leave out (a session, an end user)."""
    return None if value is None else validate_id(name, value)


def group_of(model: Any) -> str | None:
    """A client's model name as a group request: `auto` or none is the agent type's group."""
    return None if model in (None, "", "auto") else model


_MESSAGES_HINT = ("Pass a non-empty list of {'role', 'content'} messages whose text has no "
                  "NUL characters and is valid UTF-8.")
_ID_HINT = ("Ids are 1-200 characters of printable text (no NUL, newline or other control "
            "characters), as the ledger stores them.")
_FIELD_HINTS = {"agent_id": _ID_HINT, "project_id": _ID_HINT, "agent_type": _ID_HINT,
                "model_group": _ID_HINT + " model_group names a group of model_list.yaml.",
                "messages": _MESSAGES_HINT, "metadata": "Pass metadata as a dict with str keys."}


def _check_param_names(params: dict[str, Any]) -> None:
    if params.keys() <= _CHECKED_PARAMS:  # the parameters llmgw checks: none is refused here
        return
    names = sorted(params)
    mocks = [k for k in names if k.startswith(_MOCK_PREFIX)]
    if mocks:
        refuse(f"{', '.join(mocks)}: LiteLLM's test hooks answer without the provider, and the "
               "answer would be cached and recorded as a real one.",
               "For canned answers run a simulator (`llmgw sim`) as a deployment.")
    prices = [k for k in names if any(m in k for m in _PRICE_MARKERS) and k != "max_cost_usd"]
    if prices:
        refuse(f"{', '.join(prices)}: a per-call price would change what every later request "
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
        refuse(f"metadata[{_GATEWAY_METADATA_KEY!r}] is reserved for the gateway's own notes.",
               "Rename the key.")
    why = _json_problem(metadata, "metadata", 0)
    if why:
        refuse(f"{why}.", hint)
    size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
    if size > MAX_METADATA_CHARS:
        refuse(f"metadata is {size} characters as JSON, over the limit of {MAX_METADATA_CHARS}.",
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
                    return f"{path} has a key {shown(key)} that is not a str"
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
