"""`AnthropicSim`: the Anthropic Messages wire protocol (JSON and its SSE event sequence)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from aiohttp import web

from llmgw.sim.server import SimServer
from llmgw.sim.wire import Reply, bearer_token, collect_text, count_tokens, split_words, sse

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


# Anthropic's wording for a final assistant turn with a tool use but no thinking block.
_THINKING_FIRST = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. "
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
    "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please "
    "consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


class AnthropicSim(SimServer):
    """Anthropic: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /v1/models``.

    Auth is ``x-api-key`` or ``Authorization: Bearer``; ``anthropic-version`` is
    required, as by the real API. Any model name is served (``models`` is only what
    ``GET /v1/models`` lists). Use ``base_url`` itself as the api_base.

    A request with ``thinking`` of type ``enabled`` or ``adaptive`` gets a thinking block
    first, signed with this server's secret (or a ``redacted_thinking`` block, see
    `FaultPlan`); thinking blocks sent back in assistant turns must carry a signature this
    server issued for exactly that text, and a final assistant turn holding a tool use must
    start with one, else 400 as Anthropic answers.
    """

    provider = "anthropic"

    default_models = ("claude-sim", "claude-sim-haiku")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secret = secrets.token_bytes(32)  # per server: another server's blocks are refused

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.handle_generation)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._list_models)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """``{"input_tokens": N}``: the count /v1/messages would report as the prompt."""
        started, body = await self.receive(request)
        rec: dict[str, Any] = {"status": 0, "path": request.path}
        refused = self.refuse_auth(request)
        if refused is not None:
            return self._error(rec, started, *refused)
        if not isinstance(body, dict):
            return self._error(rec, started, 400, self.error_body(400, "The request body is not valid JSON."))
        problem = self._validate_common(request, body, empty_ok=True)
        if problem is not None:
            return self._error(rec, started, 400, self.error_body(400, problem))
        tokens = count_tokens(" ".join(self.prompt_texts(body)))
        counted = {"input_tokens": tokens}
        rec.update(status=200, model=body["model"], usage=counted, prompt_tokens=tokens)
        self._finish(rec, started)
        return web.json_response(counted, headers=self.response_headers(None))

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
        problem = self._validate_common(request, body)
        if problem is None and not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        return problem

    def _validate_common(
        self, request: web.Request, body: dict[str, Any], empty_ok: bool = False
    ) -> str | None:
        if "anthropic-version" not in request.headers:
            return "anthropic-version: header is required"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        messages = body.get("messages")
        if empty_ok and isinstance(messages, list):  # count_tokens may count a system prompt alone
            return None
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
        tools = body.get("tools")
        tool_texts = [
            " ".join(
                [str(t.get("name", "")), str(t.get("description", "")), json.dumps(t.get("input_schema", {}))]
            )
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, dict)
        ]
        return collect_text(body.get("system")) + collect_text(body.get("messages")) + tool_texts

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not isinstance(last, dict) or last.get("role") != "user":
            return None
        if not isinstance(last.get("content"), list):
            return None
        results = [
            "\n".join(collect_text(block.get("content")))
            for block in last["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        return results or None

    def wants_thinking(self, body: dict[str, Any]) -> bool:
        thinking = body.get("thinking")
        return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")

    def thinking_error(self, body: dict[str, Any]) -> str | None:
        messages = body["messages"]
        last_assistant: tuple[int, list[Any]] | None = None
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") != "assistant":
                continue
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                problem = self._block_error(block, f"messages.{i}.content.{j}")
                if problem is not None:
                    return problem
            last_assistant = (i, content)
        if last_assistant is None or not self.wants_thinking(body):
            return None
        index, content = last_assistant
        has_tool_use = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content)
        first = content[0].get("type") if content and isinstance(content[0], dict) else None
        if has_tool_use and first not in ("thinking", "redacted_thinking"):
            return _THINKING_FIRST.format(index=index, found=first)
        return None

    def _block_error(self, block: Any, where: str) -> str | None:
        """Anthropic's complaint about one thinking block sent back, None if it is ours and intact."""
        if not isinstance(block, dict):
            return None
        if block.get("type") == "thinking":
            signature, text = block.get("signature"), block.get("thinking")
            if not isinstance(signature, str):
                return f"{where}.thinking.signature: Field required"
            if not isinstance(text, str) or not hmac.compare_digest(signature, self.sign_thinking(text)):
                return f"{where}: Invalid `signature` in `thinking` block"
        elif block.get("type") == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str):
                return f"{where}.redacted_thinking.data: Field required"
            if not self.verify_redacted(data):
                return f"{where}: Invalid `data` in `redacted_thinking` block"
        return None

    # -- thinking signatures ---------------------------------------------------------

    def sign_thinking(self, text: str) -> str:
        """The signature of a thinking block: base64 of an HMAC-SHA256 of its text."""
        digest = hmac.new(self._secret, b"thinking\0" + text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def redacted_data(self, nonce: bytes) -> str:
        """A redacted block's opaque data: a nonce and its HMAC, base64."""
        digest = hmac.new(self._secret, b"redacted\0" + nonce, hashlib.sha256).digest()
        return base64.b64encode(nonce + digest).decode()

    def verify_redacted(self, data: str) -> bool:
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            return False
        nonce = raw[:-32]
        return len(raw) > 32 and hmac.compare_digest(self.redacted_data(nonce), data)

    def tool_call_id(self) -> str:
        return "toolu_" + secrets.token_hex(12)

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {"request-id": _request_id()}

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        # Anthropic's input_tokens excludes cache reads and writes; prompt = input + read + written.
        written = reply.cache_write_5m_tokens + reply.cache_write_1h_tokens
        return {
            "input_tokens": reply.prompt_tokens - reply.cached_tokens - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": reply.cached_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": reply.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": reply.cache_write_1h_tokens,
            },
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
        for index, block in enumerate(self._content(reply)):
            start, deltas = _stream_block(block)
            opened = {"type": "content_block_start", "index": index, "content_block": start}
            events.append(sse(opened, "content_block_start"))
            if index == 0:
                events.append(sse({"type": "ping"}, "ping"))
            for delta in deltas:
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                events.append(sse(event, "content_block_delta"))
            events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
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
        blocks: list[dict[str, Any]] = []
        if reply.redacted_thinking:
            blocks.append({"type": "redacted_thinking", "data": self.redacted_data(bytes.fromhex(reply.id))})
        elif reply.thinking is not None:
            signature = self.sign_thinking(reply.thinking)
            blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": signature})
        if reply.tool_call is not None:
            call = reply.tool_call
            blocks.append(
                {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["arguments"]}
            )
        else:
            blocks.append({"type": "text", "text": reply.answer or ""})
        return blocks


def _stream_block(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A content block's ``content_block_start`` payload and its deltas, as Anthropic streams them."""
    kind = block["type"]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in split_words(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    if kind == "redacted_thinking":
        return block, []  # sent whole in the start event, no deltas
    if kind == "tool_use":
        pieces = split_words(json.dumps(block["input"]))
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    pieces = split_words(block["text"])
    return {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool_call is not None else "end_turn"


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)
