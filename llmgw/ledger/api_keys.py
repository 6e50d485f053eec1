"""API keys of the network fronts (DESIGN section 12): issued once, stored as sha256 only.

A key is `llmgw-` + 43 url-safe characters (256 random bits). The keys are high-entropy, so
a plain sha256 is enough (a slow password hash buys nothing against guessing 2^256); the
lookup is by the whole hash, so a request with an unknown key costs the same whatever its
prefix, and the found row's hash is compared again in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select, update

from llmgw.errors import InvalidRequest
from llmgw.ledger.models import ApiKey
from llmgw.ledger.timespec import utcnow

KEY_PREFIX = "llmgw-"
_RANDOM_BYTES = 32
_DISPLAY_CHARS = 12  # "llmgw-" and 6 random characters: enough to tell keys apart
_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is a hint: not one write per request


class KeyInfo(BaseModel):
    """What a key may do; never the key or its hash."""

    model_config = ConfigDict(frozen=True)

    id: int
    prefix: str
    project_id: str | None
    agent_id: str | None  # None: an any-agent key (or an admin key)
    agent_type: str | None
    name: str | None
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def any_agent(self) -> bool:
        return not self.admin and self.agent_id is None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class IssuedKey(BaseModel):
    """A new key: `secret` is shown once and stored nowhere."""

    model_config = ConfigDict(frozen=True)

    info: KeyInfo
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(id=row.id, prefix=row.prefix, project_id=row.project_id,
                   agent_id=row.agent_id, agent_type=row.agent_type, name=row.name,
                   admin=row.admin, created_at=row.created_at, expires_at=row.expires_at,
                   revoked_at=row.revoked_at, last_used_at=row.last_used_at)


class ApiKeyStore:
    """create / list / revoke / authenticate over the `api_keys` table (blocking calls:
    the server runs them in a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, *, project_id: str | None, agent_id: str | None = None,
               agent_type: str | None = None, name: str | None = None, admin: bool = False,
               expires_in: timedelta | None = None, now: datetime | None = None) -> IssuedKey:
        """Issue a key. Exactly one of: an agent key (project + agent), an any-agent key
        (project only), an admin key (`admin`, no project or agent)."""
        for label, value in (("project", project_id), ("agent", agent_id),
                             ("agent type", agent_type), ("name", name)):
            if value is not None and not (0 < len(value.strip()) <= 200):
                raise InvalidRequest(f"The {label} must be 1 to 200 characters, got {value!r}.")
        if admin and (project_id or agent_id or agent_type):
            raise InvalidRequest("An admin key reads usage across projects; it takes no "
                                 "project, agent or agent type.", hint="Drop --project/--agent.")
        if not admin and not project_id:
            raise InvalidRequest("A key needs a project.", hint="Pass --project P, or --admin.")
        if agent_type and not agent_id:
            raise InvalidRequest("--agent-type belongs to an agent key.",
                                 hint="Pass --agent A with it.")
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidRequest("The expiry must be in the future.", hint="Use e.g. --expires 30d.")
        secret = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
        now = now or utcnow()
        row = ApiKey(hash=hash_key(secret), prefix=secret[:_DISPLAY_CHARS],
                     project_id=project_id, agent_id=agent_id, agent_type=agent_type, name=name,
                     admin=admin, created_at=now,
                     expires_at=now + expires_in if expires_in is not None else None)
        with self.engine.begin() as conn:
            result = conn.execute(ApiKey.__table__.insert().values(
                {c.name: getattr(row, c.key) for c in ApiKey.__table__.columns
                 if c.name != "id"}))
            inserted = result.inserted_primary_key
            assert inserted is not None  # a one-row INSERT with an autoincrement key
            row.id = int(inserted[0])
        return IssuedKey(info=_info(row), secret=secret)

    def list(self, *, project_id: str | None = None) -> list[KeyInfo]:
        query = select(*ApiKey.__table__.columns).order_by(ApiKey.id)
        if project_id is not None:
            query = query.where(ApiKey.project_id == project_id)
        with self.engine.connect() as conn:
            return [_info(ApiKey(**r._mapping)) for r in conn.execute(query)]

    def revoke(self, key_id: int, *, now: datetime | None = None) -> KeyInfo | None:
        """Revoke a key (kept for the record); None when there is no such key. Revoking a
        revoked key keeps its first revocation time."""
        with self.engine.begin() as conn:
            conn.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                         .values(revoked_at=now or utcnow()))
            row = conn.execute(select(*ApiKey.__table__.columns)
                               .where(ApiKey.id == key_id)).first()
        return _info(ApiKey(**row._mapping)) if row is not None else None

    def authenticate(self, secret: str, *, now: datetime | None = None) -> KeyInfo | None:
        """The key's info if `secret` is a live key (not revoked, not expired), else None.
        Marks it used (at most once a minute per key)."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            hash_key(secret[:200])  # the same work as a lookup miss, near enough
            return None
        digest = hash_key(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(*ApiKey.__table__.columns)
                               .where(ApiKey.hash == digest)).first()
        if row is None or not hmac.compare_digest(row.hash, digest):
            return None
        info = _info(ApiKey(**row._mapping))
        now = now or utcnow()
        if not info.usable(now):
            return None
        if info.last_used_at is None or now - info.last_used_at >= _TOUCH_EVERY:
            with self.engine.begin() as conn:
                conn.execute(update(ApiKey).where(ApiKey.id == info.id)
                             .values(last_used_at=now))
            info = info.model_copy(update={"last_used_at": now})
        return info
