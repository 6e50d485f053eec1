"""A recording stand-in for OpenAI's Responses API on 127.0.0.1, for seeing what a real client sends.

`POST /v1/responses` gets a minimal valid Response: JSON, or the Responses SSE sequence when the
body asks for `stream` (response.created, the output items with their deltas, response.completed
with usage). `GET /v1/responses/{id}` returns a response this server made, but only to the key
that made it (another key gets 404, as another project would); a `previous_response_id` that key
did not make is a 404 too. `GET /v1/models` lists one model. A WebSocket upgrade of
`GET /v1/responses` is refused with 426 and recorded; anything else is 404 and recorded.

With `tool_name` (and `tool_arguments`), a request offering that function gets a call of it. With
`tool_command`, the first request offering a shell tool (`exec_command`, `shell`, or any
function whose schema has a `cmd`/`command` property) gets a `function_call` running that
command, with the argument names that schema declares; the request carrying its
`function_call_output` gets text naming what the tool returned. A scripted loop, no model.

Keys are never stored: requests are recorded with credentials dropped, and ownership of a
response is a SHA-256 of the bearer token.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.clients.recorder import SECRET_HEADERS, Recorded, Recorder

ANSWER = "Hello from the recorder."
CALL_ID = "call_rec_0001"
SHELL_TOOLS = ("exec_command", "shell", "shell_command", "local_shell")
KNOWN = {("POST", "/v1/responses"), ("GET", "/v1/models")}


@dataclass
class OpenAIRecorder(Recorder):
    tool_command: str | None = None
    # Any other function to call once when offered, with these arguments (an SDK's own tool).
    tool_name: str | None = None
    tool_arguments: dict[str, Any] = field(default_factory=dict)
    # response id -> (owner key digest, the response)
    stored: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # --- what the client sent -------------------------------------------------------------------

    def responses_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/responses"]

    def unknown(self) -> list[Recorded]:
        """Requests this server refused: endpoints or upgrades the client wanted that it lacks."""
        return [r for r in self.requests if (r.method, r.path) not in KNOWN
                and not (r.method == "GET" and r.path.startswith("/v1/responses/"))]

    def websocket_attempts(self) -> list[Recorded]:
        return [r for r in self.requests if r.headers.get("upgrade", "").lower() == "websocket"]

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
        owner = hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()
        if request.headers.get("upgrade", "").lower() == "websocket":
            return _error(426, "websocket_not_supported", "this server speaks HTTP only: use SSE")
        if request.method == "GET" and request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [
                {"id": "gpt-recorder", "object": "model", "created": 1767225600, "owned_by": "llmgw"}]})
        if request.method == "GET" and request.path.startswith("/v1/responses/"):
            found = self.stored.get(request.path.removeprefix("/v1/responses/"))
            if found is None or found[0] != owner:
                return _error(404, "not_found", f"no response {request.path.rsplit('/', 1)[-1]}")
            return web.json_response(found[1])
        if (request.method, request.path) == ("POST", "/v1/responses") and isinstance(body, dict):
            previous = body.get("previous_response_id")
            if previous is not None and self.stored.get(previous, ("",))[0] != owner:
                return _error(404, "previous_response_not_found", f"Previous response {previous} not found")
            response = self._response(body)
            if body.get("store") is not False:
                self.stored[response["id"]] = (owner, response)
            if body.get("stream"):
                return await _stream(request, response)
            return web.json_response(response)
        return _error(404, "not_found", f"{request.method} {request.path}")

    def _response(self, body: dict[str, Any]) -> dict[str, Any]:
        n = next(self._ids)
        output = self._output(body, n)
        return {"id": f"resp_rec_{n:04d}", "object": "response", "created_at": int(time.time()),
                "status": "completed", "completed_at": int(time.time()),
                "model": body.get("model", "gpt-recorder"),
                "output": output, "parallel_tool_calls": True, "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [], "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
                "previous_response_id": body.get("previous_response_id"), "store": body.get("store", True),
                "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
                "usage": {"input_tokens": max(1, len(json.dumps(body.get("input"))) // 4),
                          "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 12,
                          "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": max(1, len(json.dumps(body.get("input"))) // 4) + 12}}

    def _output(self, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
        result = _last_tool_output(body)
        if (self.tool_command is not None or self.tool_name is not None) and result is not None:
            return [_message(f"msg_rec_{n:04d}", f"The tool returned: {result}")]
        offered = [t for t in body.get("tools") or []
                   if isinstance(t, dict) and t.get("name") == self.tool_name]
        if self.tool_name is not None and offered:
            return [{"type": "function_call", "id": f"fc_rec_{n:04d}", "call_id": CALL_ID,
                     "name": self.tool_name, "arguments": json.dumps(self.tool_arguments),
                     "status": "completed"}]
        tool = _shell_tool(body) if self.tool_command is not None else None
        if tool is not None:
            return [{"type": "function_call", "id": f"fc_rec_{n:04d}", "call_id": CALL_ID,
                     "name": tool["name"],
                     "arguments": json.dumps(_shell_arguments(tool, self.tool_command or "")),
                     "status": "completed"}]
        if previous := body.get("previous_response_id"):
            return [_message(f"msg_rec_{n:04d}", f"{ANSWER} (continuing {previous})")]
        return [_message(f"msg_rec_{n:04d}", ANSWER)]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": code}}, status=status)


def _message(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _shell_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        props = (tool.get("parameters") or {}).get("properties") or {}
        if tool.get("name") in SHELL_TOOLS or "cmd" in props or "command" in props:
            return tool
    return None


def _shell_arguments(tool: dict[str, Any], command: str) -> dict[str, Any]:
    """The command under the schema's own argument name, as a string or an argv list."""
    props = (tool.get("parameters") or {}).get("properties") or {}
    name = "cmd" if "cmd" in props else "command"
    if (props.get(name) or {}).get("type") == "array":
        return {name: ["bash", "-lc", command]}
    return {name: command}


def _last_tool_output(body: dict[str, Any]) -> str | None:
    items = body.get("input")
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = " ".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            return str(output)
        if item.get("role") == "user":
            return None
    return None


def _sse_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Responses stream: created, in_progress, per item added/deltas/done, completed."""
    shell = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    yield {"type": "response.created", "response": shell}
    yield {"type": "response.in_progress", "response": shell}
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", "content": []}}
            for part_index, part in enumerate(item["content"]):
                where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
                yield {"type": "response.content_part.added", **where, "part": {**part, "text": ""}}
                for word in _chunks(part["text"]):
                    yield {"type": "response.output_text.delta", **where, "delta": word, "logprobs": []}
                yield {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []}
                yield {"type": "response.content_part.done", **where, "part": part}
        else:
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", "arguments": ""}}
            where = {"item_id": item["id"], "output_index": index}
            yield {"type": "response.function_call_arguments.delta", **where, "delta": item["arguments"]}
            yield {"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"],
                   "name": item["name"]}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    yield {"type": "response.completed", "response": response}


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + words[-1:]


async def _stream(request: web.Request, response: dict[str, Any]) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    for number, event in enumerate(_sse_events(response)):
        event = {**event, "sequence_number": number}
        await stream.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    await stream.write_eof()
    return stream
