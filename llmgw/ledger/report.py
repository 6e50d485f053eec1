"""Usage reports: one GROUP BY query over `usage_events`, same answers on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import ColumnElement, Engine, Select, case, distinct, func, literal_column, select
from sqlalchemy.exc import DBAPIError

from llmgw.ledger.migrate import ledger_error
from llmgw.ledger.models import UsageEvent
from llmgw.pricing import micros_to_usd

GroupBy = Literal[
    "project", "agent", "agent-type", "model", "provider", "day", "model-group", "deployment"
]
GROUP_BY_VALUES: tuple[str, ...] = get_args(GroupBy)
NULL_KEY = "-"
TOTAL_KEY = "TOTAL"
ATTEMPT_STATUSES = ("ok", "error", "partial")  # real provider calls



class ReportRow(BaseModel):
    """Totals for one key. Sums run over every ledger row in scope, whatever its status."""

    model_config = ConfigDict(frozen=True)

    key: str
    requests: int = 0  # distinct request_id
    attempts: int = 0  # rows with status ok / error / partial
    errors: int = 0
    cached: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    saved_micros: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal:
        return micros_to_usd(self.cost_micros)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def saved_usd(self) -> Decimal:
        return micros_to_usd(self.saved_micros)


def usage_report(engine: Engine, *, by: GroupBy, project: str | None = None,
                 agent: str | None = None, since: datetime | None = None,
                 until: datetime | None = None) -> list[ReportRow]:
    """Usage grouped by `by`, filtered in SQL; `since` is inclusive, `until` exclusive.

    Rows come by day for `day`, else by cost (highest first) then key. NULL keys show as "-".
    """
    if by not in GROUP_BY_VALUES:
        raise ValueError(f"unknown group-by {by!r}; use one of {', '.join(GROUP_BY_VALUES)}")
    key = _key_expr(by, engine.dialect.name).label("key")
    stmt = _filtered(select(key, *_measures()), project, agent, since, until).group_by(key)
    rows = [_row(r.key, r) for r in _fetch(engine, stmt)]
    if by == "day":
        return sorted(rows, key=lambda r: r.key)
    return sorted(rows, key=lambda r: (-r.cost_micros, r.key))


def usage_totals(engine: Engine, *, project: str | None = None, agent: str | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> ReportRow:
    """One TOTAL row for the same filters (its own query: a request can span several keys)."""
    stmt = _filtered(select(*_measures()), project, agent, since, until)
    return _row(TOTAL_KEY, _fetch(engine, stmt)[0])


def _measures() -> list[ColumnElement[int]]:
    t = UsageEvent.__table__.c

    def count_status(*statuses: str) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((t.status.in_(statuses), 1), else_=0)), 0)

    def total(column: ColumnElement[int]) -> ColumnElement[int]:
        return func.coalesce(func.sum(column), 0)

    return [
        func.count(distinct(t.request_id)).label("requests"),
        count_status(*ATTEMPT_STATUSES).label("attempts"),
        count_status("error").label("errors"),
        count_status("cached").label("cached"),
        count_status("refused").label("refused"),
        total(t.prompt_tokens).label("prompt_tokens"),
        total(t.completion_tokens).label("completion_tokens"),
        total(t.cost_micros).label("cost_micros"),
        total(t.saved_micros).label("saved_micros"),
    ]


def _key_expr(by: str, dialect: str) -> ColumnElement[str | None]:
    t = UsageEvent.__table__.c
    if by == "day":
        if dialect == "postgresql":
            # A literal format, not a bound one: GROUP BY must repeat the SELECT expression exactly.
            return func.to_char(t.ts, literal_column("'YYYY-MM-DD'"))
        return func.date(t.ts)  # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff'
    column = {
        "project": t.project_id,
        "agent": t.agent_id,
        "agent-type": t.agent_type,
        "model": t.model,
        "provider": t.provider,
        "model-group": t.model_group,
        "deployment": t.deployment_id,
    }[by]
    return column


def _filtered(stmt: Select, project: str | None, agent: str | None,  # type: ignore[type-arg]
              since: datetime | None, until: datetime | None) -> Select:  # type: ignore[type-arg]
    t = UsageEvent.__table__.c
    if project is not None:
        stmt = stmt.where(t.project_id == project)
    if agent is not None:
        stmt = stmt.where(t.agent_id == agent)
    if since is not None:
        stmt = stmt.where(t.ts >= naive_utc(since))
    if until is not None:
        stmt = stmt.where(t.ts < naive_utc(until))
    return stmt


def naive_utc(moment: datetime) -> datetime:
    """The ledger's time form: naive UTC (aware datetimes are converted, naive taken as UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _fetch(engine: Engine, stmt: Select) -> list:  # type: ignore[type-arg]
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt))
    except DBAPIError as exc:
        raise ledger_error(exc, engine) from None


def _row(key: object, r: object) -> ReportRow:
    # PostgreSQL's SUM(bigint) is NUMERIC (a Decimal): int() keeps it exact.
    return ReportRow(
        key=NULL_KEY if key is None else str(key),
        **{name: int(getattr(r, name)) for name in (
            "requests", "attempts", "errors", "cached", "refused",
            "prompt_tokens", "completion_tokens", "cost_micros", "saved_micros",
        )},
    )
