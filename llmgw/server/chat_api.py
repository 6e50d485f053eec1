"""The OpenAI-shaped endpoints: chat completions (JSON and SSE), models, usage, estimate."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from llmgw.config.aliases import model_names
from llmgw.errors import InvalidRequest
from llmgw.ledger.api_keys import KeyInfo
from llmgw.ledger.report import (
    GROUP_BY_VALUES,
    is_group_by,
    usage_report,
    usage_totals,
)
from llmgw.ledger.timespec import parse_time
from llmgw.server.auth import caller_of, usage_project
from llmgw.server.common import (
    ERROR_STATUSES,
    SSE_EVENT,
    SSEResponse,
    broken_stream,
    dumps,
    fact_headers,
    facts,
    group_of,
    require_key,
    stream_request_id,
    until_disconnect,
)
from llmgw.server.errors import FrontError, stream_error_payload
from llmgw.server.key_limits import key_pass
from llmgw.server.schemas import (
    AnthropicModel,
    AnthropicModelList,
    ChatCompletion,
    ChatCompletionBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    UsageReport,
    UsageRow,
)
from llmgw.types import (
    Completion,
    ContentDelta,
    CostEstimate,
    StreamDone,
    StreamError,
    StreamEvent,
    ToolCallDelta,
)

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in ERROR_STATUSES}
Key = Annotated[KeyInfo, Depends(require_key)]


@router.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"],
             responses={**_ERRORS, 200: {"content": {"text/event-stream": {
                 "schema": SSE_EVENT}}, "description": "JSON, or SSE when stream"}})
async def chat_completions(body: ChatCompletionBody, request: Request, key: Key) -> Any:
    """OpenAI's chat completions. Facts of the answer come in `x-llmgw-*` headers (and in
    `llmgw`); a stream's last event before `[DONE]` carries them."""
    caller = caller_of(key, request, user=body.user)
    gateway = request.app.state.gateway
    call = dict(agent_type=caller.agent_type, model_group=group_of(body.model),
                metadata=dict(body.metadata or {}), **body.params())
    async with key_pass(request, caller, dialect="chat", stream=bool(body.stream)) as held:
        if not body.stream:
            completion = await until_disconnect(request, gateway.complete(
                caller.agent_id, caller.project_id, body.message_dicts(), **call))
            return JSONResponse(chat_completion(completion), headers=fact_headers(completion))
        events = held.wrap(gateway.stream(caller.agent_id, caller.project_id,
                                          body.message_dicts(), **call))
        try:  # up to the first event, a failure is still an HTTP status (429, 503, ...)
            first = await until_disconnect(request, anext(events))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await events.aclose()
            raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return SSEResponse(_sse(first, events, model=body.model or "auto",
                            include_usage=include_usage),
                       request_id=stream_request_id(first))


def chat_completion(c: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.content}
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    return {"id": f"chatcmpl-{c.request_id}", "object": "chat.completion",
            "created": int(time.time()), "model": c.model_group,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": c.finish_reason or ("tool_calls" if c.tool_calls
                                                              else "stop"),
                         "logprobs": None}],
            "usage": _usage(c), "llmgw": facts(c)}


def _usage(c: Completion) -> dict[str, int]:
    return {"prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "total_tokens": c.usage.total_tokens}


async def _sse(first: StreamEvent, events: AsyncGenerator[StreamEvent, None], *, model: str,
               include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk sequence: deltas, a finish chunk, the usage chunk when asked for,
    `[DONE]`. The last chunk before `[DONE]` carries the facts as `llmgw`."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    first_delta = True

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + dumps({"id": chunk_id, "object": "chat.completion.chunk",
                                 "created": created, "model": extra.pop("model", model),
                                 "choices": choices, **extra}) + "\n\n"

    try:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, StreamDone):
                c = event.completion
                done = chunk([{"index": 0, "delta": {},
                               "finish_reason": c.finish_reason or (
                                   "tool_calls" if c.tool_calls else "stop")}],
                             model=c.model_group, **({} if include_usage else
                                                    {"llmgw": facts(c)}))
                yield done
                if include_usage:
                    yield chunk([], model=c.model_group, usage=_usage(c), llmgw=facts(c))
                yield "data: [DONE]\n\n"
                return
            if isinstance(event, StreamError):
                payload = stream_error_payload(event.error, event.message, "openai")
                yield "data: " + dumps({**payload, "llmgw": facts(event.partial)}) + "\n\n"
                return
            delta: dict[str, Any] = {"role": "assistant"} if first_delta else {}
            first_delta = False
            if isinstance(event, ContentDelta):
                delta["content"] = event.text
            elif isinstance(event, ToolCallDelta):
                call: dict[str, Any] = {"index": event.index, "function": {
                    "arguments": event.arguments}}
                if event.id:
                    call["id"] = event.id
                    call["type"] = "function"
                if event.name:
                    call["function"]["name"] = event.name
                delta["tool_calls"] = [call]
            yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
            event = await anext(events, None)
    except Exception as exc:
        yield "data: " + dumps(broken_stream(exc, stream_request_id(first), "openai")) + "\n\n"
    finally:  # a hang-up cancels us here: the gateway settles what was generated
        with anyio.CancelScope(shield=True):
            await events.aclose()


@router.get("/v1/models", response_model=ModelList | AnthropicModelList, tags=["openai"],
            responses={s: {"model": ErrorResponse} for s in (401, 403)})
async def models(request: Request, key: Key,
                 limit: Annotated[int, Query(ge=1, le=1000, description="Anthropic shape")] = 1000,
                 after_id: Annotated[str | None, Query(description="Anthropic shape")] = None,
                 before_id: Annotated[str | None, Query(description="Anthropic shape")] = None,
                 ) -> Any:
    """The model names this key may send: `auto` (the agent type's group), the groups, and
    the aliases of llmgw.model_aliases with the group each maps to. With an
    `anthropic-version` header (Claude Code's model picker, the Anthropic SDK), Anthropic's
    list shape, without the alias patterns (`claude-*` is not a model one can pick)."""
    if key.admin:
        raise FrontError(403, "admin_key_reads_usage_only",
                         "An admin key reads usage only; it has no models.")
    config = request.app.state.config
    groups, aliases = config.groups(), config.llmgw.model_aliases
    if request.headers.get("anthropic-version") is None:
        return ModelList(data=[ModelCard(id=name, model_group=group)
                               for name, group in model_names(groups, aliases)])
    cards = [AnthropicModel(id=name, display_name=_display_name(name, group))
             for name, group in model_names(groups, aliases, concrete_only=True)]
    return _anthropic_page(cards, limit, after_id, before_id)


def _display_name(name: str, group: str | None) -> str:
    if group is None:
        return f"{name} (the agent type's group)"
    return f"{name} (llmgw group)" if name == group else f"{name} -> {group}"


def _anthropic_page(cards: list[AnthropicModel], limit: int, after_id: str | None,
                    before_id: str | None) -> AnthropicModelList:
    """Anthropic's cursor pages: `after_id` / `before_id` are ids of the list."""
    ids = [c.id for c in cards]
    for cursor in (after_id, before_id):
        if cursor is not None and cursor not in ids:
            raise FrontError(400, "invalid_request", f"No model {cursor!r} in this list.",
                             param="after_id" if cursor == after_id else "before_id")
    if before_id is not None:
        end = ids.index(before_id)
        page, more = cards[max(0, end - limit):end], end - limit > 0
    else:
        start = ids.index(after_id) + 1 if after_id is not None else 0
        page, more = cards[start:start + limit], start + limit < len(cards)
    return AnthropicModelList(data=page, has_more=more,
                              first_id=page[0].id if page else None,
                              last_id=page[-1].id if page else None)


@router.post("/v1/estimate", response_model=CostEstimate, tags=["llmgw"],
             responses={s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413)})
async def estimate(body: ChatCompletionBody, request: Request, key: Key) -> Any:
    """What the same chat completion would cost and which budgets it would hit; reserves
    nothing, calls no provider, writes no row."""
    caller = caller_of(key, request, user=body.user)
    return await until_disconnect(request, request.app.state.gateway.estimate(
        caller.agent_id, caller.project_id, body.message_dicts(), agent_type=caller.agent_type,
        model_group=group_of(body.model), **body.params()))


@router.get("/v1/usage", response_model=UsageReport, tags=["llmgw"],
            responses={s: {"model": ErrorResponse} for s in (400, 401, 403)})
async def usage(request: Request, key: Key,
                by: Annotated[str, Query(description=", ".join(GROUP_BY_VALUES))] = "project",
                since: Annotated[str | None, Query(description="7d, 24h, 2026-11-01, ...")] = None,
                until: Annotated[str | None, Query(description="exclusive; as since")] = None,
                project: Annotated[str | None, Query(description="admin keys only")] = None,
                agent: Annotated[str | None, Query()] = None,
                session: Annotated[str | None, Query(description="one agent run")] = None,
                ) -> Any:
    """`llmgw usage report` as JSON, scoped to the key's project (an admin key: any)."""
    scope = usage_project(key, project)
    if not is_group_by(by):
        raise FrontError(400, "invalid_request", f"Unknown by={by!r}; use one of "
                         f"{', '.join(GROUP_BY_VALUES)}.", param="by")
    try:
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
    except InvalidRequest as exc:
        raise FrontError(400, "invalid_request", exc.message, param="since") from None
    if start is not None and end is not None and start >= end:
        raise FrontError(400, "invalid_request", "since is not before until.", param="since")
    engine = request.app.state.gateway.ledger.engine
    rows, total = await asyncio.gather(
        asyncio.to_thread(usage_report, engine, by=by, project=scope, agent=agent, since=start,
                          until=end, session=session),
        asyncio.to_thread(usage_totals, engine, project=scope, agent=agent, since=start,
                          until=end, session=session))
    return UsageReport(by=by, project=scope, agent=agent, session=session,
                       since=start.isoformat() if start else None,
                       until=end.isoformat() if end else None,
                       rows=[UsageRow.of(r) for r in rows], total=UsageRow.of(total))
