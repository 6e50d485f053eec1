"""Identity is the key, never the body (docs/deployment.md).

`Authorization: Bearer <key>` or Anthropic's `x-api-key: <key>` -> the key's `KeyInfo`.
An agent key fixes project and agent (the body's `user` is its end user); an any-agent key
fixes the project and takes the agent from `X-LLMGW-Agent`, else OpenAI's `user` field; an
admin key reads usage only. See `caller_of`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from llmgw.errors import LedgerError
from llmgw.ids import new_request_id
from llmgw.ledger.api_keys import ApiKeyStore, KeyInfo, hash_key
from llmgw.ledger.timespec import utcnow
from llmgw.server.errors import FrontError
from llmgw.types import ID_MAX_CHARS, check_id_text

log = logging.getLogger("llmgw.server.auth")
AGENT_HEADER = "x-llmgw-agent"
AGENT_TYPE_HEADER = "x-llmgw-agent-type"
PROJECT_HEADER = "x-llmgw-project"
SESSION_HEADER = "x-llmgw-session"

_NO_KEY = ("No API key. Send `Authorization: Bearer <key>` (or `x-api-key: <key>`); "
           "`llmgw keys create` issues one.")
_BAD_KEY = ("The API key is unknown, revoked or expired. Ask for a new one "
            "(`llmgw keys create`).")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a completion is for: the gateway's agent_id, project_id and agent_type, and what
    the ledger records beside them: the end user the caller acts for and the agent run."""

    project_id: str
    agent_id: str
    agent_type: str | None
    key: KeyInfo
    end_user: str | None = None  # `user` / metadata.user_id, when it is not the agent
    session_id: str | None = None  # X-LLMGW-Session, or Claude Code's session


class Authenticator:
    """Checks keys against the store, remembering good ones for `cache_s` seconds so a
    request costs no database read; unknown keys are never remembered. A remembered key is
    still refused the moment it expires (a rotated key's overlap ends on time). `clock`:
    the wall clock keys expire by (tests move it)."""

    def __init__(self, store: ApiKeyStore, *, cache_s: float = 5.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self._known: dict[str, tuple[float, KeyInfo]] = {}

    async def key_of(self, request: Request) -> KeyInfo:
        secret = _secret(request)
        if not secret:
            raise FrontError(401, "missing_api_key", _NO_KEY)
        digest = hash_key(secret) if self.cache_s > 0 else ""
        if digest:
            found = self._known.get(digest)
            if found is not None and time.monotonic() - found[0] < self.cache_s:
                if not found[1].usable(self.clock()):
                    raise FrontError(401, "invalid_api_key", _BAD_KEY)
                return found[1]
        try:
            info = await asyncio.to_thread(self.store.authenticate, secret, now=self.clock())
        except SQLAlchemyError as exc:  # the ledger database is down (a restart): typed, 503
            error = LedgerError(
                f"The key could not be checked: the ledger database is unreachable "
                f"({type(exc).__name__}).",
                hint="Retry shortly; check that the ledger database is up.")
            error.request_id = new_request_id()  # names this refusal in the server's log
            log.warning("request %s: key check failed, ledger unreachable (%s)",
                        error.request_id, type(exc).__name__)
            raise error from None
        if info is None:
            raise FrontError(401, "invalid_api_key", _BAD_KEY)
        if digest:
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[digest] = (time.monotonic(), info)
        return info


def _secret(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def caller_of(key: KeyInfo, request: Request, *, user: str | None = None,
              anthropic_user_id: str | None = None) -> Caller:
    """The identity a completion runs under; the key decides.

    `user` is OpenAI's body field `user`; `anthropic_user_id` is Anthropic's
    `metadata.user_id` (a front passes the one its dialect has; the rules are the same).
    * An agent key: the agent is the key's. The body's name is the caller's end user
      (`Caller.end_user`), never another agent and never a 403; only an `X-LLMGW-Agent`
      header naming another agent is refused.
    * An any-agent key: the agent is `X-LLMGW-Agent`, else the body's name, which is then
      not also the end user. Claude Code's `metadata.user_id` (its JSON form or the older
      `user_<hash>_account_<uuid>_session_<uuid>`) is never an agent name: it changes with
      every session, so such a caller must send the header.
    * `Caller.session_id`: the `X-LLMGW-Session` header, else the session inside Claude
      Code's user id. From Claude Code's user id, the end user is its account uuid (its
      device id when signed in without an account).
    Every value is an id: printable, 1 to 200 characters, else a 400."""
    if key.admin:
        raise FrontError(403, "admin_key_reads_usage_only",
                         "An admin key reads usage only; it cannot call models. Use a project "
                         "key (`llmgw keys create --project P ...`).")
    assert key.project_id is not None
    project = request.headers.get(PROJECT_HEADER)
    if project is not None and project != key.project_id:
        raise FrontError(403, "project_not_allowed",
                         f"This key belongs to project {key.project_id!r}; it cannot act for "
                         f"project {project!r}. Use that project's key.")
    param = "user" if user is not None else "metadata.user_id"
    said = user if user is not None else anthropic_user_id
    said = said or None
    claude = claude_code_user(said) if said is not None else None
    session = _checked(request.headers.get(SESSION_HEADER) or None, SESSION_HEADER, "session id")
    if session is None and claude is not None:
        session = _checked(claude.session_id or None, param, "session id")
    named = _checked(request.headers.get(AGENT_HEADER) or None, AGENT_HEADER, "agent id")
    agent_type = request.headers.get(AGENT_TYPE_HEADER) or None
    end_user = claude.end_user if claude is not None else said
    if key.agent_id is not None:  # an agent key: the key is the identity
        if named is not None and named != key.agent_id:
            raise FrontError(403, "agent_not_allowed",
                             f"This key acts as agent {key.agent_id!r}; it cannot act as "
                             f"{named!r}. Use an --any-agent key to name agents per request.")
        if agent_type is not None and agent_type != key.agent_type:
            raise FrontError(403, "agent_type_not_allowed",
                             f"This key's agent type is {key.agent_type!r}, not "
                             f"{agent_type!r}.")
        return Caller(key.project_id, key.agent_id, key.agent_type, key,
                      end_user=_checked(end_user, param, "end user"), session_id=session)
    if named is None:
        if claude is not None:
            raise FrontError(400, "agent_required",
                             f"This key serves any agent of its project, and Claude Code's "
                             f"metadata.user_id changes with every session, so it does not name "
                             f"one: send the {AGENT_HEADER} header, e.g. "
                             f"ANTHROPIC_CUSTOM_HEADERS=\"X-LLMGW-Agent: <name>\" in Claude "
                             f"Code's environment.", param="metadata.user_id")
        if said is None:
            raise FrontError(400, "agent_required",
                             "This key serves any agent of its project: name the agent in "
                             f"OpenAI's `user` field (Anthropic: metadata.user_id) or the "
                             f"{AGENT_HEADER} header.", param="user")
        named, end_user = _checked(said, param, "agent id"), None
    assert named is not None
    return Caller(key.project_id, named, agent_type, key,
                  end_user=_checked(end_user, param, "end user"), session_id=session)


@dataclass(frozen=True, slots=True)
class ClaudeCodeUser:
    """What Claude Code puts in `metadata.user_id`."""

    device_id: str
    account_uuid: str
    session_id: str

    @property
    def end_user(self) -> str | None:
        return self.account_uuid or self.device_id or None


_CLAUDE_CODE_LEGACY = re.compile(
    r"user_(?P<device>[A-Za-z0-9]+)_account_(?P<account>[A-Za-z0-9-]*)"
    r"_session_(?P<session>[A-Za-z0-9-]+)")


def claude_code_user(user_id: str) -> ClaudeCodeUser | None:
    """Claude Code's `metadata.user_id` taken apart: its JSON string
    (`{"device_id":...,"account_uuid":"","session_id":...}`) or its older form
    `user_<hash>_account_<uuid>_session_<uuid>`; None for anything else."""
    legacy = _CLAUDE_CODE_LEGACY.fullmatch(user_id)
    if legacy is not None:
        return ClaudeCodeUser(legacy["device"], legacy["account"], legacy["session"])
    if not user_id.startswith("{"):
        return None
    try:
        data = json.loads(user_id)
    except ValueError:
        return None
    if not isinstance(data, dict) or not {"device_id", "session_id"} & data.keys():
        return None
    fields = [data.get(name) for name in ("device_id", "account_uuid", "session_id")]
    if not all(isinstance(v, str | None) for v in fields):
        return None
    return ClaudeCodeUser(*(v or "" for v in fields))


def _checked(value: str | None, param: str, what: str) -> str | None:
    """`value` if it is a valid id (as the ledger stores ids), else a 400 naming `param`."""
    if value is None:
        return None
    try:
        check_id_text(value)
    except ValueError as exc:
        raise FrontError(400, "invalid_request", f"The {what} ({param}) {exc}.",
                         param=param) from None
    if len(value) > ID_MAX_CHARS:
        raise FrontError(400, "invalid_request", f"The {what} ({param}) is {len(value)} "
                         f"characters long; at most {ID_MAX_CHARS} fit.", param=param)
    return value


def usage_project(key: KeyInfo, asked: str | None) -> str | None:
    """The project a usage report may cover: a project key its own, an admin key any
    (None: every project)."""
    if key.admin:
        return asked
    if asked is not None and asked != key.project_id:
        raise FrontError(403, "project_not_allowed",
                         f"This key reads project {key.project_id!r}'s usage only, not "
                         f"{asked!r}.")
    return key.project_id
