"""`CohereSim`: Cohere's chat wire protocols, v2 (JSON and SSE) and the legacy v1 (JSON and NDJSON)."""

from __future__ import annotations

import json
import secrets
import string
import uuid
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from llmgw.sim.faults import FaultPlan
from llmgw.sim.server import SimServer
from llmgw.sim.wire import Reply, bearer_token, collect_text, split_words, sse

# Default messages per status, in Cohere's words where we know them. LiteLLM maps
# "invalid api token" to AuthenticationError by its text.
_ERRORS: dict[int, str] = {
    400: "invalid request",
    401: "invalid api token",
    402: "Please add or update your payment method to continue using the API.",
    403: "Forbidden",
    404: "model not found",
    422: "unprocessable entity",
    429: "You are past the per minute request limit, please wait and try again later.",
    499: "request cancelled",
    500: "internal server error, this has been reported to our developers",
    501: "not implemented",
    503: "service unavailable",
    504: "gateway timeout",
}
_ID_CHARS = string.ascii_lowercase + string.digits

# Which API version the current request speaks; aiohttp runs each request in its own task.
_V1: ContextVar[bool] = ContextVar("cohere_v1", default=False)


class CohereSim(SimServer):
    """Cohere: ``POST /v2/chat`` (what LiteLLM uses by default), ``POST /v1/chat``, ``GET /v1/models``.

    Auth is ``Authorization: Bearer <key>``. LiteLLM posts to its api_base as given, so
    ``cohere/<model>`` needs the whole URL, ``api_base = base_url + "/v2/chat"``;
    ``cohere/v1/<model>`` (a model name containing ``v1/``) takes the v1 route and needs
    ``base_url + "/v1/chat"``. Errors are ``{"id", "message"}`` with the HTTP status.
    Usage reports the same numbers as ``billed_units`` and ``tokens``, and no cached tokens.

    LiteLLM 1.106.2 cannot parse the v2 event stream (it json-decodes the ``event:`` lines);
    ``fake_stream=True`` makes it ask for JSON instead. A ``malformed`` v1 stream is its
    first line, an empty line and the end: the base breaks only SSE ``data:`` lines.
    """

    provider = "cohere"

    default_models = ("command-r-sim", "command-a-sim")

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self.handle_generation)
        app.router.add_post("/v1/chat", self.handle_generation)
        app.router.add_get("/v1/models", self._list_models)

    async def receive(self, request: web.Request) -> tuple[float, Any]:
        _V1.set(request.path == "/v1/chat")
        return await super().receive(request)

    @property
    def sse_content_type(self) -> str:  # type: ignore[override]  # per request, not per class
        # v1 streams newline-delimited JSON, v2 server-sent events.
        return "application/stream+json" if _V1.get() else "text/event-stream"

    async def _list_models(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        models = [
            {
                "name": m,
                "endpoints": ["generate", "chat", "summarize"],
                "finetuned": False,
                "context_length": 128000,
                "default_endpoints": [],
                "features": ["tools", "strict_tools"],
            }
            for m in self.models
        ]
        return web.json_response({"models": models})

    # -- auth and errors -------------------------------------------------------------

    def sent_key(self, request: web.Request) -> str | None:
        return bearer_token(request)

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        return 401, self.error_body(401, "no api key supplied" if sent is None else None)

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        text = message or _ERRORS.get(status) or f"Simulated error {status}."
        return {"id": str(uuid.uuid4()), "message": text}

    # -- requests --------------------------------------------------------------------

    def validate(self, request: web.Request, body: dict[str, Any]) -> str | None:
        if _V1.get():
            # v1 takes the model as optional (it has a default) and the turn in `message`.
            message = body.get("message")
            if not (isinstance(message, str) and message.strip()) and not body.get("tool_results"):
                return (
                    "invalid request: message must be at least 1 token long "
                    "or tool results must be specified."
                )
            return None
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "invalid request: model must be specified"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "invalid request: messages must not be empty"
        return None

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        names = []
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else []:
            # v2: OpenAI-shaped {"type": "function", "function": {...}};
            # v1: {"name", "description", "parameter_definitions"}.
            spec = tool.get("function", tool) if isinstance(tool, dict) else None
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                names.append(spec["name"])
        return names

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        if not _V1.get():
            return collect_text(body.get("messages"))
        history = body.get("chat_history")
        texts = collect_text(body.get("preamble"))
        for turn in history if isinstance(history, list) else []:
            if isinstance(turn, dict):
                texts += collect_text(turn.get("message"))
        return texts + collect_text(body.get("message"))

    def last_user_text(self, body: dict[str, Any]) -> str:
        if _V1.get():
            message = body.get("message")
            return message if isinstance(message, str) else ""
        return super().last_user_text(body)

    def make_reply(self, body: dict[str, Any], plan: FaultPlan) -> Reply:
        reply = super().make_reply(body, plan)
        reply.id = str(uuid.uuid4())
        reply.cached_tokens = 0  # Cohere's usage has no cache reads to report
        if reply.tool_call is not None:
            # Cohere names its call ids after the tool: get_weather_k88p0m8504w5.
            suffix = "".join(secrets.choice(_ID_CHARS) for _ in range(12))
            reply.tool_call["id"] = f"{reply.tool_call['name']}_{suffix}"
        return reply

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
        if _V1.get():
            return {"api_version": {"version": "1"}, "billed_units": dict(counts), "tokens": dict(counts)}
        return {"billed_units": dict(counts), "tokens": dict(counts)}

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        if _V1.get():
            return self._v1_response(reply, body)
        return {
            "id": reply.id,
            "message": self._v2_message(reply),
            "finish_reason": _finish_reason(reply),
            "usage": self.usage(reply, body),
        }

    def stream_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        if _V1.get():
            return self._v1_stream(reply, body)
        start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
        first = {"id": reply.id, "type": "message-start", "delta": {"message": start}}
        events = [sse(first, "message-start")]

        def event(kind: str, data: dict[str, Any]) -> None:
            events.append(sse({"type": kind, **data}, kind))

        if reply.tool_call is not None:
            call = _v2_tool_call(reply.tool_call)
            for piece in split_words(_tool_plan(reply)):
                event("tool-plan-delta", {"delta": {"message": {"tool_plan": piece}}})
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            event("tool-call-start", {"index": 0, "delta": {"message": {"tool_calls": head}}})
            for piece in split_words(call["function"]["arguments"]):
                delta = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
                event("tool-call-delta", {"index": 0, "delta": delta})
            event("tool-call-end", {"index": 0})
        else:
            empty = {"content": {"type": "text", "text": ""}}
            event("content-start", {"index": 0, "delta": {"message": empty}})
            for piece in split_words(reply.answer or ""):
                event("content-delta", {"index": 0, "delta": {"message": {"content": {"text": piece}}}})
            event("content-end", {"index": 0})
        end = {"finish_reason": _finish_reason(reply), "usage": self.usage(reply, body)}
        event("message-end", {"delta": end})
        return events

    def _v2_message(self, reply: Reply) -> dict[str, Any]:
        if reply.tool_call is not None:
            return {
                "role": "assistant",
                "tool_plan": _tool_plan(reply),
                "tool_calls": [_v2_tool_call(reply.tool_call)],
            }
        return {"role": "assistant", "content": [{"type": "text", "text": reply.answer or ""}]}

    def _v1_response(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        text = _tool_plan(reply) if reply.tool_call is not None else reply.answer or ""
        history = body.get("chat_history")
        turns = [t for t in history if isinstance(t, dict)] if isinstance(history, list) else []
        if isinstance(body.get("message"), str):
            turns.append({"role": "USER", "message": body["message"]})
        response: dict[str, Any] = {
            "response_id": str(uuid.uuid4()),
            "text": text,
            "generation_id": reply.id,
            "chat_history": [*turns, {"role": "CHATBOT", "message": text}],
            "finish_reason": "COMPLETE",
            "meta": self.usage(reply, body),
        }
        if reply.tool_call is not None:
            call = reply.tool_call
            response["tool_calls"] = [{"name": call["name"], "parameters": call["arguments"]}]
        return response

    def _v1_stream(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        response = self._v1_response(reply, body)
        lines: list[dict[str, Any]] = [
            {"is_finished": False, "event_type": "stream-start", "generation_id": reply.id}
        ]
        if reply.tool_call is not None:
            lines.append(
                {
                    "is_finished": False,
                    "event_type": "tool-calls-generation",
                    "text": response["text"],
                    "tool_calls": response["tool_calls"],
                }
            )
        else:
            lines += [
                {"is_finished": False, "event_type": "text-generation", "text": piece}
                for piece in split_words(response["text"])
            ]
        lines.append(
            {
                "is_finished": True,
                "event_type": "stream-end",
                "response": response,
                "finish_reason": "COMPLETE",
            }
        )
        return [(json.dumps(line, separators=(",", ":")) + "\n").encode() for line in lines]


def _finish_reason(reply: Reply) -> str:
    return "TOOL_CALL" if reply.tool_call is not None else "COMPLETE"


def _tool_plan(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"I will use the {reply.tool_call['name']} tool to answer."


def _v2_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(call["arguments"])
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": arguments}}
