"""RuVector (ruvLLM) as a LiteLLM provider: ``model: ruvector/<auto|fast|quality|balanced>``.

ruvLLM answers ``POST /query {"query", "session_id"}`` with text and routing facts but no
token usage, and keeps conversation memory per session. This handler

- flattens the whole conversation into ``query`` (see `flatten_messages`);
- keeps one ruvLLM session per (api_base, project_id, agent_id), taken from the request's
  ``metadata`` (created with ``POST /session``; a deterministic id if that fails);
- counts tokens with ``litellm.token_counter``; the deployment's prices (0) give the cost;
- puts ruvLLM's ``model_used``, ``confidence``, ``context_size``, ``latency_ms`` (and who
  served the request) in ``response._hidden_params["ruvector"]``;
- raises `RuVectorError` (a ``litellm.CustomLLMError``) with the HTTP status so LiteLLM's
  Router retries and falls back exactly as for built-in providers;
- when ruvLLM is *unreachable* (refused / connect timeout), answers with the deployment's
  Ollama fallback and keeps doing so for ``retry_after_s``, then tries ruvLLM again.

Deployment settings (``litellm_params`` in ``model_list.yaml``)::

    model: ruvector/auto           # or fast | quality | balanced (a label: ruvLLM routes itself)
    api_base: http://127.0.0.1:3000   # default
    ollama_api_base: http://127.0.0.1:11434   # optional: enables the Ollama fallback
    ollama_model: llama3.2         # required with ollama_api_base
    retry_after_s: 30              # cool-down before ruvLLM is tried again (default 30)
    connect_timeout_s: 2           # how long a connect may take before "unreachable" (default 2)
    timeout: 600                   # LiteLLM's own: the read timeout of one call
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from llmgw._litellm.providers import (
    CustomLLM,
    GenericStreamingChunk,
    ModelResponse,
    custom_provider_map,
    register_prices,
    setup_custom_providers,
    unpriced,
)
from llmgw.providers.ruvector_wire import (  # (re-exported: _hidden_params' key)
    HIDDEN_KEY as HIDDEN_KEY,
)
from llmgw.providers.ruvector_wire import (
    PROVIDER,
    UNREACHABLE,
    Answer,
    HttpCall,
    RuVectorError,
    checked,
    count_prompt_tokens,
    count_text_tokens,
    flatten_messages,
    json_answer,
    ollama_messages,
    ollama_options,
    positive,
    ruvllm_answer,
    str_or_none,
    stream_chunks,
    to_model_response,
    transport_error,
)

MODELS = ("auto", "fast", "quality", "balanced")
DEFAULT_API_BASE = "http://127.0.0.1:3000"
DEFAULT_RETRY_AFTER_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_TIMEOUT_S = 600.0
SESSION_TIMEOUT_S = 5.0  # /session is trivial; do not hold a request long for it
RECENT_EXCHANGES = 512  # request ids remembered for feedback (each holds its query and answer)


@dataclass(frozen=True)
class Settings:
    """One deployment's settings, read from its litellm_params (LiteLLM passes the unknown
    ones in ``optional_params``)."""

    api_base: str
    ollama_api_base: str | None
    ollama_model: str | None
    retry_after_s: float
    connect_timeout_s: float
    read_timeout_s: float

    @classmethod
    def of(cls, api_base: str | None, params: Mapping[str, Any], timeout: Any) -> Settings:
        ollama_base = params.get("ollama_api_base")
        ollama_model = params.get("ollama_model")
        if ollama_base and not ollama_model:
            raise RuVectorError(400, "ruvector deployment: ollama_api_base is set but ollama_model is "
                                     "missing; set both in litellm_params or neither")
        if isinstance(timeout, httpx.Timeout):
            timeout = timeout.read
        return cls(
            api_base=(api_base or DEFAULT_API_BASE).rstrip("/"),
            ollama_api_base=str(ollama_base).rstrip("/") if ollama_base else None,
            ollama_model=str(ollama_model) if ollama_model else None,
            retry_after_s=positive(params.get("retry_after_s"), DEFAULT_RETRY_AFTER_S),
            connect_timeout_s=positive(params.get("connect_timeout_s"), DEFAULT_CONNECT_TIMEOUT_S),
            read_timeout_s=positive(timeout, DEFAULT_TIMEOUT_S),
        )

    def timeout(self, read_s: float | None = None) -> httpx.Timeout:
        read = self.read_timeout_s if read_s is None else min(read_s, self.read_timeout_s)
        return httpx.Timeout(read, connect=self.connect_timeout_s)


@dataclass(frozen=True)
class Caller:
    """Who is asking, from the request's metadata (``litellm_params["metadata"]``)."""

    project_id: str | None = None
    agent_id: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, litellm_params: Mapping[str, Any] | None) -> Caller:
        # LiteLLM hands a CustomLLM the caller's `metadata=` (plus the Router's own keys) as
        # litellm_params["metadata"]; "litellm_metadata" is its newer spelling for some routes.
        params = litellm_params or {}
        for key in ("metadata", "litellm_metadata"):
            md = params.get(key)
            if isinstance(md, Mapping) and any(k in md for k in _CALLER_KEYS):
                return cls(str_or_none(md.get("project_id")), str_or_none(md.get("agent_id")),
                           str_or_none(md.get("llmgw_request_id")))
        return cls()


_CALLER_KEYS = ("project_id", "agent_id", "llmgw_request_id")


@dataclass(frozen=True)
class Exchange:
    """One answered request, kept so feedback can be sent for it later."""

    request_id: str
    api_base: str  # the ruvLLM server that feedback goes to
    query: str
    response: str
    served_by: str  # "ruvllm" | "ollama"


Flow = Generator[HttpCall, httpx.Response, Answer]


# -- the handler ----------------------------------------------------------------------------

class RuVectorLLM(CustomLLM):
    """The ``ruvector`` provider. One instance per process (see `register`); its state is
    the session ids, the cool-downs of unreachable servers and recent exchanges.

    ``clock`` (seconds, monotonic) decides cool-downs; tests replace it to pass time.
    ``keep_recent`` is how many answered requests are kept for `feedback_for`.
    """

    def __init__(self, *, clock: Callable[[], float] | None = None,
                 keep_recent: int = RECENT_EXCHANGES) -> None:
        super().__init__()
        self.clock: Callable[[], float] = clock or time.monotonic
        self.keep_recent = keep_recent
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str, str], str] = {}
        self._down_until: dict[str, float] = {}
        self._recent: OrderedDict[str, Exchange] = OrderedDict()
        # One AsyncClient per event loop: a client's connections belong to the loop that
        # opened them, and tests / asyncio.run() create several loops per process.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())
        self._client: httpx.Client | None = None

    # -- LiteLLM's entry points ---------------------------------------------------------

    async def acompletion(
            self, model: str, messages: list[Any], api_base: str | None = None,
            model_response: ModelResponse | None = None,
            optional_params: dict[str, Any] | None = None,
            litellm_params: dict[str, Any] | None = None, timeout: Any = None,
            **_: Any) -> ModelResponse:
        answer = await self._run_async(self._flow(model, messages, api_base, optional_params,
                                                  litellm_params, timeout))
        return to_model_response(model_response, model, answer)

    def completion(
            self, model: str, messages: list[Any], api_base: str | None = None,
            model_response: ModelResponse | None = None,
            optional_params: dict[str, Any] | None = None,
            litellm_params: dict[str, Any] | None = None, timeout: Any = None,
            **_: Any) -> ModelResponse:
        answer = self._run_sync(self._flow(model, messages, api_base, optional_params,
                                           litellm_params, timeout))
        return to_model_response(model_response, model, answer)

    async def astreaming(
            self, model: str, messages: list[Any], api_base: str | None = None,
            optional_params: dict[str, Any] | None = None,
            litellm_params: dict[str, Any] | None = None, timeout: Any = None,
            **_: Any) -> AsyncIterator[GenericStreamingChunk]:
        # ruvLLM does not stream: the whole answer is one chunk, then usage.
        answer = await self._run_async(self._flow(model, messages, api_base, optional_params,
                                                  litellm_params, timeout))
        for chunk in stream_chunks(answer):
            yield chunk

    def streaming(
            self, model: str, messages: list[Any], api_base: str | None = None,
            optional_params: dict[str, Any] | None = None,
            litellm_params: dict[str, Any] | None = None, timeout: Any = None,
            **_: Any) -> Iterator[GenericStreamingChunk]:
        answer = self._run_sync(self._flow(model, messages, api_base, optional_params,
                                           litellm_params, timeout))
        yield from stream_chunks(answer)

    # -- feedback -----------------------------------------------------------------------

    def exchange(self, request_id: str) -> Exchange | None:
        """The recent exchange of an llmgw request id, if this process served it."""
        with self._lock:
            return self._recent.get(request_id)

    async def feedback(self, api_base: str, query: str, response: str, quality: float,
                       *, timeout_s: float = 10.0) -> None:
        """``POST {api_base}/feedback``; ``quality`` in [0, 1]. Raises `RuVectorError`."""
        if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not (
                math.isfinite(quality) and 0.0 <= quality <= 1.0):
            raise ValueError(f"quality must be a number in [0, 1], got {quality!r}")
        base = api_base.rstrip("/")
        body = {"query": query, "response": response, "quality": float(quality)}
        call = HttpCall("POST", f"{base}/feedback", body,
                        httpx.Timeout(timeout_s, connect=DEFAULT_CONNECT_TIMEOUT_S))
        await self._run_async(checked(call, f"ruvLLM at {base}"))

    async def feedback_for(self, request_id: str, quality: float) -> bool:
        """Send feedback for a recent request. False if Ollama served it (ruvLLM never saw it);
        `LookupError` if the request is unknown or too old."""
        exchange = self.exchange(request_id)
        if exchange is None:
            raise LookupError(f"no recent ruvector request {request_id!r} in this process "
                              f"(only the last {self.keep_recent} are kept)")
        if exchange.served_by != "ruvllm":
            return False
        await self.feedback(exchange.api_base, exchange.query, exchange.response, quality)
        return True

    # -- state --------------------------------------------------------------------------

    def down_until(self, api_base: str) -> float | None:
        """Until when (``clock`` time) requests for this ruvLLM go to Ollama, if they do."""
        with self._lock:
            return self._down_until.get(api_base.rstrip("/"))

    def reset(self) -> None:
        """Forget sessions, cool-downs and recent exchanges."""
        with self._lock:
            self._sessions.clear()
            self._down_until.clear()
            self._recent.clear()

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (and the sync one)."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the logic, as a generator of HTTP calls ----------------------------------------

    def _flow(self, model: str, messages: list[Any], api_base: str | None,
              optional_params: Mapping[str, Any] | None, litellm_params: Mapping[str, Any] | None,
              timeout: Any) -> Flow:
        """Everything but the I/O: yields HTTP calls, gets responses (or exceptions) back."""
        if model not in MODELS:
            raise RuVectorError(400, f"unknown ruvector model {model!r}: use one of "
                                     + ", ".join(f"ruvector/{m}" for m in MODELS))
        params = optional_params or {}
        settings = Settings.of(api_base, params, timeout)
        caller = Caller.of(litellm_params)
        query = flatten_messages(messages)

        if settings.ollama_api_base and self._cooling_down(settings.api_base):
            reason = "ruvLLM unreachable recently; cooling down"
            answer = yield from self._via_ollama(settings, messages, params, reason)
        else:
            try:
                session_id = yield from self._session(settings, caller)
                response = yield HttpCall("POST", f"{settings.api_base}/query",
                                          {"query": query, "session_id": session_id},
                                          settings.timeout())
            except UNREACHABLE as exc:
                answer = yield from self._unreachable(settings, messages, params, exc)
            except httpx.TimeoutException as exc:
                raise RuVectorError(408, f"ruvLLM at {settings.api_base}: Request timed out "
                                         f"({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise RuVectorError(500, f"ruvLLM at {settings.api_base}: connection failed "
                                         f"mid-request ({type(exc).__name__}: {exc})") from None
            else:
                with self._lock:
                    self._down_until.pop(settings.api_base, None)
                answer = ruvllm_answer(response, settings, session_id, messages, model)
        if caller.request_id:
            self._remember(Exchange(caller.request_id, settings.api_base, query, answer.text,
                                    answer.info["served_by"]))
        return answer

    def _session(self, settings: Settings, caller: Caller) -> Generator[HttpCall, httpx.Response,
                                                                        str | None]:
        """The session id of (api_base, project, agent); None for a caller without identity."""
        if caller.project_id is None and caller.agent_id is None:
            return None
        key = (settings.api_base, caller.project_id or "", caller.agent_id or "")
        with self._lock:
            known = self._sessions.get(key)
        if known is not None:
            return known
        try:
            response = yield HttpCall("POST", f"{settings.api_base}/session", None,
                                      settings.timeout(SESSION_TIMEOUT_S))
            session_id = response.json().get("session_id") if response.status_code == 200 else None
        except UNREACHABLE:
            raise  # the server is down: the caller falls back, nothing to cache
        except (httpx.HTTPError, ValueError, AttributeError):
            session_id = None
        if not isinstance(session_id, str) or not session_id:
            # An old server without /session, or a failing one: ruvLLM creates a session for
            # an unknown id on first use, so a stable id of our own keeps the memory working.
            digest = hashlib.sha256(f"{key[1]}\0{key[2]}".encode()).hexdigest()[:32]
            session_id = f"llmgw-{digest}"
        with self._lock:  # first writer wins if two first calls race
            return self._sessions.setdefault(key, session_id)

    def _unreachable(self, settings: Settings, messages: list[Any], params: Mapping[str, Any],
                     exc: Exception) -> Flow:
        reason = f"ruvLLM unreachable at {settings.api_base} ({type(exc).__name__})"
        if not settings.ollama_api_base:
            raise RuVectorError(503, f"{reason}; no Ollama fallback configured (set "
                                     "ollama_api_base and ollama_model)") from None
        with self._lock:
            self._down_until[settings.api_base] = self.clock() + settings.retry_after_s
        return (yield from self._via_ollama(settings, messages, params, reason))

    def _via_ollama(self, settings: Settings, messages: list[Any], params: Mapping[str, Any],
                    reason: str) -> Flow:
        base, model = settings.ollama_api_base, settings.ollama_model
        assert base is not None and model is not None
        body: dict[str, Any] = {"model": model, "messages": ollama_messages(messages),
                                "stream": False}
        if options := ollama_options(params):
            body["options"] = options
        who = f"Ollama fallback at {base} ({reason})"
        try:
            response = yield HttpCall("POST", f"{base}/api/chat", body, settings.timeout())
        except httpx.HTTPError as exc:
            raise transport_error(exc, who, again=True) from None
        data = json_answer(response, who)
        message = data.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise RuVectorError(500, f"{who}: answer without message.content")
        prompt = data.get("prompt_eval_count")
        completion = data.get("eval_count")
        duration = data.get("total_duration")
        return Answer(
            text=text,
            prompt_tokens=prompt if isinstance(prompt, int) else count_prompt_tokens(messages),
            completion_tokens=completion if isinstance(completion, int) else count_text_tokens(text),
            info={"served_by": "ollama", "model_used": data.get("model") or model,
                  "ollama_model": model, "api_base": base, "ruvllm_api_base": settings.api_base,
                  "fallback_reason": reason, "session_id": None, "confidence": None,
                  "context_size": None,
                  "latency_ms": duration / 1e6 if isinstance(duration, (int, float)) else None},
        )

    def _cooling_down(self, api_base: str) -> bool:
        with self._lock:
            until = self._down_until.get(api_base)
        return until is not None and self.clock() < until

    def _remember(self, exchange: Exchange) -> None:
        with self._lock:
            self._recent[exchange.request_id] = exchange
            self._recent.move_to_end(exchange.request_id)
            while len(self._recent) > self.keep_recent:
                self._recent.popitem(last=False)

    # -- drivers: the same flow over async or sync httpx --------------------------------

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None or client.is_closed:
            client = self._aclients[loop] = httpx.AsyncClient()
        return client

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client()
            return self._client

    async def _run_async(self, flow: Generator[HttpCall, httpx.Response, Any]) -> Any:
        client = self._async_client()
        try:
            call = next(flow)
            while True:
                try:
                    response = await client.request(call.method, call.url, json=call.json,
                                                    timeout=call.timeout)
                except httpx.HTTPError as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(response)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    def _run_sync(self, flow: Generator[HttpCall, httpx.Response, Any]) -> Any:
        client = self._sync_client()
        try:
            call = next(flow)
            while True:
                try:
                    response = client.request(call.method, call.url, json=call.json,
                                              timeout=call.timeout)
                except httpx.HTTPError as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(response)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()


# -- the process-wide handler ---------------------------------------------------------------

_HANDLER: RuVectorLLM | None = None
_HANDLER_LOCK = threading.Lock()


def handler() -> RuVectorLLM:
    """The process's `RuVectorLLM` (created on first use; `register` makes LiteLLM use it)."""
    global _HANDLER
    with _HANDLER_LOCK:
        if _HANDLER is None:
            _HANDLER = RuVectorLLM()
        return _HANDLER


def register() -> RuVectorLLM:
    """Make ``ruvector/<model>`` a LiteLLM provider. Idempotent; appends to
    ``litellm.custom_provider_map`` and never replaces another provider's entry."""
    global _HANDLER
    entries = custom_provider_map()
    ours = [e for e in entries if e.get("provider") == PROVIDER]
    if ours:
        existing = ours[-1].get("custom_handler")  # LiteLLM uses the last match
        if not isinstance(existing, RuVectorLLM):
            raise RuntimeError(f"LiteLLM provider {PROVIDER!r} is already registered with "
                               f"{type(existing).__name__}; llmgw will not replace it")
        with _HANDLER_LOCK:
            _HANDLER = existing  # adopt it, so state is never split between two instances
    else:
        entries.append({"provider": PROVIDER, "custom_handler": handler()})
    setup_custom_providers()  # adds the name to litellm.provider_list now, not at the first call
    _register_free_models()
    return handler()


def _register_free_models() -> None:
    """Put ``ruvector/<model>`` in LiteLLM's cost map at 0 (cache prices included).

    Without an entry, a call outside a Router gets ``response_cost`` None, and building a
    Router whose deployment sets prices logs a "custom pricing but not in built-in cost map"
    warning per deployment. A deployment's own ``model_info`` prices still win.
    """
    missing = unpriced({f"{PROVIDER}/{m}" for m in MODELS})
    if missing:
        register_prices({name: {
            "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
            "cache_read_input_token_cost": 0.0, "cache_creation_input_token_cost": 0.0,
            "litellm_provider": PROVIDER, "mode": "chat"} for name in sorted(missing)})


async def feedback(api_base: str, query: str, response: str, quality: float) -> None:
    """``POST /feedback`` to a ruvLLM server through the process's handler."""
    await handler().feedback(api_base, query, response, quality)
