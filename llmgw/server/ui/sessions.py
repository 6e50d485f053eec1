"""Dashboard sessions: a key is exchanged once for a signed session cookie (docs/dashboard.md).

The cookie holds the key's id, an expiry and a random nonce, signed with HMAC-SHA256: never
the key. Each request checks the signature, the expiry, that this worker has not seen the
session signed out, and that the key is still live (revoking a key ends its sessions within
`cache_s`). The signing secret is `LLMGW_UI_SECRET`; without it each process makes its own,
so workers of one `llmgw serve` must share it (set it before they start)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from llmgw.ledger.api_keys import KeyInfo
from llmgw.ledger.models import ApiKey
from llmgw.ledger.timespec import utcnow

COOKIE = "llmgw_ui"
ENV_SECRET = "LLMGW_UI_SECRET"
LIFETIME_S = 12 * 3600
_SIGNED_OUT_MAX = 100_000  # nonces remembered until their expiry; a flood cannot grow it more


@dataclass(frozen=True, slots=True)
class Session:
    """Who is looking: the key's info (never the key) and the session's nonce."""

    key: KeyInfo
    nonce: str
    expires: int

    @property
    def admin(self) -> bool:
        return self.key.admin


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies for one worker."""

    def __init__(self, engine: Engine, *, secret: str | None = None, cache_s: float = 5.0,
                 lifetime_s: int = LIFETIME_S) -> None:
        raw = secret or os.environ.get(ENV_SECRET) or secrets.token_urlsafe(32)
        # Derived, so the secret is never used as-is for anything else.
        self._mac_key = hashlib.sha256(b"llmgw-ui-session\0" + raw.encode()).digest()
        self.engine = engine
        self.cache_s = cache_s
        self.lifetime_s = lifetime_s
        self._signed_out: dict[str, int] = {}
        self._keys: dict[int, tuple[float, KeyInfo | None]] = {}
        self._lock = threading.Lock()

    def issue(self, key: KeyInfo) -> str:
        expires = int(time.time()) + self.lifetime_s
        if key.expires_at is not None:  # a session never outlives its key
            left = (key.expires_at - utcnow()).total_seconds()
            expires = min(expires, int(time.time() + left))
        body = _b64(json.dumps({"k": key.id, "e": expires,
                                "n": secrets.token_urlsafe(16)}).encode())
        return f"{body}.{self._sign(body)}"

    def check(self, token: str | None) -> Session | None:
        """The live session of a cookie value, else None (blocking: may read the key row)."""
        if not token or len(token) > 512 or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not hmac.compare_digest(mac, self._sign(body)):
            return None
        try:
            data = json.loads(_unb64(body))
            key_id, expires, nonce = int(data["k"]), int(data["e"]), str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= time.time() or nonce in self._signed_out:
            return None
        key = self._key(key_id)
        if key is None:
            return None
        return Session(key, nonce, expires)

    def sign_out(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            if len(self._signed_out) >= _SIGNED_OUT_MAX:
                self._signed_out = {n: e for n, e in self._signed_out.items() if e > now}
            if len(self._signed_out) < _SIGNED_OUT_MAX:
                self._signed_out[session.nonce] = session.expires

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._mac_key, body.encode(), hashlib.sha256).digest())

    def _key(self, key_id: int) -> KeyInfo | None:
        found = self._keys.get(key_id)
        if found is not None and time.monotonic() - found[0] < self.cache_s:
            return found[1]
        with self.engine.connect() as conn:
            row = conn.execute(select(*ApiKey.__table__.columns)
                               .where(ApiKey.id == key_id)).first()
        info = None
        if row is not None:
            r = row._mapping
            candidate = KeyInfo(id=r["id"], prefix=r["prefix"], project_id=r["project_id"],
                                agent_id=r["agent_id"], agent_type=r["agent_type"],
                                name=r["name"], admin=r["admin"], created_at=r["created_at"],
                                expires_at=r["expires_at"], revoked_at=r["revoked_at"],
                                last_used_at=r["last_used_at"])
            info = candidate if candidate.usable(utcnow()) else None
        if self.cache_s > 0:
            with self._lock:
                if len(self._keys) >= 10_000:
                    self._keys.clear()
                self._keys[key_id] = (time.monotonic(), info)
        return info
