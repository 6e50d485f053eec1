"""Anthropic Messages: `Router.aanthropic_messages`, a native pass-through to Anthropic
deployments and LiteLLM's translation for the others.

llmgw validates what its policies read (model, messages and tools for the token count,
`max_tokens`, `stream`, the identity fields) and passes every other field through unchanged,
so `thinking`, `context_management`, `output_config`, betas and whatever Anthropic adds next
reach the provider; LiteLLM's `drop_params` decides for providers that cannot take one. On a
native path the answer and every SSE event are what the provider sent."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmgw._litellm import hidden_params, text_count_function
from llmgw._litellm.messages import (
    PASSTHROUGH_KEY,
    answer_as_sse,
    cost_of_usage,
    known_fields,
    litellm_usage,
    to_openai_request,
)
from llmgw.budgets.pricing import to_micros
from llmgw.dialects.base import Call, Served, caching_asked, wire_completion
from llmgw.errors import InvalidRequest
from llmgw.redact import Redactor
from llmgw.types import (
    AttemptStatus,
    Completion,
    StreamEvent,
    Usage,
    WireEvent,
    nested_problem,
)

# Headers of the caller that go to Anthropic deployments as they came.
FORWARDED_HEADERS = ("anthropic-beta",)
# What llmgw itself sets on the call; a body field of these names would bypass routing.
_RESERVED = frozenset({"model", "stream", "api_key", "api_base", "base_url", "litellm_metadata",
                       "fallbacks", "custom_llm_provider", "model_info", "extra_headers",
                       "mock_response", "specific_deployment", "litellm_logging_obj"})


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    # `system` inside `messages` too: Claude Code sends one, and Anthropic takes it.
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """Anthropic's Messages request, as far as llmgw reads it; every other field is kept and
    sent on. `model` is a model group, an alias (`llmgw.model_aliases`) or `auto`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
        {"model": "auto", "max_tokens": 64, "stream": True,
         "messages": [{"role": "user", "content": "Hello"}]}]})

    model: str = Field(max_length=200)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(gt=0, le=2**31 - 1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


def messages_call(agent_id: str, project_id: str, body: Mapping[str, Any], *,
                  agent_type: str | None, model_group: str | None, metadata: dict[str, Any],
                  headers: Mapping[str, str] | None = None,
                  llmgw_params: Mapping[str, Any] | None = None) -> tuple[Call, bool]:
    """A Messages request checked and ready for the pipeline, and whether it streams;
    `InvalidRequest` (nothing written) when it is not a request we can count and route. The
    ids, metadata and llmgw's own parameters were checked by the caller (`validate_call`)."""
    try:
        request = MessagesRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:10])
        raise InvalidRequest(f"Invalid Messages request: {problems}.",
                             hint="See the Anthropic Messages API reference for the shape.") from None
    reserved = sorted(_RESERVED & (set(body) - {"model", "stream"}))
    if reserved:
        raise InvalidRequest(f"The Messages request sets {', '.join(reserved)}, which llmgw "
                             "sets itself.", hint="Leave them out; the gateway routes the call.")
    problem = nested_problem(dict(body), "body")
    if problem:
        raise InvalidRequest(f"The request cannot be stored: {problem}.")
    sent = {k: v for k, v in body.items() if k not in ("model", "stream")}
    try:
        translated = to_openai_request({**sent, "model": request.model})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(f"The Messages request cannot be read: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from None
    params: dict[str, Any] = {"max_tokens": request.max_tokens}
    for key in ("tools", "tool_choice"):
        if translated.get(key):
            params[key] = translated[key]
    forwarded = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED_HEADERS}
    cache_params = {"dialect": "anthropic",
                    **{k: v for k, v in sent.items() if k not in ("messages", "metadata")}}
    call = Call(agent_id=agent_id, project_id=project_id, agent_type=agent_type,
                model_group=model_group, metadata=metadata,
                message_dicts=list(translated.get("messages") or []), params=params, body=sent,
                headers=forwarded, cache_params=cache_params, constraints=dict(llmgw_params or {}),
                caching=caching_asked(body.get("system"), body.get("messages"), body.get("tools")))
    return call, request.stream


class MessagesDialect:
    name = "anthropic"

    async def send(self, router: Any, group: str, call: Call, extras: dict[str, Any],
                   metadata: dict[str, Any], *, stream: bool) -> Any:
        known = known_fields()
        kwargs: dict[str, Any] = {k: v for k, v in call.body.items() if k in known}
        unknown = {k: v for k, v in call.body.items() if k not in known}
        if unknown:  # sent on as they came (llmgw._litellm.messages.install_passthrough)
            kwargs[PASSTHROUGH_KEY] = unknown
        kwargs.update(extras)
        if call.headers:
            kwargs["extra_headers"] = dict(call.headers)
        # Anthropic's `metadata` is the provider's (user_id); LiteLLM's is litellm_metadata.
        return await router.aanthropic_messages(model=group, stream=stream,
                                                litellm_metadata=metadata, **kwargs)

    def answer(self, response: Any, served: Served) -> Completion:
        message = dict(response)
        hidden = message.pop("_hidden_params", None) or hidden_params(response)
        return _completion(message, hidden, served, status="ok", error=None, redactor=None)

    def accumulator(self, call: Call, request_id: str) -> MessagesStream:
        return MessagesStream(request_id)

    def replay(self, completion: Completion) -> list[StreamEvent]:
        return replay_events(completion)


def _completion(message: dict[str, Any], hidden: Mapping[str, Any], served: Served, *,
                status: AttemptStatus, error: BaseException | None,
                redactor: Redactor | None, counted_output: int | None = None) -> Completion:
    """The Completion of an Anthropic-shaped answer (whole or as far as a stream got), priced
    by LiteLLM from the provider's whole usage at the serving deployment's prices."""
    deployment_id = hidden.get("model_id")
    dep = served.config.deployment(deployment_id) if deployment_id else None
    raw_usage = dict(message.get("usage") or {})
    if counted_output is not None:
        raw_usage["output_tokens"] = max(int(raw_usage.get("output_tokens") or 0), counted_output)
    usage = usage_of(raw_usage)
    cost = to_micros(cost_of_usage(dep.litellm_params.model, dep.id, litellm_usage(raw_usage))) \
        if dep and raw_usage else 0
    text, tool_calls = _text_and_tools(message.get("content") or [])
    return wire_completion(served, hidden, message, dialect="anthropic", usage=usage,
                           cost_micros=cost, status=status, error=error, redactor=redactor,
                           text=text, tool_calls=tool_calls,
                           finish_reason=message.get("stop_reason"))


def usage_of(usage: Mapping[str, Any]) -> Usage:
    """Anthropic's usage in llmgw's shape: prompt tokens include cache reads and writes."""
    def n(value: Any) -> int:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0
    read, written = n(usage.get("cache_read_input_tokens")), n(usage.get("cache_creation_input_tokens"))
    found = usage.get("cache_creation")
    split: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return Usage.model_construct(
        prompt_tokens=n(usage.get("input_tokens")) + read + written,
        completion_tokens=n(usage.get("output_tokens")), cached_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=n(split.get("ephemeral_1h_input_tokens")), reasoning_tokens=0)


def _text_and_tools(blocks: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    text = "".join(b.get("text") or "" for b in blocks
                   if isinstance(b, dict) and b.get("type") == "text")
    tools = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}}
             for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
    return text, tools


class ProviderStreamError(Exception):
    """An `error` event inside a provider's stream (e.g. `overloaded_error`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.message = message
        self.status_code = {"overloaded_error": 529, "rate_limit_error": 429,
                            "api_error": 500, "invalid_request_error": 400}.get(kind, 500)


class MessagesStream:
    """A Messages stream as it came (server-sent events, each passed on as a `WireEvent`
    with the provider's own bytes), and the message it adds up to."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.buffer = b""
        self.shown = 0
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] = {}
        self.deltas_seen = False

    @property
    def empty(self) -> bool:
        return self.shown == 0

    def add(self, chunk: Any) -> list[StreamEvent]:
        if isinstance(chunk, dict):  # a frame LiteLLM already parsed
            chunk = f"event: {chunk.get('type')}\ndata: {json.dumps(chunk)}\n\n".encode()
        self.buffer += chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        events: list[StreamEvent] = []
        while True:
            end = _frame_end(self.buffer)
            if end is None:
                break
            frame, self.buffer = self.buffer[:end], self.buffer[end:]
            event = self._parse(frame)
            if event is not None:
                events.append(event)
        self.shown += len(events)
        return events

    def _parse(self, frame: bytes) -> WireEvent | None:
        name, data_lines = None, []
        for line in frame.decode("utf-8", "replace").splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data_lines.append(line[5:].lstrip())
        if not data_lines:
            return None
        try:
            data = json.loads("\n".join(data_lines))
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        kind = data.get("type") or name or "message"
        self._note(kind, data)
        return WireEvent(event=name or kind, data=data, raw=frame.decode("utf-8", "replace"),
                         request_id=self.request_id)

    def _note(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "message_start":
            self.message = dict(data.get("message") or {})
            self.usage.update(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[int(data.get("index") or 0)] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(int(data.get("index") or 0), {"type": "text"})
            delta = data.get("delta") or {}
            for field, into in (("text", "text"), ("thinking", "thinking"),
                                ("partial_json", "_json"), ("signature", "signature")):
                if field in delta:
                    block[into] = (block.get(into) or "") + str(delta[field])
        elif kind == "message_delta":
            self.deltas_seen = True
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            self.message.update({k: v for k, v in (data.get("delta") or {}).items()})
        elif kind == "error":
            err = data.get("error") or {}
            raise ProviderStreamError(str(err.get("type") or "api_error"),
                                      str(err.get("message") or "stream error"))

    def said(self) -> dict[str, Any]:
        """The message so far, as a non-streamed answer would have it."""
        content = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            if "_json" in block:
                raw = block.pop("_json")
                try:
                    block["input"] = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    block["input"] = {}
            content.append(block)
        return {**self.message, "content": content, "usage": dict(self.usage)}

    def generated_text(self) -> str:
        return "".join(str(b.get("text") or b.get("thinking") or b.get("_json") or "")
                       for b in self.blocks.values())

    def completion(self, response: Any, served: Served, redactor: Redactor, *,
                   status: AttemptStatus, error: BaseException | None) -> Completion:
        counted = None
        if status == "partial" or not self.deltas_seen:  # the provider's final count is missing
            dep_id = hidden_params(response).get("model_id")
            dep = served.config.deployment(dep_id) if dep_id else None
            text = self.generated_text()
            count = cast(Callable[[str], int],
                         text_count_function(dep.litellm_params.model if dep else "gpt-4o"))
            counted = int(count(text)) if text else 0
        return _completion(self.said(), hidden_params(response), served, status=status,
                           error=error, redactor=redactor, counted_output=counted)


def replay_events(completion: Completion) -> list[StreamEvent]:
    """A cached Anthropic answer as the SSE events of a stream."""
    stream = MessagesStream(completion.request_id)
    events: list[StreamEvent] = []
    for frame in answer_as_sse(completion.body or {}):
        events.extend(stream.add(frame))
    return events


def _frame_end(buffer: bytes) -> int | None:
    """Where the first complete SSE frame of `buffer` ends (after its blank line)."""
    found = [i for i in (buffer.find(b"\n\n"), buffer.find(b"\r\n\r\n")) if i >= 0]
    if not found:
        return None
    at = min(found)
    return at + (4 if buffer[at:at + 4] == b"\r\n\r\n" else 2)


MESSAGES = MessagesDialect()
