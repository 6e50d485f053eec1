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
