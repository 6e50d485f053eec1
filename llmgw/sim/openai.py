"""`OpenAISim`: OpenAI's chat-completions and Responses wire protocols (JSON and SSE); the
Responses API's shapes and state live in `openai_responses.py`."""

from __future__ import annotations

import contextvars
import json
from typing import Any

from aiohttp import web

from llmgw.sim import openai_responses as responses
from llmgw.sim.server import SimServer
from llmgw.sim.wire import Reply, bearer_token, collect_text, split_words, sse

_FINGERPRINT = "fp_llmgw_sim"

# Which API the request being handled speaks: the shared pipeline calls the same hooks for
# both, and each aiohttp request runs in its own task, so a context variable tells them apart.
_RESPONSES_API: contextvars.ContextVar[bool] = contextvars.ContextVar("llmgw_sim_responses", default=False)

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
    """OpenAI: ``POST /v1/chat/completions``, ``POST /v1/responses``, ``GET /v1/responses/{id}``,
    ``GET /v1/models`` (each also without ``/v1``).

    Auth is ``Authorization: Bearer <key>``. Use ``base_url + "/v1"`` as the api_base.

    Responses API: a request with ``reasoning`` gets a reasoning item first (its summary is the
    thinking text when ``reasoning.summary`` is set; with ``include:
    ["reasoning.encrypted_content"]`` it carries an ``encrypted_content`` this server signed, and
    a reasoning item sent back with one it did not sign is refused with 400). Answers are stored
    unless ``store`` is false; ``previous_response_id`` continues a stored one (unknown: 404).
    Function tools may be nested in ``namespace`` tools; other tool types are accepted as sent.
    """

    provider = "openai"

    default_models = ("sim-gpt", "sim-gpt-mini")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses_api = responses.ResponsesState()  # stored answers, the reasoning signing key

    def _add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.handle_generation)
            app.router.add_post(f"{prefix}/responses", self._create_response)
            app.router.add_get(f"{prefix}/responses/{{response_id}}", self._get_response)
            app.router.add_get(f"{prefix}/models", self._list_models)

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        token = _RESPONSES_API.set(True)
        try:
            return await self.handle_generation(request)
        finally:
            _RESPONSES_API.reset(token)

    async def _get_response(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        response_id = request.match_info["response_id"]
        stored = self.stored_response(response_id)
        if stored is None:
            error = _error(f"Response with id '{response_id}' not found.", "invalid_request_error", None)
            return web.json_response(error, status=404, headers=self.error_headers(404))
        return web.json_response(stored, headers=self.response_headers(None))

    def stored_response(self, response_id: str) -> dict[str, Any] | None:
        """A stored Responses-API answer as it was sent, None if unknown (or ``store: false``)."""
        return self.responses_api.stored(response_id)

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
        if _RESPONSES_API.get():
            return responses.validate(body)
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
        if _RESPONSES_API.get():
            return list(responses.function_tools(body.get("tools")))
        tools = body.get("tools")
        names = []
        for tool in tools if isinstance(tools, list) else []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
        return names

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {"x-request-id": f"req_{reply.id}" if reply else "req_sim", "openai-processing-ms": "1"}

    # -- the Responses API (openai_responses.py holds its shapes and state) ----------------

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        if not _RESPONSES_API.get():
            return super().prompt_texts(body)
        texts = collect_text(body.get("instructions"))
        texts += [t for item in self.responses_api.conversation(body) for t in responses.item_texts(item)]
        tools = responses.as_list(body.get("tools"))
        return texts + [t for tool in tools for t in responses.tool_texts(tool)]

    def last_user_text(self, body: dict[str, Any]) -> str:
        if not _RESPONSES_API.get():
            return super().last_user_text(body)
        for item in reversed(self.responses_api.conversation(body)):
            if responses.is_message(item) and item.get("role") == "user":
                return " ".join(collect_text(item.get("content")))
        return ""

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        """Responses API: the outputs of the ``function_call_output`` items after the last user
        message (Codex sends them alone, continuing ``previous_response_id``, or whole)."""
        if not _RESPONSES_API.get():
            return super().tool_results(body)
        results: list[str] = []
        for item in reversed(self.responses_api.conversation(body)):
            if responses.is_message(item) and item.get("role") == "user":
                break
            if item.get("type") == "function_call_output":
                results.insert(0, responses.output_text(item.get("output")))
        return results or None

    def wants_thinking(self, body: dict[str, Any]) -> bool:
        reasoning = body.get("reasoning") if _RESPONSES_API.get() else None
        return isinstance(reasoning, dict) and reasoning.get("effort") != "none"

    def refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str] | None:
        refused = self.responses_api.refusal(body) if _RESPONSES_API.get() else None
        if refused is None:
            return None
        error = _error(refused.message, "invalid_request_error", refused.code)
        error["error"]["param"] = refused.param
        return refused.status, error, refused.code

    def record_fields(self, body: dict[str, Any], reply: Reply | None) -> dict[str, Any]:
        if not _RESPONSES_API.get():
            return {}
        previous = body.get("previous_response_id")
        fields: dict[str, Any] = {"previous_response_id": previous if isinstance(previous, str) else None}
        if reply is not None:
            fields["response_id"] = responses.response_id(reply)
            if reply.thinking is not None and not responses.summary_asked(body):
                fields["thinking"] = None  # reasoned (and counted) but no summary was sent
        return fields

    def answered(self, reply: Reply, body: dict[str, Any]) -> None:
        if _RESPONSES_API.get():
            self.responses_api.keep(self.responses_api.response(reply, body, self.usage(reply, body)), body)

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        if _RESPONSES_API.get():
            return responses.usage(reply)
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        if _RESPONSES_API.get():
            return self.responses_api.response(reply, body, self.usage(reply, body))
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
        if _RESPONSES_API.get():
            return self.responses_api.events(reply, body, self.usage(reply, body))
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
