"""Step 1 of every call (DESIGN section 3): a call's arguments checked before anything is
reserved or written. Bad input raises `InvalidRequest` naming the fix."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from llmgw.errors import InvalidRequest
from llmgw.types import CompletionRequest

# Keys the gateway sets itself; a caller passing them would bypass routing or leak secrets.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "api_key", "api_base", "base_url",
                              "litellm_metadata", "fallbacks", "disable_fallbacks"})


def validate_call(agent_id: Any, project_id: Any, messages: Any, agent_type: Any,
                  model_group: Any, metadata: Any, params: dict[str, Any]) -> CompletionRequest:
    """The call as a `CompletionRequest`, or `InvalidRequest`; nothing is written either way."""
    reserved = sorted(_RESERVED_PARAMS & params.keys())
    if reserved:
        raise InvalidRequest(f"Parameter(s) {', '.join(reserved)} cannot be passed to complete().",
                             hint="Choose the model with model_group= or agent_type=; credentials "
                                  "and endpoints belong in model_list.yaml.")
    try:
        request = CompletionRequest(agent_id=agent_id, project_id=project_id, messages=messages,
                                    agent_type=agent_type, model_group=model_group,
                                    metadata=metadata or {}, params=params)
        if request.metadata:
            json.dumps(request.metadata)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise InvalidRequest(f"Invalid request: {problems}.",
                             hint="Pass agent_id, project_id and a non-empty list of "
                                  "{'role', 'content'} messages.") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"metadata must be JSON-serialisable: {exc}.") from None
    tools = params.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and t.get("type", "function") == "function" and
            isinstance(t.get("function"), dict) and t["function"].get("name") for t in tools)):
        raise InvalidRequest("tools must be a list of OpenAI-shaped function tools: "
                             "[{'type': 'function', 'function': {'name': ..., 'parameters': "
                             "{...}}}].", hint="Other tool types (e.g. MCP) are not supported.")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise InvalidRequest(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    return request
