"""The HTTP front's ASGI app: one `LLMGateway` per worker process, made in the lifespan and
closed after the last in-flight request has settled. It validates, maps identity and errors,
and calls the gateway; it holds no policy (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmgw.config.loading import load_config
from llmgw.config.models import Config
from llmgw.errors import LLMGatewayError
from llmgw.ids import new_request_id
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.server.auth import Authenticator
from llmgw.server.common import ClientGone
from llmgw.server.errors import (
    FrontError,
    api_of,
    front_error_response,
    gateway_error_response,
)
from llmgw.server.hosts import HostOriginGuard, HostPolicy
from llmgw.server.limits import RequestLimits
from llmgw.server.settings import ServerSettings

log = logging.getLogger("llmgw.server")
ENV_CONFIG = "LLMGW_CONFIG"


class InFlight:
    """Requests the gateway started and has not finished, from its public events; shutdown
    waits for it to empty so no hold outlives the process."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._empty = asyncio.Event()  # both events are emitted on the server's loop
        self._empty.set()

    def started(self, _event: str, payload: dict[str, Any]) -> None:
        self.ids.add(payload["request_id"])
        self._empty.clear()

    def finished(self, _event: str, payload: dict[str, Any]) -> None:
        self.ids.discard(payload["request_id"])
        if not self.ids:
            self._empty.set()

    async def wait_empty(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        except TimeoutError:
            pass
        return not self.ids


def create_app(config: Config | str | None = None, settings: ServerSettings | None = None,
               *, ledger_url: str | None = None) -> FastAPI:
    """The app. `config`: a Config, a path, or None for LLMGW_CONFIG / ./model_list.yaml."""
    settings = settings or ServerSettings.from_env()
    from llmgw.server.mcp.app import McpHttp
    from llmgw.server.mcp.identity import key_authenticator

    app: FastAPI  # made below; the closures here run once it is

    async def mcp_authenticate(secret: str) -> Any:
        return await app.state.mcp_auth(secret)  # the key store is made in the lifespan

    # Streamable HTTP MCP at /mcp, on the same gateway and keys.
    mcp = McpHttp(lambda: app.state.gateway, mcp_authenticate)  # Host/Origin: HostOriginGuard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from llmgw.gateway import LLMGateway  # imports LiteLLM: seconds, once per worker
        from llmgw.ledger.engine import make_engine
        from llmgw.observe.metrics import PrometheusMetrics

        cfg = config if isinstance(config, Config) else load_config(config)
        gateway = LLMGateway(cfg, ledger_url=ledger_url)
        inflight = InFlight()
        gateway.on("request.started", inflight.started)
        gateway.on("request.finished", inflight.finished)
        metrics = gateway.metrics
        if metrics is None:  # not serving its own port: /metrics here shows it
            metrics = PrometheusMetrics().attach(gateway.events)
        key_engine = make_engine(ledger_url or cfg.llmgw.ledger.url, pool_size=2, max_overflow=4)
        app.state.gateway = gateway
        app.state.config = cfg
        app.state.metrics = metrics
        app.state.inflight = inflight
        app.state.auth = Authenticator(ApiKeyStore(key_engine), cache_s=settings.key_cache_s)
        app.state.mcp_auth = key_authenticator(key_engine)
        from llmgw.server.key_limits import KeyLimiter

        app.state.key_limiter = KeyLimiter(cfg, cfg.router_settings.shared_state_url())
        try:
            async with mcp.lifespan():  # MCP calls still in flight are cancelled and settled
                yield
        finally:
            # uvicorn has stopped accepting and waited (grace period) or cancelled what was
            # left; what those cancellations set in motion settles now, then the gateway goes.
            if not await inflight.wait_empty(max(settings.grace_s, 5.0)):
                log.error("%d request(s) still unsettled at shutdown; `llmgw db reconcile` "
                          "settles their holds", len(inflight.ids))
            await gateway.aclose()
            await app.state.key_limiter.aclose()
            key_engine.dispose()

    # No /docs or /redoc: they load their scripts from a CDN; /openapi.json is the schema.
    app = FastAPI(title="llmgw", version=_version(), lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  summary="OpenAI- and Anthropic-compatible front of an llmgw gateway: "
                          "budgets, cache and a cost ledger over LiteLLM.")
    app.state.settings = settings
    _install_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["x-llmgw-request-id", "x-llmgw-cost-usd",
                                           "x-llmgw-model-group", "x-llmgw-deployment",
                                           "x-llmgw-cache", "retry-after"])
    app.add_middleware(RequestLimits, max_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes)
    # Added last, so it runs first: a foreign Host or Origin is refused before anything else
    # (no key check, no ledger row); /mcp included (the SDK's own check stays off: one list).
    app.add_middleware(HostOriginGuard, policy=HostPolicy.build(
        settings.bind_host, settings.allowed_hosts, settings.allowed_origins,
        settings.cors_origins))

    from llmgw.server import anthropic_api, anthropic_tokens, chat_api, ops, responses_api
    from llmgw.server.ui import views as ui

    app.include_router(chat_api.router)
    app.include_router(anthropic_api.router)
    app.include_router(anthropic_tokens.router)
    app.include_router(responses_api.router)
    app.include_router(ops.router)
    app.include_router(ui.router)
    app.user_middleware.append(ui.csrf_middleware)  # innermost: /ui forms, asgi-csrf (ui_csrf)
    app.router.routes.append(mcp.route)
    return app


def app_from_env() -> FastAPI:
    """The factory `llmgw serve` hands uvicorn (`--factory`): each worker process builds its
    app from LLMGW_CONFIG and the LLMGW_SERVE_* settings."""
    from llmgw.heap import claim_process

    claim_process()  # a worker of `llmgw serve`: ours to tune (llmgw.heap)
    return create_app(os.environ.get(ENV_CONFIG) or None, ServerSettings.from_env())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmgw")
    except PackageNotFoundError:
        return "0.0.0"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LLMGatewayError)
    async def _gateway(request: Request, exc: LLMGatewayError) -> JSONResponse:
        return gateway_error_response(exc, api_of(request.url.path))

    @app.exception_handler(FrontError)
    async def _front(request: Request, exc: FrontError) -> JSONResponse:
        return front_error_response(exc, api_of(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return front_error_response(
            FrontError(400, "invalid_request", "Invalid request: " + "; ".join(problems) + ".",
                       param=param), api_of(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        text = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404:
            text = f"No such endpoint: {request.method} {request.url.path}."
        response = front_error_response(FrontError(exc.status_code, code, text),
                                        api_of(request.url.path))
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = new_request_id()
        log.exception("request %s: unexpected error on %s %s", request_id, request.method,
                      request.url.path)
        return front_error_response(
            FrontError(500, "internal_error",
                       f"Internal error ({type(exc).__name__}); the server log has its traceback "
                       f"under request {request_id}."), api_of(request.url.path),
            request_id=request_id)

