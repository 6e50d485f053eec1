"""A recording stand-in for the Anthropic API on 127.0.0.1, for seeing what a real client sends.

It answers `/v1/messages` with a minimal valid message (JSON, or Anthropic's SSE event sequence
when the body asks for `stream`), `/v1/messages/count_tokens` with a count, `/v1/models` with one
model, `HEAD`/`GET /` with 200, and anything else with 404. Every request is recorded (method,
path, query, headers with credentials dropped, body). With `tool_command`, the first request that
offers the `Bash` tool gets a `tool_use` running that command, and the request that carries its
`tool_result` gets text naming what the tool returned: a scripted tool loop, no model.

It runs its own event loop in a thread so synchronous tests can drive a client subprocess.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1yZWNvcmRlcg=="  # a thinking block's signature, opaque to clients
TOOL_USE_ID = "toolu_rec_0001"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query,
                "headers": self.headers, "body": self.body}


@dataclass
class Recorder:
    tool_command: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    # --- what the client sent -------------------------------------------------------------------

    def messages_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    def unknown(self) -> list[Recorded]:
        """Requests this server answered 404: endpoints the client wanted that it does not have."""
        known = {("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models"),
                 ("HEAD", "/"), ("GET", "/")}
        return [r for r in self.requests if (r.method, r.path) not in known]

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Recorder:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="recorder", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the recording server did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    # --- answers --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): ("<dropped>" if k.lower() in SECRET_HEADERS else v)
                   for k, v in request.headers.items()}
        self.requests.append(Recorded(request.method, request.path, dict(request.query), headers, body))
        route = (request.method, request.path)
        if route in {("HEAD", "/"), ("GET", "/")}:
            return web.Response(status=200, text="ok")
        if route == ("GET", "/v1/models"):
            return web.json_response({"data": [{"type": "model", "id": "claude-recorder",
                                                "display_name": "Recorder",
                                                "created_at": "2026-01-01T00:00:00Z"}],
                                      "has_more": False, "first_id": "claude-recorder",
                                      "last_id": "claude-recorder"})
        if route == ("POST", "/v1/messages/count_tokens"):
            return web.json_response({"input_tokens": _rough_tokens(body)})
        if route == ("POST", "/v1/messages") and isinstance(body, dict):
            blocks, stop_reason = self._answer(body)
            message = _message(body, blocks, stop_reason)
            if body.get("stream"):
                return await _stream(request, message)
            return web.json_response(message)
        return web.json_response({"type": "error", "error": {"type": "not_found_error",
                                                             "message": f"{request.method} {request.path}"}},
                                 status=404)

    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        thinking = _thinking_requested(body)
        prefix = ([{"type": "thinking", "thinking": "The user wants the directory listed.",
                    "signature": SIGNATURE}] if thinking else [])
        result = _last_tool_result(body)
        if self.tool_command is not None and result is not None:
            return prefix + [{"type": "text", "text": f"The tool returned: {result}"}], "end_turn"
        if self.tool_command is not None and _offers_tool(body, "Bash"):
            return prefix + [{"type": "tool_use", "id": TOOL_USE_ID, "name": "Bash",
                              "input": {"command": self.tool_command, "description": "list"}}], "tool_use"
        return prefix + [{"type": "text", "text": "Hello from the recorder."}], "end_turn"


def _offers_tool(body: dict[str, Any], name: str) -> bool:
    return any(isinstance(t, dict) and t.get("name") == name for t in body.get("tools") or [])


def _thinking_requested(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in {"enabled", "adaptive"}


def _last_tool_result(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    for block in messages[-1]["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            return str(content)
    return None


def _rough_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4)


def _message(body: dict[str, Any], blocks: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {"id": f"msg_rec_{len(json.dumps(body)) % 100000:05d}", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-recorder"), "content": blocks, "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": _rough_tokens(body.get("messages")), "output_tokens": 12,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def _sse_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Anthropic's stream: message_start, per block start/delta/stop, message_delta, message_stop."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        empty: dict[str, Any] = {"text": {"type": "text", "text": ""},
                                 "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                                 "tool_use": {**block, "input": {}}}[kind]
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
        if kind == "text":
            delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
        elif kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
        else:
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        if kind == "thinking":
            signed = {"type": "signature_delta", "signature": block["signature"]}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": signed}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


async def _stream(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event, data in _sse_events(message):
        await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
    await response.write_eof()
    return response
