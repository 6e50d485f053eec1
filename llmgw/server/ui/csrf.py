"""CSRF protection for `/ui`'s forms: asgi-csrf's signed double-submit token (docs/dashboard.md).

A page with a form that POSTs carries the token in a hidden `csrftoken` field; the same token
is in the `llmgw_ui_csrf` cookie (path /ui, SameSite=Strict), signed with a secret derived from
`LLMGW_UI_SECRET`, so every worker that shares that secret accepts it. A POST under /ui whose
field does not equal its cookie is refused with 403 before any handler runs; sign-in and
sign-out are checked even when the request has no cookie at all (a login CSRF has none).
The token is renewed at sign-in and sign-out, so one seen before a session is dead in it.

Only /ui goes through the library: the API (/v1/*, /mcp, the ops routes) is authenticated by
headers, never cookies, and its requests reach the app untouched."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable

from asgi_csrf import SCOPE_KEY, Errors, asgi_csrf
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmgw.server.ui.sessions import ENV_SECRET

log = logging.getLogger("llmgw.server.ui.views")

CSRF_COOKIE = "llmgw_ui_csrf"
FORM_FIELD = "csrftoken"  # asgi-csrf's own field name: its multipart reader knows no other
PREFIX = "/ui"

Refusal = Callable[[Scope], Response]


class CsrfForms:
    """ASGI middleware: asgi-csrf around the app for paths under /ui, nothing elsewhere.

    `always` are the paths checked even without cookies; `refused` builds the 403 page."""

    def __init__(self, app: ASGIApp, *, always: Iterable[str], refused: Refusal,
                 secret: str | None = None) -> None:
        raw = secret or os.environ.get(ENV_SECRET) or secrets.token_urlsafe(32)
        # Derived, so the sessions' secret is never used as-is for anything else.
        signing = hashlib.sha256(b"llmgw-ui-csrf\0" + raw.encode()).hexdigest()
        self.app = app

        async def send_refused(scope: Scope, send: Send, why: Errors) -> None:
            log.info("dashboard form refused (CSRF: %s): %s %s", why.name.lower(),
                     scope["method"], scope["path"])
            await refused(scope)(scope, _no_body, send)

        def protected(secure: bool) -> ASGIApp:
            # The cookie is marked Secure when the request came over https, as the session's.
            return asgi_csrf(app, cookie_name=CSRF_COOKIE, signing_secret=signing,
                             always_protect=set(always), cookie_path=PREFIX,
                             cookie_samesite="Strict", cookie_secure=secure,
                             send_csrf_failed=send_refused)

        self._plain, self._tls = protected(False), protected(True)
        self._refuse = send_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _SAFE and _content_type(scope) == b"multipart/form-data":
            # asgi-csrf 0.11's multipart reader fails on python-multipart >= 0.0.26 (an
            # open issue of asgi-csrf's), and no /ui form is multipart: refused, not a 500.
            await self._refuse(scope, send, Errors.MULTIPART_MISMATCH)
            return
        checked = self._tls if scope.get("scheme") == "https" else self._plain
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await checked(scope, receive, watched)
        except UnicodeDecodeError:  # asgi-csrf reads a form body as UTF-8: not one of ours
            if started:
                raise
            await self._refuse(scope, send, Errors.FORM_URLENCODED_MISMATCH)


_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # asgi-csrf's own list


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def form_token(request: Request) -> str:
    """The token for this page's forms (asgi-csrf sets its cookie on this response)."""
    get_token: Callable[[], str] | None = request.scope.get(SCOPE_KEY)
    if get_token is None:
        raise RuntimeError("CsrfForms is not installed: create_app appends ui.csrf_middleware")
    return get_token()


def forget_token(request: Request, response: Response) -> None:
    """Drop the token (at sign-in and sign-out): the next page gets a fresh one."""
    response.delete_cookie(CSRF_COOKIE, path=PREFIX, samesite="strict",
                           secure=request.url.scheme == "https")


async def _no_body() -> Message:  # the refusal page reads nothing from the request
    return {"type": "http.disconnect"}

