"""The OpenAI Responses API's wire shapes for `OpenAISim`: checking a request, the items of a
conversation, stored responses for `previous_response_id`, signed reasoning, and the answer as
a response object or its SSE sequence. `OpenAISim` keeps the transport and the chat API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from llmgw.sim.wire import Reply, collect_text, split_words, sse

ENCRYPTED_INCLUDE = "reasoning.encrypted_content"


@dataclass(frozen=True)
class StoredResponse:
    """A Responses-API answer kept for ``previous_response_id``: the response object as sent
    and the whole conversation it ends (earlier turns, this input, this output) as input items."""

    response: dict[str, Any]
    conversation: list[dict[str, Any]]


@dataclass(frozen=True)
class Refusal:
    """A request the Responses API refuses before answering: status, message, error code."""

    status: int
    message: str
    code: str
    param: str | None = None


class ResponsesState:
    """One server's stored responses and the key it signs reasoning with (another server's
    reasoning is refused)."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._stored: dict[str, StoredResponse] = {}
        self._lock = threading.Lock()

    def stored(self, response_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._stored.get(response_id)
        return None if found is None else found.response

    def conversation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The stored turns ``previous_response_id`` continues, then this request's input."""
        previous = body.get("previous_response_id")
        with self._lock:
            found = self._stored.get(previous) if isinstance(previous, str) else None
        return [*(found.conversation if found else []), *input_items(body.get("input"))]

    def refusal(self, body: dict[str, Any]) -> Refusal | None:
        previous = body.get("previous_response_id")
        if previous is not None:
            with self._lock:
                known = isinstance(previous, str) and previous in self._stored
            if not known:
                return Refusal(404, f"Previous response with id '{previous}' not found.",
                               "previous_response_not_found", "previous_response_id")
        for item in input_items(body.get("input")):
            blob = item.get("encrypted_content") if item.get("type") == "reasoning" else None
            if blob is not None and not (isinstance(blob, str) and self._verify(blob)):
                return Refusal(400, (
                    f"The encrypted content for item {item.get('id')} could not be verified. "
                    "Reason: Encrypted content could not be decrypted or parsed."),
                    "invalid_encrypted_content")
        return None

    def keep(self, response: dict[str, Any], body: dict[str, Any]) -> None:
        """Store a finished response unless the request said ``store: false``."""
        if body.get("store") is False:
            return
        conversation = [*self.conversation(body), *response["output"]]
        with self._lock:
            self._stored[response["id"]] = StoredResponse(response, conversation)

    def output(self, reply: Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if reply.thinking is not None:
            summary = [{"type": "summary_text", "text": reply.thinking}] if summary_asked(body) else []
            reasoning: dict[str, Any] = {"id": f"rs_{reply.id}", "type": "reasoning", "summary": summary}
            if ENCRYPTED_INCLUDE in as_list(body.get("include")):
                reasoning["encrypted_content"] = self.sign_reasoning(reasoning["id"], reply.thinking)
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
            namespace = function_tools(body.get("tools")).get(call["name"])
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

    def response(self, reply: Reply, body: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        """The response object: finished (with `usage`: output and usage), or as
        ``response.created`` shows it (`usage` None)."""
        done = usage is not None
        found = body.get("reasoning")
        reasoning: dict[str, Any] = found if isinstance(found, dict) else {}
        return {
            "id": response_id(reply),
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
            "output": self.output(reply, body) if done else [],
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
            "tools": as_list(body.get("tools")),
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def events(self, reply: Reply, body: dict[str, Any], usage: dict[str, Any]) -> list[bytes]:
        """The Responses API's SSE sequence, each event named and numbered."""
        payloads: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            payloads.append({"type": kind, "sequence_number": len(payloads), **fields})

        emit("response.created", response=self.response(reply, body, None))
        emit("response.in_progress", response=self.response(reply, body, None))
        for index, item in enumerate(self.output(reply, body)):
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
        emit("response.completed", response=self.response(reply, body, usage))
        return [sse(payload, payload["type"]) for payload in payloads]

    def sign_reasoning(self, item_id: str, text: str) -> str:
        """Opaque reasoning state: the item's id and text, and this server's HMAC of them."""
        payload = json.dumps({"id": item_id, "text": text}).encode()
        digest = hmac.new(self._secret, b"reasoning\0" + payload, hashlib.sha256).digest()
        return base64.b64encode(payload + digest).decode()

    def _verify(self, blob: str) -> bool:
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            return False
        payload, digest = raw[:-32], raw[-32:]
        expected = hmac.new(self._secret, b"reasoning\0" + payload, hashlib.sha256).digest()
        return len(raw) > 32 and hmac.compare_digest(digest, expected)


def usage(reply: Reply) -> dict[str, Any]:
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


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def response_id(reply: Reply) -> str:
    return f"resp_{reply.id}"


def summary_asked(body: dict[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    return bool(reasoning.get("summary") or reasoning.get("generate_summary"))


def validate(body: dict[str, Any]) -> str | None:
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
    for i, tool in enumerate(as_list(tools)):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return f"Missing required parameter: 'tools[{i}].type'."
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            return f"Missing required parameter: 'tools[{i}].name'."
    return None


def input_items(given: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": given}]}]
    return [item for item in as_list(given) if isinstance(item, dict)]


def is_message(item: dict[str, Any]) -> bool:
    # Easy input messages may leave out the type.
    return item.get("type", "message") == "message" and "role" in item


def output_text(output: Any) -> str:
    """A ``function_call_output``'s output: a string, or content parts."""
    return output if isinstance(output, str) else "\n".join(collect_text(output))


def item_texts(item: dict[str, Any]) -> list[str]:
    kind = item.get("type")
    if kind == "function_call":
        return [str(item.get("name", "")), str(item.get("arguments", ""))]
    if kind == "function_call_output":
        return [output_text(item.get("output"))]
    if kind == "reasoning":
        return collect_text(item.get("summary"))
    return collect_text(item.get("content"))


def tool_texts(tool: Any) -> list[str]:
    if not isinstance(tool, dict):
        return []
    if tool.get("type") == "function":
        parameters = json.dumps(tool.get("parameters") or {})
        return [str(tool.get("name", "")), str(tool.get("description") or ""), parameters]
    if tool.get("type") == "namespace":
        inner = [t for nested in as_list(tool.get("tools")) for t in tool_texts(nested)]
        return [str(tool.get("name", "")), str(tool.get("description") or ""), *inner]
    return [json.dumps(tool)]


def function_tools(tools: Any) -> dict[str, str | None]:
    """The function tools offered, in order: name -> the namespace holding it (None: top level)."""
    found: dict[str, str | None] = {}
    for tool in as_list(tools):
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            found.setdefault(tool["name"], None)
        elif tool.get("type") == "namespace":
            namespace = tool.get("name") if isinstance(tool.get("name"), str) else None
            for nested in as_list(tool.get("tools")):
                if (
                    isinstance(nested, dict)
                    and nested.get("type") == "function"
                    and isinstance(nested.get("name"), str)
                ):
                    found.setdefault(nested["name"], namespace)
    return found
