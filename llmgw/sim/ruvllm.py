"""`RuvLLMSim`: the ruvLLM example server's REST API (``/query``, ``/session``, ``/feedback``, ...).

The real server (``examples/ruvLLM/src/bin/server.rs``, axum) takes ``{"query", "session_id"}``
and answers ``{"text", "model_used", "context_size", "confidence", "latency_ms"}``, with no
token usage. Its errors are a status and a plain-text body; a malformed request body is
rejected by axum's JSON extractor (415 / 400 / 422, plain text as well).
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmgw.sim.faults import FaultPlan
from llmgw.sim.server import SimServer
from llmgw.sim.wire import Reply, bearer_token

# ruvLLM's router picks one of these model sizes (`format!("{:?}", ModelSize)`) and a
# context size from CONTEXT_BINS.
MODEL_SIZES = ("M350", "M700", "B1_2", "B2_6")
CONTEXT_BINS = (256, 512, 1024, 2048, 4096)

_ERRORS: dict[int, str] = {
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Inference error: simulated failure",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Feedback:
    """One ``POST /feedback`` body as received."""

    query: str
    response: str
    quality: float


class RuvLLMSim(SimServer):
    """ruvLLM: ``POST /query``, ``POST /session``, ``POST /feedback``, ``GET /health``,
    ``GET /stats``. Default port of the real server is 3000; here a free port.

    Faults of the plan apply to ``/query`` only; a rule with ``model`` never fires (the
    wire carries no model name). ``FaultPlan.answer`` sets ``text``;
    ``model_used``, ``confidence``, ``context_size`` and ``latency_ms`` come from the
    constructor. The records' token counts are the simulator's own word counts; ruvLLM
    sends no usage. ``sessions`` maps each session id to its (query, text) turns.
    """

    provider = "ruvllm"
    version = "0.1.0"

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        model_used: str = "M700",
        confidence: float = 0.87,
        context_size: int = 1024,
        latency_ms: float = 12.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(plan, **kwargs)
        self.model_used = model_used
        self.confidence = confidence
        self.context_size = context_size
        self.latency_ms = latency_ms
        self._state_lock = threading.Lock()
        self._sessions: dict[str, list[tuple[str, str]]] = {}
        self._feedback: list[Feedback] = []
        self._queries = 0

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/query", self._query)
        app.router.add_post("/session", self._new_session)
        app.router.add_post("/feedback", self._post_feedback)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)

    # -- state -----------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, list[tuple[str, str]]]:
        """A snapshot: session id -> its (query, text) turns, in order."""
        with self._state_lock:
            return {sid: list(turns) for sid, turns in self._sessions.items()}

    @property
    def feedback(self) -> list[Feedback]:
        """A snapshot of the feedback received, oldest first."""
        with self._state_lock:
            return list(self._feedback)

    def reset(self) -> None:
        """Clear records, sessions, feedback and counters; restart the plan's faults."""
        super().reset()
        with self._state_lock:
            self._sessions.clear()
            self._feedback.clear()
            self._queries = 0

    # -- routes ----------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # aiohttp caches it; handle_generation reads it again
        rejection = None if self.refuse_auth(request) else _axum_rejection(request, raw, _QUERY_FIELDS)
        if rejection is not None:
            started, _ = await self.receive(request)
            return self._error({"status": 0, "path": request.path}, started, *rejection)
        return await self.handle_generation(request)

    # Like the other simulators' metadata routes, these record the request but no response:
    # `responses` holds the answers to /query only.

    async def _new_session(self, request: web.Request) -> web.Response:
        await self.receive(request)
        refused = self.refuse_auth(request)
        if refused is not None:
            return _text(refused[0], refused[1])
        session_id = str(uuid.uuid4())
        with self._state_lock:
            self._sessions[session_id] = []
        return web.json_response({"session_id": session_id})

    async def _post_feedback(self, request: web.Request) -> web.Response:
        _, body = await self.receive(request)
        refused = self.refuse_auth(request)
        rejection = refused or _axum_rejection(request, await request.read(), _FEEDBACK_FIELDS)
        if rejection is not None:
            return _text(*rejection)
        with self._state_lock:
            self._feedback.append(Feedback(body["query"], body["response"], float(body["quality"])))
        return web.Response(status=200)  # axum's bare StatusCode::OK: empty body

    async def _health(self, request: web.Request) -> web.Response:
        await self.receive(request)
        return web.json_response({"status": "healthy", "version": self.version})

    async def _stats(self, request: web.Request) -> web.Response:
        await self.receive(request)
        with self._state_lock:
            queries = self._queries
            nodes = sum(len(turns) for turns in self._sessions.values())
            updates = len(self._feedback)
        return web.json_response({
            "total_queries": queries,
            "cache_hits": 0,
            "avg_latency_ms": self.latency_ms if queries else 0.0,
            "memory_nodes": nodes,
            "router_updates": updates,
        })

    # -- provider hooks --------------------------------------------------------------

    def sent_key(self, request: web.Request) -> str | None:
        return bearer_token(request)  # the server has none; a proxy in front may

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        return 401, self.error_body(401, None)

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        return {"message": message or _ERRORS.get(status) or f"Simulated error {status}"}

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return False  # the server has no streaming

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        return [body["query"]]

    def last_user_text(self, body: dict[str, Any]) -> str:
        return str(body["query"])

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any] | None:  # type: ignore[override]  # no usage on the wire
        return None  # ruvLLM reports no usage

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        text = reply.answer or ""
        session_id = body.get("session_id")
        with self._state_lock:
            self._queries += 1
            if session_id is not None:  # like get_or_create_session: unknown ids are created
                self._sessions.setdefault(session_id, []).append((body["query"], text))
        return {
            "text": text,
            "model_used": self.model_used,
            "context_size": self.context_size,
            "confidence": self.confidence,
            "latency_ms": self.latency_ms,
        }

    def error_response(self, status: int, error: dict[str, Any], headers: dict[str, str]) -> web.Response:
        return _text(status, error, headers)


def _text(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    """axum's `(StatusCode, String)`: the message as plain text, never JSON."""
    return web.Response(status=status, text=str(error.get("message", "")), headers=headers or {})


# Required fields and their JSON types; None means the field may be null or absent.
_QUERY_FIELDS: dict[str, tuple[type, ...] | None] = {"query": (str,), "session_id": None}
_FEEDBACK_FIELDS: dict[str, tuple[type, ...] | None] = {
    "query": (str,), "response": (str,), "quality": (int, float),
}


def _axum_rejection(
    request: web.Request, raw: bytes, fields: dict[str, tuple[type, ...] | None]
) -> tuple[int, dict[str, Any]] | None:
    """What axum's `Json<T>` extractor would answer for this body, or None if it accepts it."""
    if request.content_type != "application/json":
        return 415, {"message": "Expected request with `Content-Type: application/json`"}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return 400, {"message": f"Failed to parse the request body as JSON: {exc}"}
    prefix = "Failed to deserialize the JSON body into the target type: "
    if not isinstance(body, dict):
        return 422, {"message": prefix + f"invalid type: {type(body).__name__}, expected a map"}
    for name, kinds in fields.items():
        value = body.get(name)
        if kinds is None:
            if value is not None and not isinstance(value, str):
                return 422, {"message": prefix + f"{name}: invalid type, expected a string"}
        elif name not in body:
            return 422, {"message": prefix + f"missing field `{name}`"}
        elif isinstance(value, bool) or not isinstance(value, kinds) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return 422, {"message": prefix + f"{name}: invalid type"}
    return None
