"""What every simulator's wire code shares: the records of a request and its answer, the
provider-neutral reply, and the text helpers (tokens, stream pieces, server-sent events)."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    received_at: float  # time.monotonic()

    @property
    def model(self) -> str | None:
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) else None


@dataclass(frozen=True)
class RecordedResponse:
    """What a simulator answered (or how it failed) for one request.

    ``usage`` is the provider-native usage object exactly as sent; the token fields are
    the same numbers in provider-neutral form (prompt tokens include cache reads and
    writes). ``thinking`` is the thinking text sent (``redacted_thinking``: a redacted block
    was sent instead). ``status`` 0 means no HTTP response was sent (dropped, or the client
    gave up first); ``fault`` names the fault that decided, if any, or the check that
    refused the request (``"invalid_thinking"``, ``"previous_response_not_found"``). ``elapsed_s``
    runs from receipt to the last byte, the drop or the give-up. ``reasoning_tokens`` are the
    completion tokens spent thinking (part of ``completion_tokens``); ``response_id`` is the id a
    stateful API gave the answer (OpenAI Responses), ``previous_response_id`` the stored answer
    the request continued.
    """

    status: int
    path: str
    model: str | None = None
    stream: bool = False
    answer: str | None = None
    tool_call: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    thinking: str | None = None
    redacted_thinking: bool = False
    response_id: str | None = None
    previous_response_id: str | None = None
    fault: str | None = None
    delay_s: float = 0.0
    chunks: int = 0
    elapsed_s: float = 0.0

    @property
    def cache_write_tokens(self) -> int | None:
        """Prompt tokens written to the cache, both TTLs."""
        if self.cache_write_5m_tokens is None or self.cache_write_1h_tokens is None:
            return None
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens


@dataclass
class Reply:
    """The answer a request gets when no fault decides, provider-neutral."""

    model: str
    answer: str | None
    tool_call: dict[str, Any] | None  # {"id", "name", "arguments": dict}
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # cache reads
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    thinking: str | None = None  # the thinking text, when the request asked for thinking
    redacted_thinking: bool = False  # send the thinking as a redacted block
    reasoning_tokens: int = 0  # completion tokens spent thinking, included in completion_tokens
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))


def bearer_token(request: web.Request) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def collect_text(value: Any) -> list[str]:
    """Every text string in a message structure (strings, parts lists, ``text``/``content`` keys)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in collect_text(item)]
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return [value["text"]]
        return collect_text(value.get("content"))
    return []


def tool_result_answer(results: list[str]) -> str:
    """The tool loop's answer to a turn holding tool results: they are quoted verbatim."""
    return "The tool returned: " + "\n".join(results)


def count_tokens(text: str) -> int:
    """The simulators' deterministic token count: whitespace-separated words."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """Split text into stream pieces, one per word, that join back to exactly ``text``."""
    return re.findall(r"\s*\S+|\s+$", text)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
