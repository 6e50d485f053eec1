"""OpenAI Responses: `Router.aresponses`, native for OpenAI deployments and LiteLLM's
chat-completions bridge for the others.

llmgw reads what its policies need (model, input and tools for the token count,
`max_output_tokens`, `stream`, `store`, `previous_response_id`) and passes the rest on; fields
LiteLLM does not know go as `extra_body` to native deployments, and LiteLLM's `drop_params`
decides for the bridged ones. Continuations are llmgw's: a stored response's input and output
are the next request's history, so `previous_response_id` works on every deployment and
across fallbacks, scoped by project (`llmgw.ledger.response_store`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmgw._litellm import hidden_params, import_litellm, text_count_function
from llmgw._litellm.messages import cost_of_usage
from llmgw._litellm.responses_api import DROPPED_TOOLS, chat_usage, to_chat_messages
from llmgw.budgets.pricing import to_micros
from llmgw.dialects.base import Call, Served, wire_completion
from llmgw.errors import InvalidRequest
from llmgw.redact import Redactor
from llmgw.types import (
    AttemptStatus,
    Completion,
    StreamDone,
    StreamEvent,
    Usage,
    WireEvent,
    nested_problem,
)

# The request fields LiteLLM's Responses call takes by name; the rest go as extra_body.
_KNOWN = frozenset({
    "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "store",
    "include", "prompt_cache_key", "prompt_cache_retention", "max_output_tokens", "temperature",
    "top_p", "text", "truncation", "user", "metadata", "service_tier", "safety_identifier",
    "background", "max_tool_calls", "top_logprobs", "context_management", "prompt",
    "stream_options"})
_RESERVED = frozenset({"api_key", "api_base", "base_url", "litellm_metadata", "fallbacks",
                       "custom_llm_provider", "model_info", "extra_headers", "mock_response",
                       "specific_deployment", "litellm_logging_obj", "extra_body"})


class ResponsesRequest(BaseModel):
    """OpenAI's Responses request, as far as llmgw reads it; every other field is kept and
    sent on. `model` is a group, an alias (`llmgw.model_aliases`) or `auto`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "auto", "input": "Hello", "max_output_tokens": 64},
        {"model": "auto", "input": "Hello", "max_output_tokens": 64, "stream": True}]})

    model: str = Field(default="auto", max_length=200)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    max_output_tokens: int | None = Field(default=None, gt=0, le=2**31 - 1)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=400)


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's `input` as items (a plain string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [dict(item) for item in value]


def check_responses_body(body: Mapping[str, Any]) -> ResponsesRequest:
    """The request as llmgw reads it, or `InvalidRequest` (nothing written)."""
    try:
        request = ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:10])
        raise InvalidRequest(f"Invalid Responses request: {problems}.",
                             hint="See the OpenAI Responses API reference for the shape.") from None
    reserved = sorted(_RESERVED & set(body))
    if reserved:
        raise InvalidRequest(f"The Responses request sets {', '.join(reserved)}, which llmgw "
                             "sets itself.", hint="Leave them out; the gateway routes the call.")
    problem = nested_problem(dict(body), "body")
    if problem:
        raise InvalidRequest(f"The request cannot be stored: {problem}.")
    return request


def responses_call(agent_id: str, project_id: str, body: Mapping[str, Any], *,
                   agent_type: str | None, model_group: str | None, metadata: dict[str, Any],
                   default_max_tokens: int,
                   llmgw_params: Mapping[str, Any] | None = None) -> Call:
    """A Responses request (its history already expanded from a stored response) ready for
    the pipeline."""
    sent = {k: v for k, v in body.items()
            if k not in ("model", "stream", "previous_response_id")}
    try:
        messages, tools = to_chat_messages(sent)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(f"The Responses request cannot be read: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from None
    if not messages:
        raise InvalidRequest("The Responses request has no input.",
                             hint="Send `input` as a string or a list of items.")
    max_tokens = body.get("max_output_tokens") or default_max_tokens
    params: dict[str, Any] = {"max_tokens": max_tokens}
    if tools:
        params["tools"] = tools
    cache_params = {"dialect": "responses", **{k: v for k, v in sent.items()
                                               if k not in ("input", "metadata", "user")}}
    return Call(agent_id=agent_id, project_id=project_id, agent_type=agent_type,
                model_group=model_group, metadata=metadata, message_dicts=messages,
                params=params, body=sent, cache_params=cache_params,
                constraints=dict(llmgw_params or {}))


class ResponsesDialect:
    name = "responses"

    async def send(self, router: Any, group: str, call: Call, extras: dict[str, Any],
                   metadata: dict[str, Any], *, stream: bool) -> Any:
        kwargs: dict[str, Any] = {k: v for k, v in call.body.items() if k in _KNOWN}
        unknown = {k: v for k, v in call.body.items() if k not in _KNOWN}
        if unknown:
            kwargs["extra_body"] = unknown
        extras = dict(extras)
        if "max_tokens" in extras:  # the planner's bound, in this API's own name
            kwargs.setdefault("max_output_tokens", extras.pop("max_tokens"))
        kwargs.update(extras)
        return await router.aresponses(model=group, stream=stream, litellm_metadata=metadata,
                                       drop_params=True, **kwargs)

    def answer(self, response: Any, served: Served) -> Completion:
        body = _dump(response)
        return _completion(body, hidden_params(response), served, status="ok", error=None,
                           redactor=None)

    def accumulator(self, call: Call, request_id: str) -> ResponsesStream:
        return ResponsesStream(call, request_id)

    def replay(self, completion: Completion) -> list[StreamEvent]:
        body = completion.body or {}
        rid = completion.request_id
        events: list[tuple[str, dict[str, Any]]] = [("response.created", {"type": "response.created",
                                        "response": {**body, "status": "in_progress",
                                                     "output": []}})]
        for index, item in enumerate(body.get("output") or []):
            events.append(("response.output_item.added", {
                "type": "response.output_item.added", "output_index": index, "item": item}))
            events.append(("response.output_item.done", {
                "type": "response.output_item.done", "output_index": index, "item": item}))
        events.append(("response.completed", {"type": "response.completed", "response": body}))
        out: list[StreamEvent] = []
        for number, (name, data) in enumerate(events):
            data = {**data, "sequence_number": number}
            out.append(WireEvent(event=name, data=data, raw=_sse(name, data), request_id=rid))
        return out


def continued(event: StreamEvent, previous_id: str) -> StreamEvent:
    """A stream event that names the response it continues, as OpenAI's do (llmgw expands
    the history itself, so the provider's response does not know it)."""
    if isinstance(event, StreamDone) and event.completion.body is not None:
        event.completion.body["previous_response_id"] = previous_id
    elif isinstance(event, WireEvent) and isinstance(event.data.get("response"), dict):
        data = {**event.data, "response": {**event.data["response"],
                                           "previous_response_id": previous_id}}
        return event.model_copy(update={"data": data, "raw": _sse(event.event, data)})
    return event


def _dump(response: Any) -> dict[str, Any]:
    if hasattr(response, "model_dump"):
        return cast(dict[str, Any], response.model_dump(mode="json", exclude_none=True))
    return dict(response)


def _sse(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def usage_of(usage: Mapping[str, Any]) -> Usage:
    """Responses usage in llmgw's shape: input includes cache reads, output includes
    reasoning."""
    def n(value: Any) -> int:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0
    inp = usage.get("input_tokens_details") or {}
    out = usage.get("output_tokens_details") or {}
    return Usage.model_construct(
        prompt_tokens=n(usage.get("input_tokens")), completion_tokens=n(usage.get("output_tokens")),
        cached_tokens=n(inp.get("cached_tokens")) if isinstance(inp, Mapping) else 0,
        # the Responses shape has cache writes (LiteLLM's bridge fills them) but no 1-hour part
        cache_write_tokens=n(inp.get("cache_write_tokens")) if isinstance(inp, Mapping) else 0,
        cache_write_1h_tokens=0,
        reasoning_tokens=n(out.get("reasoning_tokens")) if isinstance(out, Mapping) else 0)


def _completion(body: dict[str, Any], hidden: Mapping[str, Any], served: Served, *,
                status: AttemptStatus, error: BaseException | None, redactor: Redactor | None,
                counted_output: int | None = None) -> Completion:
    """The Completion of a Responses answer (whole, or as far as a stream got), priced by
    LiteLLM from the provider's whole usage at the serving deployment's prices."""
    deployment_id = hidden.get("model_id")
    dep = served.config.deployment(deployment_id) if deployment_id else None
    raw_usage = dict(body.get("usage") or {})
    if counted_output is not None:
        raw_usage["output_tokens"] = max(int(raw_usage.get("output_tokens") or 0), counted_output)
    usage = usage_of(raw_usage)
    # LiteLLM's own price of the provider's whole usage when it gave one (a bridged answer's
    # usage shape has no 1-hour cache-write field; LiteLLM priced the usage beneath it), else
    # LiteLLM's price of this usage (a cut stream's, counted).
    given = None if counted_output is not None else (
        raw_usage.get("cost") if raw_usage.get("cost") is not None
        else hidden.get("response_cost"))
    if given is not None:
        cost = to_micros(given)
    else:
        cost = to_micros(cost_of_usage(dep.litellm_params.model, dep.id,
                                       chat_usage(raw_usage))) if dep and raw_usage else 0
    dropped = DROPPED_TOOLS.pop(served.ctx.request_id, None)
    text, tool_calls = _text_and_tools(body.get("output") or [])
    return wire_completion(
        served, hidden, body, dialect="responses", usage=usage, cost_micros=cost,
        status=status, error=error, redactor=redactor, text=text, tool_calls=tool_calls,
        finish_reason=body.get("status"),
        provider_details={"dropped_tool_types": sorted(set(dropped))} if dropped else None)


def _text_and_tools(items: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    text = "".join(part.get("text") or "" for item in items if isinstance(item, dict)
                   and item.get("type") == "message" for part in item.get("content") or []
                   if isinstance(part, dict) and part.get("type") == "output_text")
    tools = [{"id": item.get("call_id") or item.get("id"), "type": "function",
              "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}
             for item in items if isinstance(item, dict) and item.get("type") == "function_call"]
    return text, tools


class ResponsesStream:
    """A Responses stream's events as they came (each a `WireEvent`), and the response they
    add up to: `response.completed` carries it whole; a cut stream keeps what was said."""

    def __init__(self, call: Call, request_id: str) -> None:
        self.call = call
        self.request_id = request_id
        self.shown = 0
        self.response: dict[str, Any] = {}
        self.items: dict[int, dict[str, Any]] = {}
        self.text: list[str] = []
        self.completed = False

    @property
    def empty(self) -> bool:
        return self.shown == 0

    def add(self, chunk: Any) -> list[StreamEvent]:
        data = _dump(chunk)
        kind = str(data.get("type") or "message")
        # LiteLLM's chat bridge leaves most events unnumbered; clients order by the number
        data.setdefault("sequence_number", self.shown)
        if kind in ("response.created", "response.in_progress") and data.get("response"):
            self.response = dict(data["response"])
        elif kind == "response.output_item.done" and isinstance(data.get("item"), dict):
            self.items[int(data.get("output_index") or 0)] = data["item"]
        elif kind == "response.output_text.delta":
            self.text.append(str(data.get("delta") or ""))
        elif kind == "response.function_call_arguments.delta":
            self.text.append(str(data.get("delta") or ""))
        elif kind == "response.completed" and data.get("response"):
            self.response, self.completed = dict(data["response"]), True
        elif kind in ("response.failed", "error"):
            error = (data.get("response") or {}).get("error") or data.get("error") or data
            raise ProviderStreamError(str(error.get("message") or kind))
        self.shown += 1
        return [WireEvent(event=kind, data=data, raw=_sse(kind, data),
                          request_id=self.request_id)]

    def completion(self, response: Any, served: Served, redactor: Redactor, *,
                   status: AttemptStatus, error: BaseException | None) -> Completion:
        body = dict(self.response)
        if not self.completed:
            body["output"] = [self.items[i] for i in sorted(self.items)]
        counted = None
        if not self.completed or not body.get("usage"):
            dep_id = hidden_params(response).get("model_id")
            dep = served.config.deployment(dep_id) if dep_id else None
            model = dep.litellm_params.model if dep else "gpt-4o"
            count = cast(Callable[[str], int], text_count_function(model))
            text = "".join(self.text)
            counted = int(count(text)) if text else 0
            if not body.get("usage"):  # cut before the provider reported any: count the prompt
                prompt = import_litellm().token_counter(model=model,
                                                        messages=self.call.message_dicts)
                body["usage"] = {"input_tokens": int(prompt), "output_tokens": 0}
        return _completion(body, hidden_params(response), served, status=status, error=error,
                           redactor=redactor, counted_output=counted)


class ProviderStreamError(Exception):
    """A `response.failed` or `error` event inside a provider's stream."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = 500


RESPONSES = ResponsesDialect()
