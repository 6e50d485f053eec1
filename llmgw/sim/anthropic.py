"""`AnthropicSim`: the Anthropic Messages wire protocol (JSON and its SSE event sequence)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from llmgw.sim.server import Reply, SimServer, bearer_token, collect_text, split_words, sse

# (type, default message) per status, as Anthropic sends them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization."),
    500: ("api_error", "Internal server error"),
    # Not overloaded_error: LiteLLM maps any body naming it to InternalServerError, and a
    # 503 should reach callers as ServiceUnavailableError. 529 is Anthropic's overload.
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class AnthropicSim(SimServer):
    """Anthropic: ``POST /v1/messages``, ``GET /v1/models``.

    Auth is ``x-api-key`` or ``Authorization: Bearer``; ``anthropic-version`` is
    required, as by the real API.
    Use ``base_url`` itself as the api_base.
    """

    provider = "anthropic"

    default_models = ("claude-sim", "claude-sim-haiku")

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.handle_generation)
        app.router.add_get("/v1/models", self._list_models)

    async def _list_models(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response({"data": data, "has_more": False, "first_id": first, "last_id": last})

    # -- auth and errors -------------------------------------------------------------

    def sent_key(self, request: web.Request) -> str | None:
        # LiteLLM sends x-api-key; the Anthropic SDK (2.x) sends Authorization: Bearer.
        return request.headers.get("x-api-key") or bearer_token(request)

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        if sent is None:
            return 401, self.error_body(401, "x-api-key header is required")
        return 401, self.error_body(401, None)

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        kind, default = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", ""))
        return {
            "type": "error",
            "error": {"type": kind, "message": message or default or f"Simulated error {status}."},
            "request_id": _request_id(),
        }

    # -- requests --------------------------------------------------------------------

    def validate(self, request: web.Request, body: dict[str, Any]) -> str | None:
        if "anthropic-version" not in request.headers:
            return "anthropic-version: header is required"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return (
                "messages: Field required"
                if messages is None
                else "messages: at least one message is required"
            )
        return None

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        return [
            t["name"]
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        return collect_text(body.get("system")) + collect_text(body.get("messages"))

    def tool_call_id(self) -> str:
        return "toolu_" + secrets.token_hex(12)

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {"request-id": _request_id()}

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        # Anthropic's input_tokens excludes cache reads; prompt = input + cache read.
        return {
            "input_tokens": reply.prompt_tokens - reply.cached_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": reply.cached_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": reply.completion_tokens,
            "service_tier": "standard",
        }

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._message(reply, self._content(reply), _stop_reason(reply)),
            "usage": self.usage(reply, body),
        }

    def stream_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        usage = self.usage(reply, body)
        # message_start reports output_tokens 1 and message_delta the cumulative total,
        # as the real API does; clients must take the later value, not add them.
        start_usage = {**usage, "output_tokens": min(1, reply.completion_tokens)}
        events = [
            sse(
                {
                    "type": "message_start",
                    "message": {**self._message(reply, [], None), "usage": start_usage},
                },
                "message_start",
            )
        ]
        block = self._content(reply)[0]
        if block["type"] == "tool_use":
            start, key, kind = {**block, "input": {}}, "partial_json", "input_json_delta"
            pieces = split_words(json.dumps(block["input"]))
        else:
            start, key, kind = {"type": "text", "text": ""}, "text", "text_delta"
            pieces = split_words(block["text"])
        events.append(
            sse({"type": "content_block_start", "index": 0, "content_block": start}, "content_block_start")
        )
        events.append(sse({"type": "ping"}, "ping"))
        for piece in pieces:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": kind, key: piece}}
            events.append(sse(delta, "content_block_delta"))
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        delta_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "output_tokens": usage["output_tokens"],
        }
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
            "usage": delta_usage,
        }
        events.append(sse(message_delta, "message_delta"))
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return events

    def _message(
        self, reply: Reply, content: list[dict[str, Any]], stop_reason: str | None
    ) -> dict[str, Any]:
        return {
            "id": f"msg_{reply.id}",
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }

    def _content(self, reply: Reply) -> list[dict[str, Any]]:
        if reply.tool_call is not None:
            call = reply.tool_call
            return [{"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["arguments"]}]
        return [{"type": "text", "text": reply.answer or ""}]


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool_call is not None else "end_turn"


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)
