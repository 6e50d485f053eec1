"""What the endpoints of every dialect share: the key dependency, an answer's facts (headers
and the last stream event), an SSE response that notices a hang-up, and `until_disconnect`
(a gateway call cancelled when its client hangs up)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from llmgw.budgets.pricing import micros_to_usd
from llmgw.errors import LLMGatewayError
from llmgw.ledger.api_keys import KeyInfo
from llmgw.server.errors import Api, stream_error_payload
from llmgw.types import Completion, StreamDone, StreamError, StreamEvent

log = logging.getLogger("llmgw.server")

T = TypeVar("T")
ERROR_STATUSES = (400, 401, 403, 404, 413, 429, 502, 503)
# One server-sent event (`stream: true`): its `data` is a JSON chunk in the API's own shape,
# or `[DONE]` (OpenAI's end).
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"event": {"type": "string"}, "data": {"type": "string"},
                            "id": {"type": "string"}}}


async def require_key(request: Request) -> KeyInfo:
    """The caller's key (401 when missing or not live); checked before the body."""
    key: KeyInfo = await request.app.state.auth.key_of(request)
    return key


def group_of(model: str | None) -> str | None:
    """`auto` or no model: the agent type's group (the gateway resolves it)."""
    return None if model in (None, "", "auto") else model


def facts(completion: Completion) -> dict[str, Any]:
    return {"request_id": completion.request_id,
            "cost_usd": format(micros_to_usd(completion.cost_micros), "f"),
            "cost_micros": completion.cost_micros, "model_group": completion.model_group,
            "deployment": completion.deployment, "cache": "hit" if completion.cached else "miss"}


def fact_headers(completion: Completion) -> dict[str, str]:
    f = facts(completion)
    return {"x-llmgw-request-id": f["request_id"], "x-llmgw-cost-usd": f["cost_usd"],
            "x-llmgw-model-group": f["model_group"], "x-llmgw-deployment": f["deployment"] or "",
            "x-llmgw-cache": f["cache"]}


def stream_request_id(event: StreamEvent) -> str | None:
    """The request id a stream's first event names (every event carries it)."""
    if isinstance(event, StreamDone):
        return event.completion.request_id
    if isinstance(event, StreamError):
        return event.partial.request_id
    return event.request_id


def broken_stream(exc: Exception, request_id: str | None, api: Api) -> dict[str, Any]:
    """The error event of a stream the gateway did not end with `StreamError` (a bug, or
    an error raised past it): typed when it is ours, and named by the request's id, so the
    client gets an answer it can quote instead of a cut connection."""
    typed = exc if isinstance(exc, LLMGatewayError) else None
    if typed is None:
        log.exception("request %s: the stream broke", request_id)
    message = (f"{typed.message} {typed.hint}".strip() if typed is not None
               else f"Internal error ({type(exc).__name__}); the server log has its traceback "
                    f"under request {request_id}.")
    return {**stream_error_payload(typed, message, api), "llmgw": {"request_id": request_id}}


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class SSEResponse(StreamingResponse):
    """Server-sent events. Listens for the client's hang-up whatever the ASGI version, so a
    client that leaves cancels the stream at once, not at the next chunk's write: the
    gateway then settles it as a `partial` row."""

    media_type = "text/event-stream"

    def __init__(self, content: Any, headers: dict[str, str] | None = None, *,
                 request_id: str | None = None) -> None:
        named = {"x-llmgw-request-id": request_id} if request_id else {}
        super().__init__(content, headers={"cache-control": "no-cache",
                                           "x-accel-buffering": "no", **named, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:  # the client went away while we wrote
                    pass
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client hangs up first: a hang-up is a
    cancellation (the gateway settles a cancelled request through its lifecycle)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            raise ClientGone
        return task.result()
    except asyncio.CancelledError:  # the server cancelled us (shutdown): pass it on
        task.cancel()
        raise
    finally:
        watcher.cancel()


class ClientGone(Exception):
    """The client disconnected before its answer; nobody is left to answer."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
