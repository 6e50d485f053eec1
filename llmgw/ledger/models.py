"""The ledger's tables as SQLAlchemy 2.0 typed models. Alembic (`migrations/`) owns the schema.

Money is integer micro-dollars (`*_micros`); times are naive UTC.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

STATUSES = ("ok", "error", "cached", "refused", "partial")


class Base(DeclarativeBase):
    if TYPE_CHECKING:  # each model maps one Table (SQLAlchemy types it as any FromClause)
        __table__: ClassVar[Table]


class UsageEvent(Base):
    """One attempt of one request: a provider call (ok/error/partial), a cache hit or a refusal."""

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    agent_id: Mapped[str] = mapped_column(String(200))
    agent_type: Mapped[str | None] = mapped_column(String(200))
    project_id: Mapped[str] = mapped_column(String(200))
    model_group: Mapped[str] = mapped_column(String(200))
    deployment_id: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)  # 0015: was cached_tokens
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # Migration 0013: who and what the request was for, and every token kind billed.
    session_id: Mapped[str | None] = mapped_column(String(200))  # the agent run
    end_user: Mapped[str | None] = mapped_column(String(200))  # `user` / metadata.user_id
    requested_model: Mapped[str | None] = mapped_column(String(200))  # the alias asked for
    dialect: Mapped[str | None] = mapped_column(String(16))  # chat, anthropic, responses
    cache_write_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cache_write_1h_tokens: Mapped[int] = mapped_column(Integer,
                                                       server_default=text("0"))
    reasoning_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Migration 0015: the per-token USD rates the attempt was priced at, as decimal strings
    # (input, output, cache_read, cache_write, cache_write_1h); NULL when unknown.
    rates: Mapped[dict[str, str] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("request_id", "attempt", name="uq_usage_events_request_attempt"),
        CheckConstraint(
            "status IN ('ok', 'error', 'cached', 'refused', 'partial')",
            name="ck_usage_events_status",
        ),
        CheckConstraint("cost_micros >= 0", name="ck_usage_events_cost_nonneg"),
        Index("ix_usage_events_project_ts", "project_id", "ts"),
        Index("ix_usage_events_agent_ts", "agent_id", "ts"),
        Index("ix_usage_events_ts", "ts"),
        # Reports by session (they read usage_events, the rollup has no sessions): one
        # session's rows in a window, within a project or not.
        Index("ix_usage_events_session", "session_id", "project_id", "ts"),
    )


# The columns a writer fills (all but the generated id), in table order.
USAGE_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in UsageEvent.__table__.columns if c.name != "id")


class UsageRollup(Base):
    """Per-day report totals, kept by a trigger on `usage_events` (migration 0003 has the SQL).

    NULL keys are stored as '' with a bit in `null_keys` (1 agent_type, 2 deployment_id,
    4 provider, 8 model) so the primary key is an upsert target on both databases. `req_*` are
    request credits: a row of usage_events adds 1 to `req_first` if it is its request's first
    row, and to `req_<column>` if it is its request's first row with that column's value."""

    __tablename__ = "usage_rollup"

    project_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_group: Mapped[str] = mapped_column(String(200), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    model: Mapped[str] = mapped_column(String(300), primary_key=True)
    null_keys: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    cached: Mapped[int] = mapped_column(BigInteger)
    refused: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    saved_micros: Mapped[int] = mapped_column(BigInteger)
    req_first: Mapped[int] = mapped_column(BigInteger)
    req_agent_type: Mapped[int] = mapped_column(BigInteger)
    req_model_group: Mapped[int] = mapped_column(BigInteger)
    req_deployment: Mapped[int] = mapped_column(BigInteger)
    req_provider: Mapped[int] = mapped_column(BigInteger)
    req_model: Mapped[int] = mapped_column(BigInteger)
    # Migration 0015: the sums of every token kind (cache reads and writes, reasoning).
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = {"sqlite_with_rowid": False}


class UsageSplitRequest(Base):
    """A request whose rows differ in day, project or agent: the rollup's credits cannot
    count it exactly, so the report counts it from `usage_events` (the trigger lists it)."""

    __tablename__ = "usage_split_requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)

class BudgetRule(Base):
    """A limit set with `llmgw budgets set`; overrides the config file's default for its key.

    scope: global | project | agent | agent_type | request; scope_id: the id, "*" for global
    and request caps; period: day | month | request (the budget window)."""

    __tablename__ = "budgets"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    limit_micros: Mapped[int] = mapped_column(BigInteger)
    warn_ratio: Mapped[float] = mapped_column(Float, default=0.8)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))

    __table_args__ = (
        CheckConstraint("limit_micros >= 0", name="ck_budgets_limit_nonneg"),
        CheckConstraint("warn_ratio > 0 AND warn_ratio <= 1", name="ck_budgets_warn_ratio"),
        CheckConstraint("period IN ('day', 'month', 'request', 'total')", name="ck_budgets_period"),
    )


class BudgetCounter(Base):
    """Spend and open reservations of one budget key in one window. Keyed by the window's
    start (`period_start`), so a new day needs no reset job: its row simply does not exist yet."""

    __tablename__ = "budget_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=False), primary_key=True)
    spent_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        CheckConstraint("spent_micros >= 0", name="ck_budget_counters_spent_nonneg"),
        CheckConstraint("reserved_micros >= 0", name="ck_budget_counters_reserved_nonneg"),
    )


class Reservation(Base):
    """Money held for one in-flight request. `counters` lists the counter keys it holds;
    a crash leaves it `open`, and reconcile settles it at `amount_micros`."""

    __tablename__ = "reservations"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    state: Mapped[str] = mapped_column(String(12))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    settled_micros: Mapped[int | None] = mapped_column(BigInteger)
    agent_id: Mapped[str] = mapped_column(String(200))
    agent_type: Mapped[str | None] = mapped_column(String(200))
    project_id: Mapped[str] = mapped_column(String(200))
    model_group: Mapped[str] = mapped_column(String(200))
    counters: Mapped[list[Any]] = mapped_column(JSON)

    __table_args__ = (
        CheckConstraint("state IN ('open', 'settled', 'released', 'reconciled')",
                        name="ck_reservations_state"),
        CheckConstraint("amount_micros >= 0", name="ck_reservations_amount_nonneg"),
        # Only the open ones (what a reconcile looks for): a settle writes no index entry.
        Index("ix_reservations_open_created", "created_at",
              postgresql_where=text("state = 'open'"), sqlite_where=text("state = 'open'")),
    )


class ApiKey(Base):
    """A key of the network fronts (`llmgw keys create`). Only its sha256 is stored; `prefix`
    is the start of the key, for people to tell keys apart. An agent key fixes project and
    agent; `agent_id` NULL is an any-agent key; `admin` reads usage across projects only."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(String(200))
    agent_id: Mapped[str | None] = mapped_column(String(200))
    agent_type: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    admin: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    # The key's own limits (0017); NULL: the agent type's default (llmgw.key_limits), else none.
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    max_parallel: Mapped[int | None] = mapped_column(Integer)
    rotated_to: Mapped[int | None] = mapped_column(BigInteger)  # the successor `rotate` issued
    lineage_id: Mapped[int | None] = mapped_column(BigInteger)  # a rotation chain's first key

    __table_args__ = (
        UniqueConstraint("hash", name="uq_api_keys_hash"),
        CheckConstraint("admin OR project_id IS NOT NULL", name="ck_api_keys_scope"),
        CheckConstraint("(rpm IS NULL OR rpm > 0) AND (tpm IS NULL OR tpm > 0) "
                        "AND (max_parallel IS NULL OR max_parallel > 0)",
                        name="ck_api_keys_limits_positive"),
        Index("ix_api_keys_project", "project_id"),
    )


class StoredResponseRow(Base):
    """A Responses-API response kept (`store` true) so a later request in the same project
    can continue it with `previous_response_id`, on any deployment or provider. `input` is
    the conversation's input items up to this response, `output` its output items, `response`
    the object as the client got it. Another project's id is not found; past `expires_at`
    the row is neither found nor kept."""

    __tablename__ = "stored_responses"

    project_id: Mapped[str] = mapped_column(String(200))
    id: Mapped[str] = mapped_column(String(400))  # LiteLLM's ids are long base64 strings
    agent_id: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(64))  # the ledger request that made it
    model_group: Mapped[str] = mapped_column(String(200))
    deployment_id: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    input: Mapped[list[Any]] = mapped_column(JSON)
    output: Mapped[list[Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        # Project first: every lookup names it, so one project never sees another's ids.
        PrimaryKeyConstraint("project_id", "id", name="pk_stored_responses"),
        Index("ix_stored_responses_expires", "expires_at"),  # the purge's range
    )
