"""API keys of the network fronts (docs/deployment.md): issued once, stored as sha256 only.

A key is `llmgw-` + 43 url-safe characters (256 random bits). The keys are high-entropy, so
a plain sha256 is enough (a slow password hash buys nothing against guessing 2^256); the
lookup is by the whole hash, so a request with an unknown key costs the same whatever its
prefix, and the found row's hash is compared again in constant time.

A key may carry its own limits (rpm, tpm, max_parallel; llmgw.server.key_limits enforces
them). `rotate` issues a successor with the same scope and limits and ends the old key's life
after an overlap; the two share one set of counters (`limit_id`), so rotating never doubles a
key's rate.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, select, update

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
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    rotated_to: int | None = None
    lineage_id: int | None = None

    @property
    def limit_id(self) -> int:
        """The id whose counters this key spends: its rotation chain's first key."""
        return self.lineage_id if self.lineage_id is not None else self.id

    @property
    def any_agent(self) -> bool:
        return not self.admin and self.agent_id is None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


EXPIRING_SOON = timedelta(days=7)  # `keys list` and /ui mark keys that expire within this


def expiring_soon(key: KeyInfo, now: datetime) -> bool:
    """A live key whose expiry is within `EXPIRING_SOON`."""
    return (key.usable(now) and key.expires_at is not None
            and key.expires_at - now <= EXPIRING_SOON)


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
                   revoked_at=row.revoked_at, last_used_at=row.last_used_at, rpm=row.rpm,
                   tpm=row.tpm, max_parallel=row.max_parallel, rotated_to=row.rotated_to,
                   lineage_id=row.lineage_id)


class ApiKeyStore:
    """create / list / revoke / authenticate over the `api_keys` table (blocking calls:
    the server runs them in a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, *, project_id: str | None, agent_id: str | None = None,
               agent_type: str | None = None, name: str | None = None, admin: bool = False,
               expires_in: timedelta | None = None, now: datetime | None = None,
               rpm: int | None = None, tpm: int | None = None,
               max_parallel: int | None = None) -> IssuedKey:
        """Issue a key. Exactly one of: an agent key (project + agent), an any-agent key
        (project only), an admin key (`admin`, no project or agent). `rpm`, `tpm`,
        `max_parallel`: the key's own limits (None: its agent type's default, if any)."""
        return self._insert(project_id=project_id, agent_id=agent_id, agent_type=agent_type,
                            name=name, admin=admin, expires_in=expires_in, now=now,
                            limits=(rpm, tpm, max_parallel))

    def _insert(self, *, project_id: str | None, agent_id: str | None, agent_type: str | None,
                name: str | None, admin: bool, expires_in: timedelta | None,
                now: datetime | None, limits: tuple[int | None, int | None, int | None],
                lineage_id: int | None = None, conn: Connection | None = None) -> IssuedKey:
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
        for label, limit in zip(("--rpm", "--tpm", "--max-parallel"), limits, strict=True):
            if limit is not None and limit <= 0:
                raise InvalidRequest(f"{label} must be a positive whole number, got {limit}.",
                                     hint="Leave it out for the agent type's default.")
        if admin and any(v is not None for v in limits):
            raise InvalidRequest("An admin key calls no models; it takes no limits.",
                                 hint="Drop --rpm/--tpm/--max-parallel.")
        rpm, tpm, max_parallel = limits
        secret = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
        now = now or utcnow()
        row = ApiKey(hash=hash_key(secret), prefix=secret[:_DISPLAY_CHARS],
                     project_id=project_id, agent_id=agent_id, agent_type=agent_type, name=name,
                     admin=admin, created_at=now,
                     expires_at=now + expires_in if expires_in is not None else None,
                     rpm=rpm, tpm=tpm, max_parallel=max_parallel, lineage_id=lineage_id)
        values = {c.name: getattr(row, c.key) for c in ApiKey.__table__.columns if c.name != "id"}
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.engine.begin())
            result = conn.execute(ApiKey.__table__.insert().values(values))
            inserted = result.inserted_primary_key
            assert inserted is not None  # a one-row INSERT with an autoincrement key
            row.id = int(inserted[0])
        return IssuedKey(info=_info(row), secret=secret)

    def get(self, key_id: int) -> KeyInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*ApiKey.__table__.columns)
                               .where(ApiKey.id == key_id)).first()
        return _info(ApiKey(**row._mapping)) if row is not None else None

    def rotate(self, key_id: int, *, overlap: timedelta,
               now: datetime | None = None) -> tuple[IssuedKey, KeyInfo]:
        """Issue the successor of a live key (same project, agent, agent type, name, limits;
        the same lifetime it was given, counted from now) and end the old key's life when
        `overlap` has passed (sooner if it expired sooner). Returns (successor, old key)."""
        if overlap < timedelta(0):
            raise InvalidRequest("The overlap cannot be negative.", hint="Use e.g. --overlap 1h.")
        now = now or utcnow()
        with self.engine.begin() as conn:
            found = conn.execute(select(*ApiKey.__table__.columns)
                                 .where(ApiKey.id == key_id)).first()
            if found is None:
                raise InvalidRequest(f"No API key with id {key_id}.", hint="See `llmgw keys list`.")
            old = _info(ApiKey(**found._mapping))
            if old.admin:
                raise InvalidRequest("Admin keys are not rotated.",
                                     hint="Create a new one (`llmgw keys create --admin`), then "
                                          "revoke this one.")
            if old.rotated_to is not None:
                raise InvalidRequest(f"Key {key_id} was already rotated, to key {old.rotated_to}.",
                                     hint="Rotate its successor.")
            if not old.usable(now):
                raise InvalidRequest(f"Key {key_id} is revoked or expired: nothing to rotate.",
                                     hint="Create a new key (`llmgw keys create`).")
            lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
            issued = self._insert(project_id=old.project_id, agent_id=old.agent_id,
                                  agent_type=old.agent_type, name=old.name, admin=False,
                                  expires_in=lifetime, now=now,
                                  limits=(old.rpm, old.tpm, old.max_parallel),
                                  lineage_id=old.limit_id, conn=conn)
            ends = now + overlap
            if old.expires_at is not None and old.expires_at < ends:
                ends = old.expires_at
            # Only if nobody rotated it meanwhile: two rotations at once leave one successor.
            done = conn.execute(update(ApiKey).where(ApiKey.id == key_id,
                                                     ApiKey.rotated_to.is_(None))
                                .values(rotated_to=issued.info.id, expires_at=ends))
            if done.rowcount != 1:
                raise InvalidRequest(f"Key {key_id} was rotated meanwhile.",
                                     hint="See `llmgw keys list` for its successor.")
        return issued, old.model_copy(update={"rotated_to": issued.info.id, "expires_at": ends})

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
