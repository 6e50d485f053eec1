"""Stored Responses-API responses (`store` true), kept per project for `previous_response_id`.

llmgw keeps what a continuation needs (the conversation's input items up to a response and
that response's output items) in the ledger database, not at the provider, so a later
request may continue on any deployment, provider or gateway process. A lookup always names
the caller's project: another project's id is simply not found (a 404, never a leak).
Blocking calls: the gateway runs them with `LedgerStore.run` in its ledger worker threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from llmgw.errors import InvalidRequest
from llmgw.ledger.models import StoredResponseRow
from llmgw.types import check_id_text, nested_problem, text_problem

_TABLE = StoredResponseRow.__table__
_KEY = ("project_id", "id")
_ID_MAX_CHARS = 400  # LiteLLM's response ids are long base64 strings
# The table's text columns: name, length (llmgw/ledger/models.py), nullable.
_TEXT_COLUMNS: tuple[tuple[str, int, bool], ...] = (
    ("id", _ID_MAX_CHARS, False), ("project_id", 200, False), ("agent_id", 200, False),
    ("request_id", 64, False), ("model_group", 200, False), ("deployment_id", 200, True),
    ("provider", 100, True))


@dataclass(frozen=True)
class StoredResponse:
    """One kept response. Times are naive UTC, the ledger's form (aware ones are converted)."""

    id: str
    project_id: str
    agent_id: str
    request_id: str  # the ledger request that made it
    model_group: str
    deployment_id: str | None
    provider: str | None
    created_at: datetime
    expires_at: datetime
    input: list[dict[str, Any]]  # the conversation's input items up to this response
    output: list[dict[str, Any]]  # this response's output items
    response: dict[str, Any]  # the whole response object as returned to the client


class ResponseStore:
    """save / get / purge over the `stored_responses` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, stored: StoredResponse) -> None:
        """Keep `stored`; the same id in the same project again replaces the row. Raises
        `InvalidRequest` (and writes nothing) for a value no ledger database can store."""
        row = _storable(stored)
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql"
                  else sqlite.insert)(_TABLE).values(row)
        upsert = insert.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={name: insert.excluded[name] for name in row if name not in _KEY})
        with self.engine.begin() as conn:
            conn.execute(upsert)

    def get(self, response_id: str, project_id: str, now: datetime) -> StoredResponse | None:
        """The response `response_id` of `project_id`; None when it is unknown, another
        project's or expired at `now` (an id no database could hold is unknown too)."""
        if not (_findable(response_id, _ID_MAX_CHARS) and _findable(project_id, 200)):
            return None
        query = select(*_TABLE.columns).where(
            _TABLE.c.project_id == project_id, _TABLE.c.id == response_id,
            _TABLE.c.expires_at > _naive_utc(now, "now"))
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return StoredResponse(**found._mapping) if found is not None else None

    def purge(self, now: datetime) -> int:
        """Delete the responses expired at `now`; how many were deleted."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(_TABLE).where(
                _TABLE.c.expires_at <= _naive_utc(now, "now")))
        return result.rowcount


def _storable(stored: StoredResponse) -> dict[str, Any]:
    """`stored` as the row to write, or InvalidRequest saying which value cannot be stored."""
    row = {f.name: getattr(stored, f.name) for f in fields(stored)}  # no deep copy
    for name, max_chars, nullable in _TEXT_COLUMNS:
        value = row[name]
        if value is None and nullable:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= max_chars:
            raise InvalidRequest(f"The stored response's {name} must be text of 1 to "
                                 f"{max_chars} characters, got {_short(value)}.")
        try:
            check_id_text(value)
        except ValueError as exc:
            raise InvalidRequest(f"The stored response's {name} {exc}.") from None
    row["created_at"] = _naive_utc(stored.created_at, "created_at")
    row["expires_at"] = _naive_utc(stored.expires_at, "expires_at")
    if row["expires_at"] <= row["created_at"]:
        raise InvalidRequest("The stored response would expire when it is created.",
                             hint="Give it a retention longer than zero, or do not store it.")
    for name, kind in (("input", list), ("output", list), ("response", dict)):
        _check_json(row[name], name, kind)
    return row


def _check_json(value: Any, name: str, kind: type) -> None:
    items = value if isinstance(value, list) else ()
    if not isinstance(value, kind) or not all(isinstance(item, dict) for item in items):
        wanted = "a list of items (objects)" if kind is list else "an object"
        raise InvalidRequest(f"The stored response's {name} must be {wanted}, "
                             f"got {type(value).__name__}.")
    if why := nested_problem(value, name):
        raise InvalidRequest(f"The stored response cannot be kept: {why}.",
                             hint="Remove the character or value, or send the request with "
                                  "store false.")
    try:  # what nested_problem leaves alone: objects that are not JSON at all
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"The stored response's {name} is not JSON: {exc}.") from None


def _naive_utc(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidRequest(f"{name} must be a datetime, got {type(value).__name__}.")
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _findable(value: Any, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars and text_problem(value) is None


def _short(value: Any) -> str:
    """A value for an error message: type and length, never a whole long text."""
    if isinstance(value, str):
        return f"{len(value)} characters" if value else "an empty string"
    return type(value).__name__
