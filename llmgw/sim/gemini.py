"""`GeminiSim`: the Gemini API (Google AI Studio) generateContent wire protocol."""

from __future__ import annotations

import json
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmgw.sim.server import SimServer
from llmgw.sim.wire import Reply, collect_text, split_words, sse

_VERSIONS = ("v1beta", "v1", "v1alpha")
_METHODS = ("generateContent", "streamGenerateContent")
_ROLES = ("user", "model")

# (status name, default message) per HTTP status, as Google's API front end sends them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    # Not Google's other 503 text, "The model is overloaded. Please try again later.":
    # LiteLLM maps any error naming it to InternalServerError, and a 503 should reach
    # callers as ServiceUnavailableError.
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


@dataclass(frozen=True)
class _Call:
    """What the URL says about a generation request (Gemini keeps these out of the body)."""

    stream: bool = False
    sse: bool = False


# Per request: aiohttp runs each handler in its own task, so each request sees its own value.
_CALL: ContextVar[_Call] = ContextVar("gemini_call")
_NO_CALL = _Call()


class GeminiSim(SimServer):
    """Gemini API: ``POST /v1beta/models/{model}:generateContent``, ``...:streamGenerateContent``
    (``?alt=sse`` for server-sent events, else one streamed JSON array), ``GET /v1beta/models``
    and ``GET /v1beta/models/{model}``; ``/v1`` and ``/v1alpha`` work the same.

    Auth is the ``x-goog-api-key`` header (what LiteLLM sends) or the ``key`` query
    parameter. As the real API, a wrong key is answered 400 ``API_KEY_INVALID`` (LiteLLM
    maps its message to AuthenticationError) and a missing one 403 ``PERMISSION_DENIED``.

    LiteLLM's ``gemini/<model>`` needs ``api_base = base_url + "/v1beta"``: it posts to
    ``{api_base}/models/{model}:generateContent`` (streams: ``:streamGenerateContent?alt=sse``),
    so an api_base without the version misses every route.

    A ``malformed`` array-form stream is an unterminated array: the base breaks only SSE
    ``data:`` lines.
    """

    provider = "gemini"

    default_models = ("gemini-sim", "gemini-sim-flash")

    def _add_routes(self, app: web.Application) -> None:
        for version in _VERSIONS:
            for method in _METHODS:
                app.router.add_post(f"/{version}/models/{{model}}:{method}", self.handle_generation)
            app.router.add_get(f"/{version}/models", self._list_models)
            app.router.add_get(f"/{version}/models/{{model}}", self._get_model)

    async def receive(self, request: web.Request) -> tuple[float, Any]:
        started, body = await super().receive(request)
        model = request.match_info.get("model")
        if isinstance(body, dict) and model is not None:
            stream = request.path.endswith(":streamGenerateContent")
            _CALL.set(_Call(stream=stream, sse=stream and request.query.get("alt") == "sse"))
            # The pipeline reads the model from the body; the record keeps the body as sent.
            body = {**body, "model": model}
        return started, body

    @property
    def sse_content_type(self) -> str:  # type: ignore[override]  # per request, not per class
        # The JSON-array stream form is one application/json document that arrives piecewise.
        return "text/event-stream" if _CALL.get(_NO_CALL).sse else "application/json; charset=UTF-8"

    async def _list_models(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        return web.json_response({"models": [_model_info(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0])
        name = request.match_info["model"]
        if name not in self.models:
            return web.json_response(self.error_body(404, f"models/{name} is not found"), status=404)
        return web.json_response(_model_info(name))

    # -- auth and errors -------------------------------------------------------------

    def sent_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key") or None

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        if sent is None:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return 403, _error(403, "PERMISSION_DENIED", message)
        message = "API key not valid. Please pass a valid API key."
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        localized = {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": message,
        }
        return 400, _error(400, "INVALID_ARGUMENT", message, [info, localized])

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        name, default = _ERRORS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", ""))
        return _error(status, name, message or default or f"Simulated error {status}.")

    # -- requests --------------------------------------------------------------------

    def validate(self, request: web.Request, body: dict[str, Any]) -> str | None:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified\n"
        for content in contents:
            if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
                return "* GenerateContentRequest.contents: contents.parts must not be empty.\n"
            if content.get("role", "user") not in _ROLES:
                return "Please use a valid role: user, model."
        return None

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return _CALL.get(_NO_CALL).stream

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        names = []
        for tool in _list(body.get("tools")):
            for declaration in _list(_field(tool, "functionDeclarations")):
                if isinstance(declaration.get("name"), str):
                    names.append(declaration["name"])
        return names

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        system = _field(body, "systemInstruction")
        texts = _part_texts(system.get("parts")) if isinstance(system, dict) else []
        for content in _list(body.get("contents")):
            for part in _list(content.get("parts")):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                result = _field(part, "functionResponse")
                if isinstance(result, dict):
                    texts += collect_text(result.get("response"))
        return texts

    def last_user_text(self, body: dict[str, Any]) -> str:
        # A user turn may hold only functionResponse parts; quote the last one with text.
        for content in reversed(_list(body.get("contents"))):
            texts = _part_texts(content.get("parts"))
            if content.get("role", "user") == "user" and texts:
                return " ".join(texts)
        return ""

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        # promptTokenCount includes the cached tokens, as the neutral prompt count does.
        # Thought tokens are Gemini's own count, outside candidatesTokenCount (the neutral
        # completion count holds both) and inside totalTokenCount; sent only when there are any.
        candidates = reply.completion_tokens - reply.reasoning_tokens
        usage: dict[str, Any] = {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
        }
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
        if reply.reasoning_tokens:
            usage["thoughtsTokenCount"] = reply.reasoning_tokens
        return usage

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        candidate = {"content": self._content(reply), "finishReason": "STOP", "index": 0}
        return self._response(reply, [candidate], self.usage(reply, body))

    def stream_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        usage = self.usage(reply, body)
        # Every chunk carries usageMetadata, as the real stream does; only the last one has
        # the candidate count, so clients must keep the last value rather than add them up.
        # Thinking comes before the answer, so the thought count is already on every chunk.
        thoughts = {k: v for k, v in usage.items() if k == "thoughtsTokenCount"}
        running = {
            "promptTokenCount": usage["promptTokenCount"],
            "totalTokenCount": usage["promptTokenCount"] + reply.reasoning_tokens,
            "promptTokensDetails": usage["promptTokensDetails"],
            **thoughts,
        }
        if reply.tool_call is not None:
            parts_list = [self._content(reply)["parts"]]  # Gemini sends a call whole, never in pieces
        else:
            parts_list = [[{"text": piece}] for piece in split_words(reply.answer or "")] or [[{"text": ""}]]
        chunks = []
        for i, parts in enumerate(parts_list):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            last = i == len(parts_list) - 1
            if last:
                candidate["finishReason"] = "STOP"
            chunks.append(self._response(reply, [candidate], usage if last else running))
        if _CALL.get(_NO_CALL).sse:
            return [sse(chunk) for chunk in chunks]
        # The JSON-array form: "[", the responses separated by ",\r\n", "]".
        pieces = [("[" if i == 0 else ",\r\n") + json.dumps(chunk) for i, chunk in enumerate(chunks)]
        pieces[-1] += "]"
        return [piece.encode() for piece in pieces]

    def tool_call_id(self) -> str:
        return secrets.token_hex(4)

    def _content(self, reply: Reply) -> dict[str, Any]:
        if reply.tool_call is not None:
            call = reply.tool_call
            # The id is what Gemini 3 returns; LiteLLM keeps it as the OpenAI tool_call id.
            part = {"functionCall": {"id": call["id"], "name": call["name"], "args": call["arguments"]}}
            return {"parts": [part], "role": "model"}
        return {"parts": [{"text": reply.answer or ""}], "role": "model"}

    def _response(
        self, reply: Reply, candidates: list[dict[str, Any]], usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": reply.model,
            "responseId": reply.id,
        }


def _error(
    status: int, name: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if details:
        error["details"] = details
    return {"error": error}


def _model_info(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "description": "A simulated Gemini model.",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
    }


def _field(value: Any, camel: str) -> Any:
    """A request field by its JSON name or its proto (snake_case) name; the API takes both."""
    if not isinstance(value, dict):
        return None
    if camel in value:
        return value[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return value.get(snake)


def _list(value: Any) -> list[Any]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _part_texts(parts: Any) -> list[str]:
    return [p["text"] for p in _list(parts) if isinstance(p.get("text"), str)]
