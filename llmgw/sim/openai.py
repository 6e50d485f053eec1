"""`OpenAISim`: OpenAI's chat-completions and Responses wire protocols (JSON and SSE)."""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmgw.sim.server import Reply, SimServer, bearer_token, collect_text, split_words, sse

_FINGERPRINT = "fp_llmgw_sim"

# Which API the request being handled speaks: the shared pipeline calls the same hooks for
# both, and each aiohttp request runs in its own task, so a context variable tells them apart.
_RESPONSES_API: contextvars.ContextVar[bool] = contextvars.ContextVar("llmgw_sim_responses", default=False)
_ENCRYPTED_INCLUDE = "reasoning.encrypted_content"

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


@dataclass(frozen=True)
class StoredResponse:
    """A Responses-API answer kept for ``previous_response_id``: the response object as sent
    and the whole conversation it ends (earlier turns, this input, this output) as input items."""

    response: dict[str, Any]
    conversation: list[dict[str, Any]]


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
        self._secret = secrets.token_bytes(32)  # per server: another server's reasoning is refused
        self._stored: dict[str, StoredResponse] = {}
        self._stored_lock = threading.Lock()

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
        with self._stored_lock:
            stored = self._stored.get(response_id)
        return None if stored is None else stored.response

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
            return _validate_responses(body)
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
            return list(_function_tools(body.get("tools")))
        tools = body.get("tools")
        names = []
        for tool in tools if isinstance(tools, list) else []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
        return names

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {"x-request-id": f"req_{reply.id}" if reply else "req_sim", "openai-processing-ms": "1"}

    # -- the Responses API: requests and state -----------------------------------------

    def _conversation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The stored turns ``previous_response_id`` continues, then this request's input."""
        previous = body.get("previous_response_id")
        with self._stored_lock:
            stored = self._stored.get(previous) if isinstance(previous, str) else None
        return [*(stored.conversation if stored else []), *_input_items(body.get("input"))]

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        if not _RESPONSES_API.get():
            return super().prompt_texts(body)
        texts = collect_text(body.get("instructions"))
        texts += [t for item in self._conversation(body) for t in _item_texts(item)]
        return texts + [t for tool in _list(body.get("tools")) for t in _tool_texts(tool)]

    def last_user_text(self, body: dict[str, Any]) -> str:
        if not _RESPONSES_API.get():
            return super().last_user_text(body)
        for item in reversed(self._conversation(body)):
            if _is_message(item) and item.get("role") == "user":
                return " ".join(collect_text(item.get("content")))
        return ""

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        """Responses API: the outputs of the ``function_call_output`` items after the last user
        message (Codex sends them alone, continuing ``previous_response_id``, or whole)."""
        if not _RESPONSES_API.get():
            return super().tool_results(body)
        results: list[str] = []
        for item in reversed(self._conversation(body)):
            if _is_message(item) and item.get("role") == "user":
                break
            if item.get("type") == "function_call_output":
                results.insert(0, _output_text(item.get("output")))
        return results or None

    def wants_thinking(self, body: dict[str, Any]) -> bool:
        reasoning = body.get("reasoning") if _RESPONSES_API.get() else None
        return isinstance(reasoning, dict) and reasoning.get("effort") != "none"

    def refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str] | None:
        if not _RESPONSES_API.get():
            return None
        previous = body.get("previous_response_id")
        if previous is not None:
            with self._stored_lock:
                known = isinstance(previous, str) and previous in self._stored
            if not known:
                message = f"Previous response with id '{previous}' not found."
                error = _error(message, "invalid_request_error", "previous_response_not_found")
                error["error"]["param"] = "previous_response_id"
                return 404, error, "previous_response_not_found"
        for item in _input_items(body.get("input")):
            blob = item.get("encrypted_content") if item.get("type") == "reasoning" else None
            if blob is not None and not (isinstance(blob, str) and self._verify_reasoning(blob)):
                message = (
                    f"The encrypted content for item {item.get('id')} could not be verified. "
                    "Reason: Encrypted content could not be decrypted or parsed."
                )
                error = _error(message, "invalid_request_error", "invalid_encrypted_content")
                return 400, error, "invalid_encrypted_content"
        return None

    def record_fields(self, body: dict[str, Any], reply: Reply | None) -> dict[str, Any]:
        if not _RESPONSES_API.get():
            return {}
        previous = body.get("previous_response_id")
        fields: dict[str, Any] = {"previous_response_id": previous if isinstance(previous, str) else None}
        if reply is not None:
            fields["response_id"] = _response_id(reply)
            if reply.thinking is not None and not _summary_asked(body):
                fields["thinking"] = None  # reasoned (and counted) but no summary was sent
        return fields

    def answered(self, reply: Reply, body: dict[str, Any]) -> None:
        if not _RESPONSES_API.get() or body.get("store") is False:
            return
        response = self._response(reply, body, done=True)
        conversation = [*self._conversation(body), *response["output"]]
        with self._stored_lock:
            self._stored[response["id"]] = StoredResponse(response, conversation)

    def _encrypt_reasoning(self, item_id: str, text: str) -> str:
        """Opaque reasoning state: the item's id and text, and this server's HMAC of them."""
        payload = json.dumps({"id": item_id, "text": text}).encode()
        digest = hmac.new(self._secret, b"reasoning\0" + payload, hashlib.sha256).digest()
        return base64.b64encode(payload + digest).decode()

    def _verify_reasoning(self, blob: str) -> bool:
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            return False
        payload, digest = raw[:-32], raw[-32:]
        expected = hmac.new(self._secret, b"reasoning\0" + payload, hashlib.sha256).digest()
        return len(raw) > 32 and hmac.compare_digest(digest, expected)

    # -- the Responses API: answers ----------------------------------------------------

    def _output(self, reply: Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if reply.thinking is not None:
            summary = [{"type": "summary_text", "text": reply.thinking}] if _summary_asked(body) else []
            reasoning: dict[str, Any] = {"id": f"rs_{reply.id}", "type": "reasoning", "summary": summary}
            if _ENCRYPTED_INCLUDE in _list(body.get("include")):
                reasoning["encrypted_content"] = self._encrypt_reasoning(reasoning["id"], reply.thinking)
            items.append(reasoning)
        if reply.tool_call is not None:
            call = reply.tool_call
            item = {
                "id": f"fc_{reply.id}",
                "type": "function_call",
                "status": "completed",
                "arguments": json.dumps(call["arguments"]),
                "call_id": call["id"],
                "name": call["name"],
            }
            namespace = _function_tools(body.get("tools")).get(call["name"])
            if namespace is not None:
                item["namespace"] = namespace
            items.append(item)
        else:
            text = {"type": "output_text", "annotations": [], "logprobs": [], "text": reply.answer or ""}
            items.append(
                {
                    "id": f"msg_{reply.id}",
                    "type": "message",
                    "status": "completed",
                    "content": [text],
                    "role": "assistant",
                }
            )
        return items

    def _response(self, reply: Reply, body: dict[str, Any], *, done: bool) -> dict[str, Any]:
        """The response object: finished (output and usage), or as ``response.created`` shows it."""
        found = body.get("reasoning")
        reasoning: dict[str, Any] = found if isinstance(found, dict) else {}
        return {
            "id": _response_id(reply),
            "object": "response",
            "created_at": reply.created,
            "status": "completed" if done else "in_progress",
            "background": False,
            "completed_at": reply.created if done else None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": reply.model,
            "output": self._output(reply, body) if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default",
            "store": body.get("store") is not False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": _list(body.get("tools")),
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage(reply, body) if done else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def _response_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        """The Responses API's SSE sequence, each event named and numbered."""
        payloads: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            payloads.append({"type": kind, "sequence_number": len(payloads), **fields})

        emit("response.created", response=self._response(reply, body, done=False))
        emit("response.in_progress", response=self._response(reply, body, done=False))
        for index, item in enumerate(self._output(reply, body)):
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "reasoning":
                emit("response.output_item.added", output_index=index, item={**item, "summary": []})
                for n, part in enumerate(item["summary"]):
                    emit(
                        "response.reasoning_summary_part.added",
                        **where,
                        summary_index=n,
                        part={**part, "text": ""},
                    )
                    for piece in split_words(part["text"]):
                        emit("response.reasoning_summary_text.delta", **where, summary_index=n, delta=piece)
                    emit("response.reasoning_summary_text.done", **where, summary_index=n, text=part["text"])
                    emit("response.reasoning_summary_part.done", **where, summary_index=n, part=part)
            elif item["type"] == "function_call":
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
                for piece in split_words(item["arguments"]):
                    emit("response.function_call_arguments.delta", **where, delta=piece)
                emit(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            else:
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "content": [], "status": "in_progress"},
                )
                part = item["content"][0]
                at = {**where, "content_index": 0}
                emit("response.content_part.added", **at, part={**part, "text": ""})
                for piece in split_words(part["text"]):
                    emit("response.output_text.delta", **at, delta=piece, logprobs=[])
                emit("response.output_text.done", **at, text=part["text"], logprobs=[])
                emit("response.content_part.done", **at, part=part)
            emit("response.output_item.done", output_index=index, item=item)
        emit("response.completed", response=self._response(reply, body, done=True))
        return [sse(payload, payload["type"]) for payload in payloads]

    # -- answers ---------------------------------------------------------------------

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        if _RESPONSES_API.get():
            return {
                "input_tokens": reply.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": reply.cached_tokens,
                    "cache_write_tokens": reply.cache_write_5m_tokens + reply.cache_write_1h_tokens,
                },
                "output_tokens": reply.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            }
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
            return self._response(reply, body, done=True)
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
            return self._response_events(reply, body)
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


# -- the Responses API's shapes ----------------------------------------------------------


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _response_id(reply: Reply) -> str:
    return f"resp_{reply.id}"


def _summary_asked(body: dict[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    return bool(reasoning.get("summary") or reasoning.get("generate_summary"))


def _validate_responses(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "Missing required parameter: 'model'."
    given = body.get("input")
    if given is None and not any(body.get(k) for k in ("previous_response_id", "prompt", "conversation")):
        return "Missing required parameter: 'input'."
    if given is not None and not isinstance(given, (str, list)):
        return (
            "Invalid type for 'input': expected one of a string or array of input items, but got "
            f"{type(given).__name__} instead."
        )
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return f"Invalid type for 'tools': expected an array, but got {type(tools).__name__} instead."
    for i, tool in enumerate(_list(tools)):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return f"Missing required parameter: 'tools[{i}].type'."
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            return f"Missing required parameter: 'tools[{i}].name'."
    return None


def _input_items(given: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": given}]}]
    return [item for item in _list(given) if isinstance(item, dict)]


def _is_message(item: dict[str, Any]) -> bool:
    # Easy input messages may leave out the type.
    return item.get("type", "message") == "message" and "role" in item


def _output_text(output: Any) -> str:
    """A ``function_call_output``'s output: a string, or content parts."""
    return output if isinstance(output, str) else "\n".join(collect_text(output))


def _item_texts(item: dict[str, Any]) -> list[str]:
    kind = item.get("type")
    if kind == "function_call":
        return [str(item.get("name", "")), str(item.get("arguments", ""))]
    if kind == "function_call_output":
        return [_output_text(item.get("output"))]
    if kind == "reasoning":
        return collect_text(item.get("summary"))
    return collect_text(item.get("content"))


def _tool_texts(tool: Any) -> list[str]:
    if not isinstance(tool, dict):
        return []
    if tool.get("type") == "function":
        parameters = json.dumps(tool.get("parameters") or {})
        return [str(tool.get("name", "")), str(tool.get("description") or ""), parameters]
    if tool.get("type") == "namespace":
        inner = [t for nested in _list(tool.get("tools")) for t in _tool_texts(nested)]
        return [str(tool.get("name", "")), str(tool.get("description") or ""), *inner]
    return [json.dumps(tool)]


def _function_tools(tools: Any) -> dict[str, str | None]:
    """The function tools offered, in order: name -> the namespace holding it (None: top level)."""
    found: dict[str, str | None] = {}
    for tool in _list(tools):
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            found.setdefault(tool["name"], None)
        elif tool.get("type") == "namespace":
            namespace = tool.get("name") if isinstance(tool.get("name"), str) else None
            for nested in _list(tool.get("tools")):
                if (
                    isinstance(nested, dict)
                    and nested.get("type") == "function"
                    and isinstance(nested.get("name"), str)
                ):
                    found.setdefault(nested["name"], namespace)
    return found
