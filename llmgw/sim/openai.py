"""`OpenAISim`: the OpenAI chat-completions wire protocol (JSON and SSE)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from llmgw.sim.server import Reply, SimServer, bearer_token, split_words, sse

_FINGERPRINT = "fp_llmgw_sim"

# (type, code, default message) per status, as OpenAI sends them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "service_unavailable", "The server is overloaded or not ready yet."),
}


class OpenAISim(SimServer):
    """OpenAI: ``POST /v1/chat/completions`` (or ``/chat/completions``), ``GET /v1/models``.

    Auth is ``Authorization: Bearer <key>``. Use ``base_url + "/v1"`` as the api_base.
    """

    provider = "openai"

    default_models = ("sim-gpt", "sim-gpt-mini")

    def _add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.handle_generation)
            app.router.add_get(f"{prefix}/models", self._list_models)

    async def _list_models(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "llmgw-sim"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    # -- auth and errors -------------------------------------------------------------

    def sent_key(self, request: web.Request) -> str | None:
        return bearer_token(request)

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        if sent is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return 401, _error(message, "invalid_request_error", None)
        if not self.plan.echo_key:
            return 401, self.error_body(401, None)
        # OpenAI's own 401 quotes the key it was sent (masked in the middle); this quotes all
        # of it, the worst case for what llmgw must keep out of its errors and logs.
        message = (
            f"Incorrect API key provided: {sent}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return 401, _error(message, "invalid_request_error", "invalid_api_key")

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        kind, code, default = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "")
        )
        return _error(message or default or f"Simulated error {status}.", kind, code)

    def error_headers(self, status: int) -> dict[str, str]:
        return {"x-request-id": "req_sim"}

    # -- requests --------------------------------------------------------------------

    def validate(self, request: web.Request, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return (
                "[] is too short - 'messages'"
                if messages == []
                else "Missing required parameter: 'messages'."
            )
        return None

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        names = []
        for tool in tools if isinstance(tools, list) else []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
        return names

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {"x-request-id": f"req_{reply.id}" if reply else "req_sim", "openai-processing-ms": "1"}

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.answer,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_call is not None:
            message["tool_calls"] = [_tool_call(reply.tool_call)]
        return {
            **self._envelope(reply, "chat.completion"),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply)}
            ],
            "usage": self.usage(reply, body),
        }

    def stream_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        envelope = self._envelope(reply, "chat.completion.chunk")
        if with_usage:
            envelope["usage"] = None  # OpenAI sends usage: null on every chunk but the last

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**envelope, "choices": [choice]})

        events: list[bytes] = []
        if reply.tool_call is not None:
            call = _tool_call(reply.tool_call)
            head = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(
                chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})
            )
            for piece in split_words(call["function"]["arguments"]):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events.extend(chunk({"content": piece}) for piece in split_words(reply.answer or ""))
        events.append(chunk({}, _finish_reason(reply)))
        if with_usage:
            events.append(sse({**envelope, "choices": [], "usage": self.usage(reply, body)}))
        events.append(sse("[DONE]"))
        return events

    def _envelope(self, reply: Reply, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{reply.id}",
            "object": obj,
            "created": reply.created,
            "model": reply.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_call is not None else "stop"


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(call["arguments"])
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": arguments}}
