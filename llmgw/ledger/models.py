"""The ledger's tables as SQLAlchemy 2.0 typed models. Alembic (`migrations/`) owns the schema.

Money is integer micro-dollars (`*_micros`); times are naive UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

STATUSES = ("ok", "error", "cached", "refused", "partial")


class Base(DeclarativeBase):
    pass


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
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)

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
    )


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
        CheckConstraint("period IN ('day', 'month', 'request')", name="ck_budgets_period"),
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
        Index("ix_reservations_state_created", "state", "created_at"),
    )
