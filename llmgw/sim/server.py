"""`SimServer`: a loopback aiohttp server in its own thread, shared by every simulator.

The base class owns the lifecycle, the recording and the fault pipeline; a provider
subclass only says how its wire format looks (routes, auth, bodies, stream events). The
records, the reply and the text helpers they share are in `wire.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from aiohttp import web

from llmgw.sim.faults import Decision, FaultPlan, FaultState, ToolCall
from llmgw.sim.load import LoadMeter, ModelLoad
from llmgw.sim.wire import (
    RecordedRequest,
    RecordedResponse,
    Reply,
    collect_text,
    count_tokens,
    tool_result_answer,
)

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


class Dropped(Exception):
    """The server is stopping while a request waits; give up on it."""


class SimServer:
    """Base loopback simulator: lifecycle, records, faults.

    Runs an aiohttp app on ``host`` (a free port unless ``port`` is given) in a daemon
    thread with its own event loop, so sync code and async tests can both use it.
    Subclasses add routes in `_add_routes` and implement the wire-format hooks.
    """

    provider: ClassVar[str] = "base"
    sse_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    default_models: ClassVar[tuple[str, ...]] = ()  # what GET /v1/models lists

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] | None = None,
    ) -> None:
        self.models = list(self.default_models if models is None else models)
        self.api_key = api_key
        self.host = host
        self.port = port
        self._state = FaultState(plan or FaultPlan())
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._responses: list[RecordedResponse] = []
        self._reset_at = 0.0  # answers to requests that arrived before a reset are not recorded
        self._load = LoadMeter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"llmgw-sim-{self.provider}", daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            raise RuntimeError(f"{type(self).__name__} did not start within {_START_TIMEOUT_S}s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving; requests still held by a fault are dropped, not waited for."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(_STOP_TIMEOUT_S)
            except TimeoutError:
                pass  # stopping the loop below still ends the thread
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without any path."""
        if self._thread is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return f"http://{self.host}:{self.port}"

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()'s caller
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        # handler_cancellation: a client that gives up frees a request held by a fault.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plan and records ------------------------------------------------------------

    @property
    def plan(self) -> FaultPlan:
        return self._state.plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        self.set_plan(plan)

    def set_plan(self, plan: FaultPlan) -> None:
        """Replace the plan; its fault counters and RNG start fresh."""
        self._state = FaultState(plan)

    def reset(self) -> None:
        """Clear records and restart the plan's fault counters and RNG."""
        with self._lock:
            self._reset_at = time.monotonic()
            self._requests.clear()
            self._responses.clear()
        self._load.reset()
        self._state = FaultState(self._state.plan)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def responses(self) -> list[RecordedResponse]:
        """A snapshot of what was answered, in completion order."""
        with self._lock:
            return list(self._responses)

    @property
    def load(self) -> dict[str, ModelLoad]:
        """Per model: requests in flight now and at most, and requests per minute."""
        return self._load.snapshot()

    @property
    def fault_counts(self) -> list[int]:
        """How often each rule of the current plan has fired."""
        return self._state.fired

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``count`` requests have arrived (from async code: via a thread)."""
        return self._wait(self._requests, count, timeout)

    def wait_for_responses(self, count: int, timeout: float = 5.0) -> list[RecordedResponse]:
        """Block until ``count`` responses have been recorded."""
        return self._wait(self._responses, count, timeout)

    def _wait(self, items: list[Any], count: int, timeout: float) -> list[Any]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(items) >= count, timeout):
                raise TimeoutError(f"{len(items)} of {count} records after {timeout}s")
            return list(items)

    def _record(self, item: RecordedRequest | RecordedResponse) -> None:
        with self._lock:
            if isinstance(item, RecordedRequest):
                self._requests.append(item)
            else:
                self._responses.append(item)
            self._lock.notify_all()

    # -- provider hooks --------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def sent_key(self, request: web.Request) -> str | None:
        """The API key the request carries, the provider's way."""
        raise NotImplementedError

    def auth_error(self, sent: str | None) -> tuple[int, dict[str, Any]]:
        """Status and body for a missing or wrong key; never echo ``sent``."""
        raise NotImplementedError

    def error_body(self, status: int, message: str | None) -> dict[str, Any]:
        """The provider's error JSON for ``status``."""
        raise NotImplementedError

    def error_headers(self, status: int) -> dict[str, str]:
        return {}

    def validate(self, request: web.Request, body: dict[str, Any]) -> str | None:
        """A 400 message when the body is not a valid request, else None."""
        return None

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        """Names of the tools the request offers."""
        return []

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        """All prompt text, for the token count."""
        return collect_text(body.get("messages"))

    def last_user_text(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        for message in reversed(messages if isinstance(messages, list) else []):
            if isinstance(message, dict) and message.get("role") == "user":
                return " ".join(collect_text(message.get("content")))
        return ""

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        """The texts of the tool results closing the conversation, None if it ends otherwise.

        OpenAI's shape (trailing ``role: tool`` messages), shared by others that use it.
        """
        messages = body.get("messages")
        results: list[str] = []
        for message in reversed(messages if isinstance(messages, list) else []):
            if not isinstance(message, dict) or message.get("role") != "tool":
                break
            results.insert(0, "\n".join(collect_text(message.get("content"))))
        return results or None

    def wants_thinking(self, body: dict[str, Any]) -> bool:
        """Whether the request asks for a thinking block (providers that have them)."""
        return False

    def thinking_error(self, body: dict[str, Any]) -> str | None:
        """A 400 message when the conversation's thinking blocks break the provider's rules
        (not issued by this server, edited, missing before a tool use), else None."""
        return None

    def refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str] | None:
        """Status, error body and fault name for a request the provider refuses on its state
        (an unknown stored response, content this server did not issue), else None."""
        return None

    def record_fields(self, body: dict[str, Any], reply: Reply | None) -> dict[str, Any]:
        """Extra `RecordedResponse` fields for this request (before and after its reply)."""
        return {}

    def answered(self, reply: Reply, body: dict[str, Any]) -> None:
        """Called once a whole, well-formed answer has been sent (stateful APIs store it)."""

    def json_body(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def usage(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def stream_events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        """The whole SSE stream, one encoded event per item."""
        raise NotImplementedError

    def response_headers(self, reply: Reply | None) -> dict[str, str]:
        return {}

    def tool_call_id(self) -> str:
        return "call_" + secrets.token_hex(12)

    def refuse_auth(self, request: web.Request) -> tuple[int, dict[str, Any]] | None:
        """The auth error to answer, or None when no key is required or the right one came."""
        if self.api_key is None:
            return None
        sent = self.sent_key(request)
        if sent is not None and hmac.compare_digest(sent.encode(), self.api_key.encode()):
            return None
        return self.auth_error(sent)

    # -- the pipeline ----------------------------------------------------------------

    async def receive(self, request: web.Request) -> tuple[float, Any]:
        """Read and record a request; returns its arrival time and JSON body (None if not JSON)."""
        started = time.monotonic()
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self._record(RecordedRequest(request.method, request.path, headers, body, started))
        return started, body

    def make_reply(self, body: dict[str, Any], plan: FaultPlan) -> Reply:
        """Deterministic answer and usage for a request under ``plan``."""
        model = body.get("model")
        tool_call = None
        answer: str | None = None
        offered = self.offered_tools(body)
        call = self._pick_tool_call(body, plan, offered)
        if call is not None:
            name = call.name or offered[0]
            tool_call = {"id": self.tool_call_id(), "name": name, "arguments": dict(call.arguments)}
            generated = json.dumps(tool_call["arguments"])
        else:
            results = self.tool_results(body) if plan.tool_loop else None
            if results is not None:
                answer = tool_result_answer(results)
            elif plan.answer is not None:
                answer = plan.answer
            else:
                answer = f"Simulated answer to: {self.last_user_text(body)[:60]}"
            generated = answer
        thinking = None
        reasoning = 0
        if self.wants_thinking(body):
            thinking = plan.thinking or f"Simulated thinking about: {self.last_user_text(body)[:60]}"
            if not plan.redact_thinking:  # a redacted block's tokens are not shown, nor counted here
                reasoning = count_tokens(thinking)
        if plan.reasoning_tokens is not None:
            reasoning = plan.reasoning_tokens
        prompt = (
            plan.prompt_tokens
            if plan.prompt_tokens is not None
            else count_tokens(" ".join(self.prompt_texts(body)))
        )
        completion = plan.completion_tokens
        if completion is None:
            completion = count_tokens(generated) + reasoning
        # Reads, then writes, never more than the prompt holds.
        cached = min(plan.cached_tokens, prompt)
        write_5m = min(plan.cache_write_5m_tokens, prompt - cached)
        write_1h = min(plan.cache_write_1h_tokens, prompt - cached - write_5m)
        return Reply(
            model=model if isinstance(model, str) else "",
            answer=answer,
            tool_call=tool_call,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            thinking=thinking,
            redacted_thinking=thinking is not None and plan.redact_thinking,
            reasoning_tokens=min(reasoning, completion),  # reasoning is part of the output
        )

    def _pick_tool_call(self, body: dict[str, Any], plan: FaultPlan, offered: list[str]) -> ToolCall | None:
        """The tool call to answer with: the plan's ``tool_call``, else the tool loop's."""
        if not offered:
            return None
        if plan.tool_call is not None:
            return plan.tool_call
        if not plan.tool_loop or self.tool_results(body) is not None:
            return None
        return next((c for c in plan.tool_loop if c.name is None or c.name in offered), None)

    async def handle_generation(self, request: web.Request) -> web.StreamResponse:
        """The shared request pipeline: record, auth, validate, faults, answer."""
        started, body = await self.receive(request)
        # The record-to-be; filled in as the request goes and written once at the end.
        rec: dict[str, Any] = {"status": 0, "path": request.path}
        refused = self.refuse_auth(request)
        if refused is not None:
            return self._error(rec, started, *refused)
        if not isinstance(body, dict):
            return self._error(rec, started, 400, self.error_body(400, "The request body is not valid JSON."))
        problem = self.validate(request, body)
        if problem is not None:
            return self._error(rec, started, 400, self.error_body(400, problem))
        rec.update(model=body.get("model"), stream=self.wants_stream(body))
        rec.update(self.record_fields(body, None))
        problem = self.thinking_error(body)
        if problem is not None:
            rec["fault"] = "invalid_thinking"
            return self._error(rec, started, 400, self.error_body(400, problem))
        refused_state = self.refusal(body)
        if refused_state is not None:
            status, error, rec["fault"] = refused_state
            return self._error(rec, started, status, error)

        state = self._state  # one plan for the whole request even if set_plan runs meanwhile
        decision = state.decide(rec["model"])
        rec.update(fault=decision.kind, delay_s=decision.delay_s)
        try:
            with self._load.track(rec["model"]):
                if decision.delay_s:
                    await self._hold(decision.delay_s)
                return await self._answer(request, body, state.plan, decision, started, rec)
        except Dropped:
            # Closing the transport first makes aiohttp's own write fail quietly: the
            # client sees the connection close without (the rest of) a response.
            request.protocol.force_close()
            self._finish(rec, started)
            return web.Response(status=200)
        except asyncio.CancelledError:
            self._finish(rec, started)  # the client gave up (handler cancellation)
            raise

    async def _answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: FaultPlan,
        decision: Decision,
        started: float,
        rec: dict[str, Any],
    ) -> web.StreamResponse:
        fault = decision.fault
        kind = fault.kind if fault else None
        if fault is not None and kind == "http_error":
            headers = {}
            if fault.retry_after is not None:
                # Whole seconds, rounded up: LiteLLM parses Retry-After with int().
                # retry-after-ms (read by the OpenAI SDK) keeps the precision.
                headers["Retry-After"] = str(math.ceil(fault.retry_after))
                headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
            return self._error(
                rec, started, fault.status, self.error_body(fault.status, fault.message), headers
            )
        if not rec["stream"] and kind in ("timeout", "drop"):
            if kind == "timeout":
                await self._hold(None)
            raise Dropped

        reply = self.make_reply(body, plan)
        rec.update(
            answer=reply.answer,
            tool_call=reply.tool_call,
            usage=self.usage(reply, body),
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cached_tokens=reply.cached_tokens,
            cache_write_5m_tokens=reply.cache_write_5m_tokens,
            cache_write_1h_tokens=reply.cache_write_1h_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            thinking=None if reply.redacted_thinking else reply.thinking,
            redacted_thinking=reply.redacted_thinking,
        )
        rec.update(self.record_fields(body, reply))
        headers = self.response_headers(reply)
        if not rec["stream"]:
            text = json.dumps(self.json_body(reply, body))
            if kind == "malformed":
                text = text[: len(text) // 2]
            rec["status"] = 200
            if kind != "malformed":
                self.answered(reply, body)
            self._finish(rec, started)
            return web.Response(status=200, text=text, content_type="application/json", headers=headers)

        events = self.stream_events(reply, body)
        if kind == "malformed":
            events = [_break_event(events[0])]
        cut = fault.after_chunks if fault is not None and kind in ("timeout", "drop") else None
        response = web.StreamResponse(status=200, headers={**headers, "Content-Type": self.sse_content_type})
        await response.prepare(request)
        rec.update(status=200, chunks=0)
        try:
            for event in events[:cut]:
                await response.write(event)
                rec["chunks"] += 1
            if cut is None:
                await response.write_eof()
                if kind != "malformed":
                    self.answered(reply, body)
        except ConnectionError:  # the client hung up mid-stream
            self._finish(rec, started)
            return response
        if cut is not None:
            if kind == "timeout":
                with contextlib.suppress(Dropped):
                    await self._hold(None)
            request.protocol.force_close()
        self._finish(rec, started)
        return response

    async def _hold(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: forever); raise `Dropped` if the server stops first."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise Dropped

    def _finish(self, rec: dict[str, Any], started: float) -> None:
        if started < self._reset_at:  # a request of an earlier test finishing late
            return
        self._record(RecordedResponse(elapsed_s=time.monotonic() - started, **rec))

    def _error(
        self,
        rec: dict[str, Any],
        started: float,
        status: int,
        error: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        rec["status"] = status
        self._finish(rec, started)
        return self.error_response(status, error, {**self.error_headers(status), **(headers or {})})

    def error_response(self, status: int, error: dict[str, Any], headers: dict[str, str]) -> web.Response:
        """How this provider sends an error body (JSON unless it says otherwise)."""
        return web.json_response(error, status=status, headers=headers)


def _break_event(event: bytes) -> bytes:
    """An SSE event whose JSON data is cut in half."""
    head, sep, data = event.partition(b"data: ")
    data = data.rstrip(b"\n")
    return head + sep + data[: max(1, len(data) // 2)] + b"\n\n"
