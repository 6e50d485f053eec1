"""The gateway as an MCP server (docs/mcp.md), on the official `mcp` SDK's `MCPServer`.

Thin, like the HTTP front: each tool validates, takes the caller's identity, and calls the
gateway's `complete` / `stream` / `estimate` or the ledger report; no policy lives here.
A typed gateway error (budget refusal, provider failure, bad arguments) is a tool result
with `isError: true` and the error's message, never a protocol error. A client's
cancellation cancels the task running the gateway call, so the request's lifecycle releases
its hold. Transports: `serve_stdio` (`llmgw mcp`) and `McpHttp` (streamable HTTP at /mcp).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llmgw.errors import BudgetExceeded, InvalidRequest, LLMGatewayError, ProviderError, RateLimited
from llmgw.ledger.report import GROUP_BY_VALUES, GroupBy, usage_report, usage_totals
from llmgw.ledger.timespec import FORMS, parse_time
from llmgw.pipeline.validation import validate_call
from llmgw.server.hosts import HostOriginGuard, HostPolicy
from llmgw.server.mcp.identity import AGENT_HEADER, Authenticator, Identity
from llmgw.server.mcp.schemas import (
    ChatResult,
    EstimateResult,
    ModelsResult,
    TokenCount,
    ToolSpec,
    UsageResult,
    chat_result,
    estimate_result,
    models_result,
    usage_row,
)
from llmgw.types import ContentDelta, Message, StreamDone, StreamError, ToolCallDelta

log = logging.getLogger("llmgw.mcp")
T = TypeVar("T")
SERVER_NAME = "llmgw"
INSTRUCTIONS = (
    "An LLM gateway with budgets, a cache and a cost ledger. Call chat_completion to ask a "
    "model; estimate_cost first when a call may be expensive; get_usage for what your "
    "project has spent. Errors say what to do next.")

Messages = Annotated[list[Message], Field(min_length=1, description=(
    "The conversation in OpenAI's shape: role (system, user, assistant, tool), content, and "
    "tool_calls / tool_call_id for tool turns."))]
ModelGroup = Annotated[str | None, Field(min_length=1, max_length=200, description=(
    "The model group to use (see list_models); default: the agent type's group, else the "
    "default group."))]
MaxTokens = Annotated[int | None, Field(ge=1, le=1_000_000, description=(
    "Cap on the answer's tokens; the budget holds the worst case for it."))]

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

IdentityOf = Callable[[Context], Identity]
"""The identity a tool call runs under, from its request context."""


class GatewayTools:
    """The tools, over one gateway (or a getter: an HTTP app makes its gateway in its
    lifespan, after the routes exist)."""

    def __init__(self, gateway: Any, identity_of: IdentityOf) -> None:
        self._gateway = gateway if callable(gateway) else (lambda: gateway)
        self._identity_of = identity_of

    @property
    def gw(self) -> Any:
        return self._gateway()

    async def chat_completion(
        self, messages: Messages, ctx: Context, model_group: ModelGroup = None,
        agent_type: Annotated[str | None, Field(min_length=1, max_length=200, description=(
            "The agent type (e.g. software-architect), which picks the group; an agent key "
            "with a type of its own keeps it."))] = None,
        max_tokens: MaxTokens = None,
        temperature: Annotated[float | None, Field(ge=0, le=2)] = None,
        tools: Annotated[list[ToolSpec] | None, Field(description=(
            "Tools the model may call (OpenAI function tools)."))] = None,
    ) -> Annotated[CallToolResult, ChatResult]:
        """Ask a model through the gateway, under your project's budgets. Returns the answer
        (content and tool calls), token usage, its exact cost and the request id. Sends
        progress notifications while the answer streams in, when asked for progress."""
        try:
            identity = self._identity_of(ctx)
            agent_id, project_id = identity.caller()
            kwargs = _call_kwargs(identity, model_group, agent_type, max_tokens, temperature,
                                  tools, front_note=True)
            dicts = _message_dicts(messages)
            if _progress_token(ctx) is None:
                completion = await cancellable(self.gw.complete(agent_id, project_id, dicts,
                                                                **kwargs))
            else:
                completion = await cancellable(self._streamed(ctx, agent_id, project_id, dicts,
                                                              kwargs))
        except LLMGatewayError as exc:
            return error_result(exc)
        except ValueError as exc:  # LiteLLM's token counter: content it cannot read
            return error_result(InvalidRequest(f"The messages could not be read: "
                                               f"{str(exc)[:300]}"))
        return structured(chat_result(completion))

    async def _streamed(self, ctx: Context, agent_id: str, project_id: str,
                        messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
        """`gw.stream`, reporting progress (characters received) as the answer comes in."""
        received = 0
        async for event in self.gw.stream(agent_id, project_id, messages, **kwargs):
            if isinstance(event, ContentDelta | ToolCallDelta):
                received += len(event.text if isinstance(event, ContentDelta)
                                else (event.name or "") + event.arguments)
                await ctx.report_progress(received, None, f"{received} characters received")
            elif isinstance(event, StreamDone):
                return event.completion
            elif isinstance(event, StreamError):  # recorded and settled as a partial answer
                raise event.error if isinstance(event.error, LLMGatewayError) else ProviderError(
                    f"The answer broke off: {event.message}", request_id=event.partial.request_id)
        raise ProviderError("The answer stream ended without a result.")

    async def list_models(self) -> ModelsResult:
        """The model groups, their deployments with prices per million tokens, fallbacks and
        the agent types routed to each."""
        return models_result(self.gw.config)

    async def get_usage(
        self, ctx: Context,
        by: Annotated[Literal[GroupBy], Field(description="Group rows by this.")] = "agent",
        since: Annotated[str | None, Field(description=f"Start (inclusive): {FORMS}.")] = None,
        until: Annotated[str | None, Field(description="End (exclusive), same forms.")] = None,
        project: Annotated[str | None, Field(description=(
            "Admin keys only: the project to report (default: every project). A project "
            "key reads its own project only."))] = None,
    ) -> Annotated[CallToolResult, UsageResult]:
        """Requests, tokens and exact cost recorded for your project, grouped by agent,
        model, day, ... (the same figures as `llmgw usage report`)."""
        try:
            scope = _usage_project(self._identity_of(ctx), project)
            start = parse_time(since) if since else None
            end = parse_time(until) if until else None
            if start is not None and end is not None and start >= end:
                raise InvalidRequest(f"since ({start:%Y-%m-%d %H:%M}) is not before until "
                                     f"({end:%Y-%m-%d %H:%M}).", hint="Swap them.")
            engine = self.gw.ledger.engine
            filters: dict[str, Any] = dict(project=scope, since=start, until=end)
            rows, total = await asyncio.to_thread(
                lambda: (usage_report(engine, by=by, **filters), usage_totals(engine, **filters)))
        except LLMGatewayError as exc:
            return error_result(exc)
        return structured(UsageResult(
            by=by, project=scope, since=start.isoformat() if start else None,
            until=end.isoformat() if end else None, rows=[usage_row(r) for r in rows],
            total=usage_row(total)))

    async def estimate_cost(
        self, messages: Messages, ctx: Context, model_group: ModelGroup = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, EstimateResult]:
        """What chat_completion would cost before calling it: the worst case it would hold
        against the budgets, an estimate per deployment, and each budget's room. Reserves
        nothing and calls no model."""
        try:
            identity = self._identity_of(ctx)
            agent_id, project_id = identity.caller()
            kwargs = _call_kwargs(identity, model_group, None, max_tokens, None, None)
            estimate = await self.gw.estimate(agent_id, project_id, _message_dicts(messages),
                                              **kwargs)
        except LLMGatewayError as exc:
            return error_result(exc)
        except ValueError as exc:
            return error_result(InvalidRequest(f"The messages could not be read: "
                                               f"{str(exc)[:300]}"))
        return structured(estimate_result(estimate))

    async def count_tokens(
        self, messages: Messages, ctx: Context, model_group: ModelGroup = None,
    ) -> Annotated[CallToolResult, TokenCount]:
        """Prompt tokens of the messages by the group's tokenizer (LiteLLM's), as the
        budget counts them."""
        try:
            identity = self._identity_of(ctx)
            agent_id, project_id = identity.caller()
            gw = self.gw
            request = validate_call(agent_id, project_id, _message_dicts(messages),
                                    identity.agent_type, model_group, None, {})
            route = gw.agents.resolve(request.agent_id, agent_type=request.agent_type,
                                      model_group=request.model_group)
            tokens = gw.planner.prompt_tokens(route.model_group, request.message_dicts)
        except LLMGatewayError as exc:
            return error_result(exc)
        except ValueError as exc:
            return error_result(InvalidRequest(f"The messages could not be read: "
                                               f"{str(exc)[:300]}"))
        model = gw.config.groups()[route.model_group][0].litellm_params.model
        return structured(TokenCount(model_group=route.model_group, model=model,
                                     prompt_tokens=tokens))


def build_server(gateway: Any, identity_of: IdentityOf, *,
                 lifespan: Callable[[MCPServer], Any] | None = None) -> MCPServer:
    """The MCP server: five tools over `gateway` (an LLMGateway, or a callable returning
    it), each call running as `identity_of(ctx)`."""
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version=_version(),
                                  lifespan=lifespan, log_level="WARNING")
    tools = GatewayTools(gateway, identity_of)
    server.add_tool(tools.chat_completion, title="Chat completion",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                idempotent_hint=False, open_world_hint=True))
    server.add_tool(tools.list_models, title="List models", annotations=_READ_ONLY)
    server.add_tool(tools.get_usage, title="Usage report", annotations=_READ_ONLY)
    server.add_tool(tools.estimate_cost, title="Estimate cost", annotations=_READ_ONLY)
    server.add_tool(tools.count_tokens, title="Count tokens", annotations=_READ_ONLY)
    return server


# -- errors and results -----------------------------------------------------------------------


def structured(model: Any) -> CallToolResult:
    """A tool's answer: the structured content, and the same JSON as text for clients that
    read text only."""
    return CallToolResult(content=[TextContent(type="text", text=model.model_dump_json())],
                          structured_content=model.model_dump(mode="json"))


def error_result(exc: LLMGatewayError) -> CallToolResult:
    """A typed error as a tool result the model can read and act on (`isError: true`)."""
    kind = type(exc).__name__
    data: dict[str, Any] = {"error": kind, "message": exc.message, "hint": exc.hint}
    if isinstance(exc, BudgetExceeded):
        data.update(scope=exc.scope, scope_id=exc.scope_id, window=exc.window,
                    limit_micros=exc.limit_micros, spent_micros=exc.spent_micros,
                    reserved_micros=exc.reserved_micros, requested_micros=exc.requested_micros,
                    resets_at=exc.resets_at.isoformat() if exc.resets_at else None)
    if isinstance(exc, ProviderError):
        data.update(request_id=exc.request_id, model_group=exc.model_group,
                    status_code=exc.status_code)
    if isinstance(exc, RateLimited):
        data["retry_after"] = exc.retry_after
    return CallToolResult(content=[TextContent(type="text", text=f"{kind}: {exc}")],
                          structured_content=data, is_error=True)


# -- cancellation ------------------------------------------------------------------------------


async def cancellable(work: Coroutine[Any, Any, T]) -> T:
    """Run a gateway call as a task of its own. When the MCP request is cancelled (the
    client's notification, a closed stream, shutdown) that task is cancelled once, and the
    handler waits, shielded, until the request's lifecycle has released its hold."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: the caller is gone, nobody reads it
        raise


# -- identity per call --------------------------------------------------------------------------


def _call_kwargs(identity: Identity, model_group: str | None, agent_type: str | None,
                 max_tokens: int | None, temperature: float | None,
                 tools: Sequence[ToolSpec] | None, *, front_note: bool = False) -> dict[str, Any]:
    """The gateway's keyword arguments; the key's agent type is the agent's type."""
    if identity.agent_type is not None and agent_type not in (None, identity.agent_type):
        raise InvalidRequest(f"This key's agent type is {identity.agent_type!r}, not "
                             f"{agent_type!r}.", hint="Leave agent_type out, or pass "
                                                      "model_group to pick a group.")
    kwargs: dict[str, Any] = {"agent_type": identity.agent_type or agent_type,
                              "model_group": model_group}
    if front_note:  # the ledger row says which front the call came through
        kwargs["metadata"] = {"front": "mcp"}
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if temperature is not None:
        kwargs["temperature"] = temperature
    if tools:
        kwargs["tools"] = [t.model_dump(exclude_none=True) for t in tools]
    return kwargs


def _usage_project(identity: Identity, asked: str | None) -> str | None:
    """The project a usage report may cover: a project key its own, an admin key any."""
    if identity.admin:
        return asked
    if asked is not None and asked != identity.project_id:
        raise InvalidRequest(f"This key reads project {identity.project_id!r}'s usage only, "
                             f"not {asked!r}.", hint="Use that project's key.")
    return identity.project_id


def _message_dicts(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]


def _progress_token(ctx: Context) -> Any:
    meta = ctx.request_context.meta or {}
    return meta.get("progress_token", meta.get("progressToken"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmgw")
    except PackageNotFoundError:
        return "0.0.0"


# -- stdio -------------------------------------------------------------------------------------


async def serve_stdio(gateway: Any, identity: Identity) -> None:
    """Serve MCP on stdin/stdout as `identity` until the client closes stdin or the task is
    cancelled (SIGTERM); then wait until every request has settled and close the gateway.
    stdin is read by the loop (llmgw.server.mcp.stdio), so a cancellation stops the server
    even while the client holds stdin open."""
    from mcp.server.stdio import stdio_server

    from llmgw.server.mcp.stdio import stdin_lines

    server = build_server(gateway, lambda _ctx: identity)
    lowlevel = server._lowlevel_server  # what `run_stdio_async` runs, with our stdin reader
    try:
        async with stdin_lines() as stdin, stdio_server(stdin=stdin) as (read, write):  # type: ignore[arg-type]
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
    finally:
        await gateway.aclose()


# -- streamable HTTP ---------------------------------------------------------------------------

_http_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("llmgw_mcp_identity")
_UNAUTHORIZED = ("No valid API key. Send `Authorization: Bearer <key>`; `llmgw keys create` "
                 "issues one.")


class McpHttp:
    """Streamable HTTP MCP for `llmgw serve`: `route` is a Starlette route at `path` (add it
    to the app's routes) and `lifespan()` must run while the app serves (enter it in the
    app's lifespan: it runs the SDK's session manager). Each HTTP request is authenticated
    by its bearer key; an any-agent key names its agent with the X-LLMGW-Agent header.

    `gateway` is an LLMGateway or a callable returning it (made in the app's lifespan).
    Host and Origin (DNS-rebinding protection) are checked by `llmgw.server.hosts`'s
    HostOriginGuard in front of the route (`llmgw serve` puts it in front of every route);
    `hosts` puts one in front of `app()`. The SDK's own check is off: one list, one check."""

    def __init__(self, gateway: Any, authenticate: Authenticator, *, path: str = "/mcp",
                 hosts: HostPolicy | None = None, stateless: bool = False) -> None:
        self.authenticate = authenticate
        self.hosts = hosts
        self.server = build_server(gateway, lambda _ctx: _http_identity.get())
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        # The SDK's own wiring; its Starlette app is not used (a mounted sub-app's lifespan
        # would never run), only the session manager it makes.
        self.server.streamable_http_app(streamable_http_path=path, stateless_http=stateless,
                                        transport_security=security)
        self.session_manager = self.server.session_manager
        self.route = Route(path, endpoint=_Authenticated(
            StreamableHTTPASGIApp(self.session_manager), authenticate))

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.session_manager.run():
            yield

    def app(self) -> Starlette:
        """A Starlette app serving only `route` (the gateway must outlive it)."""

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            async with self.lifespan():
                yield
        middleware = [] if self.hosts is None else [Middleware(HostOriginGuard, policy=self.hosts)]
        return Starlette(routes=[self.route], lifespan=lifespan, middleware=middleware)


class _Authenticated:
    """ASGI wrapper: the bearer key's identity for everything this HTTP request carries
    (the SDK runs its handlers in the context the request set, as its own auth does)."""

    def __init__(self, app: ASGIApp, authenticate: Authenticator) -> None:
        self.app = app
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        identity = None
        if scheme.lower() == "bearer" and secret.strip():
            identity = await self.authenticate(secret.strip())
        if identity is None:
            await JSONResponse({"error": {"code": "invalid_api_key", "message": _UNAUTHORIZED}},
                               status_code=401,
                               headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        try:
            identity = identity.with_agent(headers.get(AGENT_HEADER) or None)
        except InvalidRequest as exc:
            await JSONResponse({"error": {"code": "agent_not_allowed", "message": str(exc)}},
                               status_code=403)(scope, receive, send)
            return
        token = _http_identity.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            _http_identity.reset(token)


__all__ = ["GROUP_BY_VALUES", "GatewayTools", "McpHttp", "build_server", "cancellable",
           "error_result", "serve_stdio"]
