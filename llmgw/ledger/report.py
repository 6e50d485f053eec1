"""Usage reports from the per-day rollup (whole days) and `usage_events` (partial days, split
requests): exact integer answers, the same on SQLite and PostgreSQL, fast at millions of rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeGuard, get_args

from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    case,
    distinct,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
)
from sqlalchemy.exc import DBAPIError

from llmgw.budgets.pricing import micros_to_usd
from llmgw.ledger.migrate import ledger_error
from llmgw.ledger.models import UsageEvent, UsageRollup, UsageSplitRequest

GroupBy = Literal[
    "project", "agent", "agent-type", "model", "provider", "day", "model-group", "deployment",
    "session",
]
GROUP_BY_VALUES: tuple[str, ...] = get_args(GroupBy)


def is_group_by(value: str) -> TypeGuard[GroupBy]:
    """Whether a `--by` or `by=` a user gave is one of GROUP_BY_VALUES."""
    return value in GROUP_BY_VALUES
NULL_KEY = "-"
TOTAL_KEY = "TOTAL"
ATTEMPT_STATUSES = ("ok", "error", "partial")  # real provider calls
# Every token kind (migration 0015): cache reads and writes are inside prompt_tokens, the
# 1-hour writes inside cache_write_tokens, reasoning inside completion_tokens.
TOKEN_KINDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
               "reasoning_tokens")
MEASURES = ("requests", "attempts", "errors", "cached", "refused", "prompt_tokens",
            "completion_tokens", *TOKEN_KINDS, "cost_micros", "saved_micros")

# Per --by (None: the totals): the usage_rollup key column, the request-credit column, and
# the usage_events column whose first row per request earns that credit (None: the first row;
# project, agent and day are one value per request outside usage_split_requests).
_ROLLUP_COLUMN = {"project": "project_id", "agent": "agent_id", "agent-type": "agent_type",
                  "model": "model", "provider": "provider", "model-group": "model_group",
                  "deployment": "deployment_id"}
_CREDIT_COLUMN: dict[str | None, str | None] = {
    None: None, "project": None, "agent": None, "day": None, "agent-type": "agent_type",
    "model": "model", "provider": "provider", "model-group": "model_group",
    "deployment": "deployment_id"}
_CREDIT = {by: "req_first" if column is None else
           "req_deployment" if column == "deployment_id" else f"req_{column}"
           for by, column in _CREDIT_COLUMN.items()}
_NULL_BIT = {"agent_type": 1, "deployment_id": 2, "provider": 4, "model": 8}  # see UsageRollup


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
    cache_read_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it (5-minute and 1-hour)
    cache_write_1h_tokens: int = 0  # of cache_write_tokens: at the 1-hour TTL
    reasoning_tokens: int = 0  # of completion_tokens: thinking
    cost_micros: int = 0
    saved_micros: int = 0

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern
    @property
    def cost_usd(self) -> Decimal:
        return micros_to_usd(self.cost_micros)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern
    @property
    def saved_usd(self) -> Decimal:
        return micros_to_usd(self.saved_micros)


def usage_report(engine: Engine, *, by: GroupBy, project: str | None = None,
                 agent: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, session: str | None = None) -> list[ReportRow]:
    """Usage grouped by `by`, filtered in SQL; `since` is inclusive, `until` exclusive.

    Rows come by day for `day`, else by cost (highest first) then key. NULL keys show as "-"
    (for `session`: requests that named no session).
    """
    if by not in GROUP_BY_VALUES:
        raise ValueError(f"unknown group-by {by!r}; use one of {', '.join(GROUP_BY_VALUES)}")
    by_key = _report(engine, by, project, agent, since, until, session)
    rows = [_row(key, values) for key, values in by_key.items()]
    if by == "day":
        return sorted(rows, key=lambda r: r.key)
    return sorted(rows, key=lambda r: (-r.cost_micros, r.key))


def usage_totals(engine: Engine, *, project: str | None = None, agent: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 session: str | None = None) -> ReportRow:
    """One TOTAL row for the same filters (its own query: a request can span several keys)."""
    totals = _report(engine, None, project, agent, since, until, session)
    return _row(TOTAL_KEY, totals.get(None, {}))


# -- where each part of the answer comes from ------------------------------------------------
#
# Whole UTC days come from usage_rollup (kept by a trigger, migration 0003): sums are sums,
# and "requests" (a distinct count) is a sum of request credits. Partial days at the edges of
# --since/--until come from usage_events. Requests whose rows differ in day, project or agent
# (usage_split_requests, rare) are counted from usage_events: their rollup credits are taken
# back out. Every number stays the exact distinct count / integer sum of the ledger rows.


@dataclass(frozen=True, slots=True)
class _Range:
    """[since, until) cut into whole days [first_day, end_day) and partial-day edges."""

    since: datetime | None
    until: datetime | None
    whole_days: bool  # False: [since, until) holds no whole day, it is all edges
    first_day: datetime | None  # None: unbounded
    end_day: datetime | None
    edges: tuple[tuple[datetime, datetime], ...]


def _cut(since: datetime | None, until: datetime | None) -> _Range:
    since = naive_utc(since) if since is not None else None
    until = naive_utc(until) if until is not None else None
    first = _midnight(since, up=True) if since is not None else None
    end = _midnight(until, up=False) if until is not None else None
    if first is not None and end is not None and first >= end:
        assert since is not None and until is not None
        return _Range(since, until, False, None, None, ((since, until),) if since < until else ())
    edges = []
    if since is not None and first is not None and since < first:
        edges.append((since, first))
    if until is not None and end is not None and end < until:
        edges.append((end, until))
    return _Range(since, until, True, first, end, tuple(edges))


def _midnight(moment: datetime, *, up: bool) -> datetime:
    day = datetime.combine(moment.date(), time())
    return day + timedelta(days=1) if up and day < moment else day


def _report(engine: Engine, by: str | None, project: str | None, agent: str | None,
            since: datetime | None, until: datetime | None,
            session: str | None = None) -> dict[object, dict[str, int]]:
    """Key (None for NULL, or for the totals) -> measures, all parts added up."""
    span = _cut(since, until)
    scope = (project, agent)
    dialect = engine.dialect.name
    queries: list[tuple[Select[Any], Callable[[Any], dict[str, int]]]] = []
    if by == "session" or session is not None:
        # The rollup keeps no sessions: one query over usage_events in the window (the
        # session index serves a session's rows); a distinct count is exact as it is.
        queries.append((_session_query(by, dialect, scope, session, span), _measures_of))
    elif span.whole_days:
        queries.append((_rollup_query(by, scope, span), _measures_of))
    if session is None and by != "session":
        if span.edges:
            queries.append((_edges_query(by, dialect, scope, span), _measures_of))
        queries.append((_split_query(by, dialect, scope, span), _split_requests_of))
    totals: dict[object, dict[str, int]] = {}
    with _snapshot(engine) as conn:
        for stmt, values_of in queries:
            for r in conn.execute(stmt):
                into = totals.setdefault(_key_value(r.key), dict.fromkeys(MEASURES, 0))
                for name, value in values_of(r).items():
                    into[name] += value
    # Every ledger row adds to attempts, cached or refused: all zeros is "no rows" (the totals
    # query's one row over an empty range).
    return {key: values for key, values in totals.items() if any(values.values())}


def _rollup_query(by: str | None, scope: tuple[str | None, str | None],
                  span: _Range) -> Select[Any]:
    u = UsageRollup.__table__.c
    key = _rollup_key(by)
    credit = u[_CREDIT[by]]
    stmt = select(key.label("key"), *(func.coalesce(func.sum(u[m]), 0).label(m)
                                      for m in MEASURES if m != "requests"),
                  func.coalesce(func.sum(credit), 0).label("requests"))
    project, agent = scope
    if project is not None:
        stmt = stmt.where(u.project_id == project)
    if agent is not None:
        stmt = stmt.where(u.agent_id == agent)
    if span.first_day is not None:
        stmt = stmt.where(u.day >= span.first_day.date())
    if span.end_day is not None:
        stmt = stmt.where(u.day < span.end_day.date())
    return _grouped(stmt, key, by)


def _session_query(by: str | None, dialect: str, scope: tuple[str | None, str | None],
                   session: str | None, span: _Range) -> Select[Any]:
    """Everything from usage_events: by session, or for one session."""
    t = UsageEvent.__table__
    key = _key_expr(by, dialect) if by else null()
    stmt = select(key.label("key"), *_measures(requests=func.count(distinct(t.c.request_id))))
    if session is not None:
        stmt = stmt.where(t.c.session_id == session)
    return _grouped(_filtered(stmt, *scope, span.since, span.until), key, by)


def _edges_query(by: str | None, dialect: str, scope: tuple[str | None, str | None],
                 span: _Range) -> Select[Any]:
    """Partial days from usage_events; split requests are left to _split_query."""
    t, s = UsageEvent.__table__, UsageSplitRequest.__table__
    key = _key_expr(by, dialect) if by else null()
    regular = case((s.c.request_id.is_(None), t.c.request_id))
    stmt = (select(key.label("key"), *_measures(requests=func.count(distinct(regular))))
            .select_from(t.outerjoin(s, s.c.request_id == t.c.request_id))
            .where(or_(*(and_(t.c.ts >= start, t.c.ts < end) for start, end in span.edges))))
    return _grouped(_filtered(stmt, *scope, None, None), key, by)


def _split_query(by: str | None, dialect: str, scope: tuple[str | None, str | None],
                 span: _Range) -> Select[Any]:
    """Split requests: their distinct count in range, and the credits the rollup gave them."""
    t, s = UsageEvent.__table__, UsageSplitRequest.__table__
    key = _key_expr(by, dialect) if by else null()
    first = t.alias("first")
    column = _CREDIT_COLUMN[by]
    same = [first.c[column].is_not_distinct_from(t.c[column])] if column else []
    first_id = (select(func.min(first.c.id))
                .where(first.c.request_id == t.c.request_id, *same).scalar_subquery())
    in_rollup: list[ColumnElement[bool]] = [t.c.id == first_id]
    if span.first_day is not None:
        in_rollup.append(t.c.ts >= span.first_day)
    if span.end_day is not None:
        in_rollup.append(t.c.ts < span.end_day)
    credited = (func.sum(case((and_(*in_rollup), 1), else_=0)) if span.whole_days
                else literal(0))
    # IN, not a join: SQLite (no statistics) would scan usage_events and probe the few splits.
    stmt = (select(key.label("key"), func.count(distinct(t.c.request_id)).label("in_range"),
                   func.coalesce(credited, 0).label("credited"))
            .where(t.c.request_id.in_(select(s.c.request_id))))
    return _grouped(_filtered(stmt, *scope, span.since, span.until), key, by)


def _grouped(stmt: Select[Any], key: ColumnElement[Any], by: str | None) -> Select[Any]:
    return stmt.group_by(key) if by else stmt


def _rollup_key(by: str | None) -> ColumnElement[Any]:
    u = UsageRollup.__table__.c
    if by is None:
        return null()
    if by == "day":
        return u.day
    column = _ROLLUP_COLUMN[by]
    bit = _NULL_BIT.get(column)
    if bit is None:
        return u[column]
    # '' with the bit set was NULL in usage_events (see UsageRollup).
    return case((u.null_keys.op("&")(bit) != 0, null()), else_=u[column])


def _measures_of(r: Any) -> dict[str, int]:
    return {m: int(getattr(r, m)) for m in MEASURES}


def _split_requests_of(r: Any) -> dict[str, int]:
    return {"requests": int(r.in_range) - int(r.credited)}


def _key_value(key: object) -> object:
    # The rollup's day is a date, usage_events' a 'YYYY-MM-DD' text: one form for both.
    return key.isoformat() if isinstance(key, date) else key


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One connection whose queries all see the same ledger state (one read transaction)."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            else:
                conn.exec_driver_sql("BEGIN")  # pysqlite would not begin one for SELECTs
            yield conn
    except DBAPIError as exc:
        raise ledger_error(exc, engine) from None


def _measures(*, requests: ColumnElement[int]) -> list[ColumnElement[int]]:
    t = UsageEvent.__table__.c

    def count_status(*statuses: str) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((t.status.in_(statuses), 1), else_=0)), 0)

    def total(column: ColumnElement[int]) -> ColumnElement[int]:
        return func.coalesce(func.sum(column), 0)

    return [
        requests.label("requests"),
        count_status(*ATTEMPT_STATUSES).label("attempts"),
        count_status("error").label("errors"),
        count_status("cached").label("cached"),
        count_status("refused").label("refused"),
        total(t.prompt_tokens).label("prompt_tokens"),
        total(t.completion_tokens).label("completion_tokens"),
        *(total(t[kind]).label(kind) for kind in TOKEN_KINDS),
        total(t.cost_micros).label("cost_micros"),
        total(t.saved_micros).label("saved_micros"),
    ]


def _key_expr(by: str, dialect: str) -> ColumnElement[Any]:
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
        "session": t.session_id,
    }[by]
    return column


def _filtered(stmt: Select[Any], project: str | None, agent: str | None,
              since: datetime | None, until: datetime | None) -> Select[Any]:
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
    return moment.astimezone(UTC).replace(tzinfo=None)


def _row(key: object, values: dict[str, int]) -> ReportRow:
    # PostgreSQL's SUM(bigint) is NUMERIC (a Decimal): int() kept it exact.
    return ReportRow(key=NULL_KEY if key is None else str(key), **values)
