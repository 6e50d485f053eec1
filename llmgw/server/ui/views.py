"""`/ui`: a read-only spend dashboard, server-rendered (Jinja2, SVG charts, no script, no
CDN) over the same report functions as the CLI (docs/dashboard.md).

Sign-in exchanges a key for a signed HttpOnly, SameSite=Strict session cookie
(`ui_sessions`); the key is posted once and never put in a URL, a page or a log. Every form
that POSTs carries asgi-csrf's signed double-submit token (`ui_csrf`). A project key sees its
project; an admin key sees every project and switches with `?project=`. Bad input gets an
HTML page with a 4xx status and what to do, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware import Middleware

from llmgw.errors import InvalidRequest
from llmgw.ledger.report import MEASURES, GroupBy
from llmgw.ledger.timespec import FORMS, parse_time, utcnow
from llmgw.server.ui import data as ui_data
from llmgw.server.ui.charts import budget_bar, colours, spend_chart, usd
from llmgw.server.ui.csrf import CsrfForms, forget_token, form_token
from llmgw.server.ui.sessions import COOKIE, Session, Sessions

log = logging.getLogger("llmgw.server.ui.views")
router = APIRouter(prefix="/ui", include_in_schema=False)

HERE = Path(__file__).parents[1]  # templates/ and static/ live in llmgw/server
STATIC = HERE / "static"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 200
MAX_ID = 200  # project and agent ids, as the ledger stores them
MAX_REQUEST_ID = 64
MAX_FORM_BYTES = 4096
HEALTH_TTL_S = 30.0  # a probe may cost a 1-token completion: not one per page view
SORTABLE = ("key", *MEASURES)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it Chromium sends `Origin: null` with our own form posts, which
    # the Host/Origin check must refuse; same-origin tells other sites nothing either.
    "Referrer-Policy": "same-origin",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True,
                        lstrip_blocks=True)
templates.filters["usd"] = usd
templates.filters["count"] = lambda n: f"{n:,}"
templates.globals["budget_bar"] = budget_bar


class UIError(Exception):
    """A page that says what went wrong and what to do: 4xx, never a traceback."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


# -- plumbing ------------------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    state = request.app.state
    found = getattr(state, "ui_sessions", None)
    if found is None:
        found = state.ui_sessions = Sessions(state.gateway.ledger.engine,
                                             cache_s=state.settings.key_cache_s)
    return found


def _html(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status,
                        headers=HEADERS)


def _error_page(request: Request, error: UIError, session: Session | None) -> HTMLResponse:
    return _html("error.html", error.status, session=session, error=error, nav=None,
                 project=None, projects=[], keep={},
                 csrftoken=form_token(request) if session else None)  # for the sign-out form


async def _signed_in(request: Request) -> Session | None:
    return await asyncio.to_thread(_sessions(request).check, request.cookies.get(COOKIE))


async def _view(request: Request,
                build: Callable[[Session], Awaitable[Response]]) -> Response:
    """Run a signed-in view: no session -> the sign-in page; UIError -> its page."""
    session = await _signed_in(request)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303, headers=HEADERS)
    try:
        return await build(session)
    except UIError as exc:
        return _error_page(request, exc, session)
    except InvalidRequest as exc:
        return _error_page(request, UIError(400, "Bad request", f"{exc.message} {exc.hint or ''}"),
                           session)
    except Exception:
        log.exception("dashboard error on %s", request.url.path)
        return _error_page(request, UIError(500, "Internal error",
                                   "The page could not be built; the server log says why."),
                           session)


def _text(request: Request, name: str, max_len: int = MAX_ID) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise UIError(400, "Bad request", f"`{name}` must be at most {max_len} characters "
                      "without control characters.")
    return value


def _scope(session: Session, request: Request) -> str | None:
    """The project this page may show: a project session its own, whatever it asks; an
    admin session the one asked for (None: all)."""
    asked = _text(request, "project")
    if session.admin:
        return asked
    if asked is not None and asked != session.key.project_id:
        raise UIError(403, "Not your project",
                      f"This session sees project {session.key.project_id!r} only. Sign in "
                      "with that project's key, or an admin key.")
    return session.key.project_id


def _time(request: Request, name: str) -> datetime | None:
    value = _text(request, name, 64)
    if value is None:
        return None
    try:
        return parse_time(value)
    except InvalidRequest:
        raise UIError(400, "Bad date", f"Cannot read {name}={value!r}. Use {FORMS}.") from None


def _choice(request: Request, name: str, allowed: tuple[str, ...] | list[str],
            default: str | None) -> str | None:
    value = _text(request, name, 64)
    if value is None:
        return default
    if value not in allowed:
        raise UIError(400, "Bad request", f"Unknown {name}={value!r}; use one of "
                      f"{', '.join(allowed)}.")
    return value


def _limit(request: Request) -> int:
    value = request.query_params.get("limit")
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or len(value) > 6 or not (
            1 <= int(value) <= MAX_LIMIT):
        raise UIError(400, "Bad limit", f"limit must be a whole number from 1 to {MAX_LIMIT}, "
                      f"got {value[:20]!r}.")
    return int(value)


async def _context(request: Request, session: Session, nav: str,
                   project: str | None) -> dict[str, Any]:
    projects: list[str] = []
    if session.admin:
        projects = await _projects(request)
    return {"session": session, "nav": nav, "project": project, "projects": projects,
            "keep": {"project": project} if session.admin and project else {},
            "qs": lambda **kw: _qs(request, **kw), "now": utcnow(),
            "csrftoken": form_token(request)}


async def _projects(request: Request) -> list[str]:
    """Every project in the ledger, for the admin's switcher (kept a minute per worker)."""
    state = request.app.state
    cached = getattr(state, "ui_projects", None)
    if cached is not None and time.monotonic() - cached[0] < 60:
        return cached[1]
    found = await asyncio.to_thread(ui_data.projects, state.gateway.ledger.engine)
    state.ui_projects = (time.monotonic(), found)
    return found


def _qs(request: Request, **changes: Any) -> str:
    """This page's query string with `changes` (None removes a parameter)."""
    params = dict(request.query_params)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return "?" + urlencode(params) if params else ""


def _engine(request: Request) -> Any:
    return request.app.state.gateway.ledger.engine


# -- sign-in -------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await _signed_in(request) is not None:
        return RedirectResponse("/ui/spend", status_code=303, headers=HEADERS)
    return _login_page(request, 200, None)


def _login_page(request: Request, status: int, error: str | None) -> HTMLResponse:
    return _html("login.html", status, session=None, nav=None, error=error,
                 csrftoken=form_token(request))


@router.post("/login")
async def login(request: Request) -> Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return _login_page(request, 413, "That form is too large; paste the key alone.")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=5)
    secret = (fields.get("key") or [""])[0].strip()
    if not secret:
        return _login_page(request, 400, "Paste an API key (`llmgw keys create` issues one).")
    info = await asyncio.to_thread(request.app.state.auth.store.authenticate, secret)
    if info is None:
        log.info("dashboard sign-in refused: unknown, revoked or expired key")
        return _login_page(request, 401, "That key is unknown, revoked or expired. Ask for a "
                           "new one (`llmgw keys create`).")
    sessions = _sessions(request)
    token = sessions.issue(info)
    log.info("dashboard sign-in: key id %d (%s)", info.id,
             "admin" if info.admin else f"project {info.project_id}")
    response = RedirectResponse("/ui/spend", status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, token, max_age=sessions.lifetime_s, path="/ui", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    forget_token(request, response)  # the token seen before the session is not its token
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await _signed_in(request)
    if session is not None:
        _sessions(request).sign_out(session)
    response = RedirectResponse("/ui/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    forget_token(request, response)
    return response


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/ui/spend", status_code=303, headers=HEADERS)


# -- views ---------------------------------------------------------------------------------


@router.get("/spend")
async def spend_view(request: Request) -> Response:
    async def build(session: Session) -> Response:
        project = _scope(session, request)
        stack = _choice(request, "stack", tuple(ui_data.STACK_BY), "model-group")
        assert stack is not None
        data = await asyncio.to_thread(ui_data.spend, _engine(request), project,
                                       cast(GroupBy, stack), utcnow())
        colour_of = colours([k for k, _ in data.keys])
        return _html("spend.html", **await _context(request, session, "spend", project),
                     data=data, stack=stack, stacks=ui_data.STACK_BY, colour_of=colour_of,
                     chart=spend_chart(data, colour_of))
    return await _view(request, build)


def _table_params(request: Request, session: Session) -> dict[str, Any]:
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and since >= until:
        raise UIError(400, "Bad dates", f"since ({since:%Y-%m-%d %H:%M}) is not before until "
                      f"({until:%Y-%m-%d %H:%M}). Swap them or widen the range.")
    return {"by": cast(GroupBy, _choice(request, "by", tuple(ui_data.TABLE_BY), "agent")),
            "project": _scope(session, request), "agent": _text(request, "agent"),
            "since": since, "until": until}


@router.get("/usage")
async def usage_view(request: Request) -> Response:
    async def build(session: Session) -> Response:
        params = _table_params(request, session)
        sort = _choice(request, "sort", SORTABLE, None)
        direction = _choice(request, "dir", ("asc", "desc"), "desc")
        limit = _limit(request)
        table = await asyncio.to_thread(lambda: ui_data.who_spent(
            _engine(request), sort=sort, descending=direction == "desc", limit=limit,
            **params))
        return _html("usage.html", **await _context(request, session, "usage",
                                                    params["project"]),
                     table=table, params=params, sort=sort, direction=direction, limit=limit,
                     tabs=ui_data.TABLE_BY, form={k: request.query_params.get(k, "")
                                                  for k in ("since", "until", "agent")})
    return await _view(request, build)


@router.get("/usage.csv")
async def usage_csv(request: Request) -> Response:
    from llmgw.cli.usage import rows_csv

    async def build(session: Session) -> Response:
        params = _table_params(request, session)
        rows = await asyncio.to_thread(lambda: ui_data.table_rows(_engine(request), **params))
        name = f"llmgw-usage-by-{params['by']}.csv"
        return Response(rows_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={**HEADERS,
                                 "Content-Disposition": f'attachment; filename="{name}"'})
    return await _view(request, build)


@router.get("/budgets")
async def budgets_view(request: Request) -> Response:
    async def build(session: Session) -> Response:
        project = _scope(session, request)
        gw = request.app.state.gateway
        now = utcnow()
        items = await asyncio.to_thread(ui_data.budgets, gw.budget_policy, gw.budget_store,
                                        _engine(request), project, now)
        month = gw.budget_policy.period_start(now, "month")
        refused = await asyncio.to_thread(ui_data.recent, _engine(request), project, limit=50,
                                          status="refused", since=month)
        return _html("budgets.html", **await _context(request, session, "budgets", project),
                     items=items, refused=refused, month=month)
    return await _view(request, build)


@router.get("/runs")
async def runs_view(request: Request) -> Response:
    """The most expensive agent runs (sessions) in the report's window, each linking to its
    requests."""
    async def build(session: Session) -> Response:
        params = _table_params(request, session)
        limit = _limit(request)
        gw = request.app.state.gateway
        found = await asyncio.to_thread(lambda: ui_data.runs(
            _engine(request), gw.budget_policy, gw.budget_store, project=params["project"],
            since=params["since"], until=params["until"], limit=limit))
        return _html("runs.html", **await _context(request, session, "runs", params["project"]),
                     runs=found, limit=limit, form={k: request.query_params.get(k, "")
                                                    for k in ("since", "until")})
    return await _view(request, build)


@router.get("/keys")
async def keys_view(request: Request) -> Response:
    """The project's keys (an admin: every key): limits, expiry, and those about to expire,
    so a key is rotated (`llmgw keys rotate`) before its agents are refused."""
    async def build(session: Session) -> Response:
        from llmgw.ledger.api_keys import EXPIRING_SOON, ApiKeyStore, expiring_soon

        project = _scope(session, request)
        now = utcnow()
        keys = await asyncio.to_thread(ApiKeyStore(_engine(request)).list, project_id=project)
        keys.sort(key=lambda k: (not expiring_soon(k, now), not k.usable(now), k.id))
        rows = [{"key": k, "live": k.usable(now), "soon": expiring_soon(k, now)} for k in keys]
        return _html("keys.html", **await _context(request, session, "keys", project),
                     rows=rows, soon_days=EXPIRING_SOON.days)
    return await _view(request, build)


@router.get("/requests")
async def requests_view(request: Request) -> Response:
    async def build(session: Session) -> Response:
        project = _scope(session, request)
        wanted = _text(request, "id", MAX_REQUEST_ID)
        if wanted is not None:
            return await _story(request, session, project, wanted.strip())
        run = _text(request, "session")
        rows = await asyncio.to_thread(ui_data.recent, _engine(request), project,
                                       limit=_limit(request) if "limit" in request.query_params
                                       else 50, session=run)
        return _html("requests.html", **await _context(request, session, "requests", project),
                     rows=rows, run=run)
    return await _view(request, build)


@router.get("/requests/{request_id}")
async def story_view(request: Request, request_id: str) -> Response:
    async def build(session: Session) -> Response:
        if len(request_id) > MAX_REQUEST_ID or any(ord(c) < 32 for c in request_id):
            raise UIError(400, "Bad request id", f"A request id is at most {MAX_REQUEST_ID} "
                          "characters.")
        return await _story(request, session, _scope(session, request), request_id)
    return await _view(request, build)


async def _story(request: Request, session: Session, project: str | None,
                 request_id: str) -> Response:
    found = await asyncio.to_thread(ui_data.story, _engine(request), request_id, project)
    if found is None:
        raise UIError(404, "No such request",
                      f"No request {request_id!r} in "
                      f"{'project ' + repr(project) if project else 'the ledger'}. Copy the id "
                      "from the x-llmgw-request-id header or the requests list.")
    return _html("story.html", **await _context(request, session, "requests", project),
                 story=found)


@router.get("/health")
async def health_view(request: Request) -> Response:
    async def build(session: Session) -> Response:
        project = _scope(session, request)
        checked_at, probes = await _health(request)
        gw = request.app.state.gateway
        stats = {s.deployment_id: s for s in gw.stats()}
        return _html("health.html", **await _context(request, session, "health", project),
                     probes=probes, stats=stats, checked_at=checked_at,
                     ttl=int(HEALTH_TTL_S))
    return await _view(request, build)


async def _health(request: Request) -> tuple[datetime, list[Any]]:
    state = request.app.state
    lock = getattr(state, "ui_health_lock", None)
    if lock is None:
        lock = state.ui_health_lock = asyncio.Lock()
    async with lock:
        cached = getattr(state, "ui_health", None)
        if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL_S:
            return cached[1], cached[2]
        probes = await state.gateway.health(timeout=3.0)
        state.ui_health = (time.monotonic(), utcnow(), probes)
        return state.ui_health[1], probes


# -- files and unknown paths ---------------------------------------------------------------


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return _error_page(request, UIError(404, "Not found", "No such file."), None)
    media = {".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}.get(
        path.suffix, "application/octet-stream")
    return Response(path.read_bytes(), media_type=media,
                    headers={**HEADERS, "Cache-Control": "max-age=3600"})


@router.get("/{rest:path}")
async def unknown(request: Request, rest: str) -> Response:
    session = await _signed_in(request)
    return _error_page(request, UIError(404, "Not found",
                                        f"There is no page /ui/{rest[:100]}."), session)


# -- CSRF ----------------------------------------------------------------------------------


def _csrf_refused(scope: Any) -> Response:
    return _error_page(Request(scope), UIError(
        403, "Form refused", "This form did not come from this dashboard's own page, or its "
        "page is too old (its security token is missing or does not match). Open /ui/login "
        "and submit the form from there."), None)


# Appended innermost by create_app (inside the body limit and the Host/Origin checks): every
# POST route here is checked even without cookies (sign-in has none), any other /ui POST
# whenever it carries cookies, as asgi-csrf does.
csrf_middleware = Middleware(CsrfForms, refused=_csrf_refused,
                             always={r.path for r in router.routes
                                     if isinstance(r, APIRoute) and "POST" in (r.methods or ())})
