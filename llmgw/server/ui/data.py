"""What the dashboard shows, read through the CLI's own functions (`usage_report`,
`usage_totals`, `budgets.statuses`), so a page and `llmgw usage report` agree to the
micro-dollar. Blocking calls: the views run them in a worker thread.

`project` None means every project (admin sessions only; the views decide who may ask)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Engine, case, func, null, select

from llmgw.budgets.rules import TOTAL_START, BudgetPolicy, BudgetStatus, CounterKey, statuses
from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.models import Reservation, UsageEvent, UsageRollup
from llmgw.ledger.report import (
    NULL_KEY,
    TOTAL_KEY,
    GroupBy,
    ReportRow,
    usage_report,
    usage_totals,
)

log = logging.getLogger("llmgw.server.ui.views")

SPEND_DAYS = 30
STACK_BY = {"model-group": "model group", "agent-type": "agent type"}
# The tabs of "who spent what", in order: any `usage report --by` value.
TABLE_BY = {"agent": "agent", "agent-type": "agent type", "model": "model",
            "deployment": "deployment", "model-group": "model group", "provider": "provider",
            "project": "project", "day": "day"}
_T = UsageEvent.__table__.c
# Scopes whose counters add up spend of several projects: a project session sees their
# limits, not their spend (an agent's too, when its id is used in another project).
SHARED_SCOPES = ("global", "agent_type")


@dataclass(frozen=True, slots=True)
class Day:
    day: str  # YYYY-MM-DD (UTC)
    total: ReportRow
    segments: tuple[tuple[str, int], ...]  # (key, cost_micros), largest first
    today: bool


@dataclass(frozen=True, slots=True)
class Spend:
    days: tuple[Day, ...]
    keys: tuple[tuple[str, int], ...]  # every stack key with its 30-day cost, largest first
    period: ReportRow  # the 30 days' TOTAL row
    today: ReportRow  # since midnight UTC
    first_day: datetime


def spend(engine: Engine, project: str | None, stack_by: GroupBy, now: datetime) -> Spend:
    """The last SPEND_DAYS UTC days, today so far included: each day's row of `usage report
    --by day`, the period's TOTAL row, and each day's cost split by `stack_by`.

    Today's split is `usage report --by stack_by --since today`. The past days' split is one
    query over the rollup, checked against the report functions (per day against `--by
    day`, per key against `--by stack_by` over those days); if they ever disagreed, each
    day would be asked of `usage_report` on its own (exact too, and much slower)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=SPEND_DAYS - 1)
    today_label = today.date().isoformat()
    per_day = {r.key: r for r in usage_report(engine, by="day", project=project, since=first)}
    past = {r.key: r.cost_micros for r in usage_report(
        engine, by=stack_by, project=project, since=first, until=today) if r.cost_micros}
    cells = _day_key_costs(engine, project, stack_by, first, today)
    today_cells = _report_cells(engine, project, stack_by, today, None)
    period = usage_totals(engine, project=project, since=first)
    if not _agrees(cells, {d: r for d, r in per_day.items() if d != today_label}, past):
        log.warning("the rollup's per-day split disagrees with usage_report; asking it per day")
        cells = {}
        for label in per_day:
            start = datetime.fromisoformat(label)
            if start < today:
                cells.update(_report_cells(engine, project, stack_by, start,
                                           start + timedelta(days=1)))
    cells.update(today_cells)
    per_key: dict[str, int] = {}
    for (_, key), cost in cells.items():
        per_key[key] = per_key.get(key, 0) + cost
    days: list[Day] = []
    for i in range(SPEND_DAYS):
        start = first + timedelta(days=i)
        label = start.date().isoformat()
        segments = sorted(((k, c) for (d, k), c in cells.items() if d == label),
                          key=lambda kc: (-per_key[kc[0]], kc[0]))
        days.append(Day(label, per_day.get(label, ReportRow(key=label)), tuple(segments),
                        start == today))
    return Spend(tuple(days), tuple(sorted(per_key.items(), key=lambda kv: (-kv[1], kv[0]))),
                 period, per_day.get(today_label, ReportRow(key=TOTAL_KEY)), first)


def _report_cells(engine: Engine, project: str | None, stack_by: GroupBy, since: datetime,
                  until: datetime | None) -> dict[tuple[str, str], int]:
    label = since.date().isoformat()
    return {(label, r.key): r.cost_micros for r in usage_report(
        engine, by=stack_by, project=project, since=since, until=until) if r.cost_micros}


def _day_key_costs(engine: Engine, project: str | None, stack_by: str, first: datetime,
                   end: datetime) -> dict[tuple[str, str], int]:
    """(day, key) -> cost from usage_rollup, whose sums are the ledger's sums per UTC day."""
    u = UsageRollup.__table__.c
    key = (u.model_group if stack_by == "model-group" else
           case((u.null_keys.op("&")(1) != 0, null()), else_=u.agent_type))  # see UsageRollup
    stmt = (select(u.day, key.label("key"), func.sum(u.cost_micros).label("cost"))
            .where(u.day >= first.date(), u.day < end.date()).group_by(u.day, key))
    if project is not None:
        stmt = stmt.where(u.project_id == project)
    with engine.connect() as conn:
        out = {}
        for day, k, cost in conn.execute(stmt):
            if cost:
                label = day.isoformat() if isinstance(day, date) else str(day)[:10]
                out[(label, NULL_KEY if k is None else str(k))] = int(cost)
        return out


def _agrees(cells: dict[tuple[str, str], int], per_day: dict[str, ReportRow],
            per_key: dict[str, int]) -> bool:
    days: dict[str, int] = {}
    keys: dict[str, int] = {}
    for (day, key), cost in cells.items():
        days[day] = days.get(day, 0) + cost
        keys[key] = keys.get(key, 0) + cost
    return (days == {d: r.cost_micros for d, r in per_day.items() if r.cost_micros}
            and keys == per_key)


@dataclass(frozen=True, slots=True)
class Table:
    rows: list[ReportRow]
    total: ReportRow
    shown: int  # rows before the limit cut


def who_spent(engine: Engine, *, by: GroupBy, project: str | None, agent: str | None,
              since: datetime | None, until: datetime | None, sort: str | None,
              descending: bool, limit: int) -> Table:
    filters: dict[str, Any] = {"project": project, "agent": agent, "since": since,
                               "until": until}
    rows = usage_report(engine, by=by, **filters)
    total = usage_totals(engine, **filters)
    if sort is not None:
        rows = sorted(rows, key=lambda r: (getattr(r, sort), r.key), reverse=descending)
    return Table(rows[:limit], total, len(rows))


def table_rows(engine: Engine, *, by: GroupBy, project: str | None, agent: str | None,
               since: datetime | None, until: datetime | None) -> list[ReportRow]:
    """The rows `llmgw usage report --format csv` prints for the same filters."""
    return usage_report(engine, by=by, project=project, agent=agent, since=since, until=until)


def projects(engine: Engine) -> list[str]:
    return sorted(r.key for r in usage_report(engine, by="project") if r.key != NULL_KEY)


# -- most expensive runs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One agent run (a session id) in the report's window, with its cap if one applies."""

    usage: ReportRow
    first: datetime
    last: datetime
    cap_micros: int | None  # None: no `budgets.sessions` cap applies to this run
    spent_micros: int  # the run's whole spend on its cap's counter (not only this window)
    reserved_micros: int


@dataclass(frozen=True, slots=True)
class Runs:
    rows: list[Run]
    shown: int  # runs before the limit cut


def runs(engine: Engine, policy: BudgetPolicy, store: BudgetStore, *, project: str | None,
         since: datetime | None, until: datetime | None, limit: int) -> Runs:
    """Sessions by cost over the window (`usage report --by session`'s rows, costliest first;
    rows without a session left out), each with its cap and what its counter holds."""
    found = [r for r in usage_report(engine, by="session", project=project, since=since,
                                     until=until) if r.key != NULL_KEY]
    found.sort(key=lambda r: (-r.cost_micros, r.key))
    top = found[:limit]
    if not top:
        return Runs([], len(found))
    ids = [r.key for r in top]
    stmt = (select(_T.session_id, func.min(_T.ts), func.max(_T.ts))
            .where(_T.session_id.in_(ids)).group_by(_T.session_id))
    if project is not None:
        stmt = stmt.where(_T.project_id == project)
    if since is not None:
        stmt = stmt.where(_T.ts >= since)
    if until is not None:
        stmt = stmt.where(_T.ts < until)
    with engine.connect() as conn:
        times = {r[0]: (r[1], r[2]) for r in conn.execute(stmt)}
    rules = {(r.scope, r.scope_id, r.period): r for r in store.rules()}
    caps = {sid: policy.session_limit(sid, rules) for sid in ids}
    keys = {sid: CounterKey("session", sid, "total", TOTAL_START) for sid, cap in caps.items()
            if cap is not None}
    counters = store.counters(list(keys.values()))
    out = []
    for r in top:
        cap = caps[r.key]
        spent, held = counters.get(keys[r.key], (0, 0)) if cap is not None else (0, 0)
        first, last = times[r.key]
        out.append(Run(r, first, last, cap.limit_micros if cap is not None else None, spent,
                       held))
    return Runs(out, len(found))


# -- budgets -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    status: BudgetStatus
    window_start: datetime | None
    spend_visible: bool
    refusals: int | None  # refused rows in the window (None: not shown to this session)


def budgets(policy: BudgetPolicy, store: BudgetStore, engine: Engine, project: str | None,
            now: datetime) -> list[Budget]:
    """`llmgw budgets status`'s rows that apply to `project` (None: all): its project
    budgets, its agents' and every shared limit (global, agent type, per request)."""
    items = statuses(policy, store.rules(), store.all_counters(), now)
    agents: set[str] = set()
    types: set[str] = set()
    month = policy.period_start(now, "month")
    if project is not None:
        agents = {r.key for r in usage_report(engine, by="agent", project=project, since=month)}
        types = {r.key for r in usage_report(engine, by="agent-type", project=project,
                                             since=month)}
    refusals = _Refusals(engine, project)
    out = []
    for s in items:
        if project is not None:
            applies = (s.scope in ("global", "request")
                       or (s.scope == "project" and s.scope_id == project)
                       or (s.scope == "agent" and s.scope_id in agents)
                       or (s.scope == "agent_type" and s.scope_id in types))
            if not applies:
                continue
        start = policy.period_start(now, s.period) if s.period in ("day", "month") else None
        visible = project is None or (s.scope not in SHARED_SCOPES and (
            s.scope != "agent" or _agent_only_in(engine, s.scope_id, project, month)))
        out.append(Budget(s, start, visible,
                          refusals.of(s, start) if start is not None and visible else None))
    return out


def _agent_only_in(engine: Engine, agent: str, project: str, since: datetime) -> bool:
    """Whether an agent's counter holds this project's spend only: an agent id used in two
    projects shares one counter, whose spend a project session must not see."""
    return {r.key for r in usage_report(engine, by="project", agent=agent, since=since)} <= {
        project}


class _Refusals:
    """Refused rows per budget in its window: one report per (scope, window start), however
    many budgets there are."""

    _BY: ClassVar[dict[str, GroupBy]] = {"project": "project", "agent": "agent",
                                        "agent_type": "agent-type"}

    def __init__(self, engine: Engine, project: str | None) -> None:
        self.engine = engine
        self.project = project
        self._seen: dict[tuple[str, datetime], dict[str, int]] = {}

    def of(self, s: BudgetStatus, since: datetime) -> int:
        by = self._BY.get(s.scope)
        found = self._seen.get((s.scope, since))
        if found is None:
            if by is None:  # global: everything this session may see
                total = usage_totals(self.engine, project=self.project, since=since)
                found = {s.scope_id: total.refused}
            else:
                found = {r.key: r.refused for r in usage_report(
                    self.engine, by=by, project=self.project, since=since)}
            self._seen[(s.scope, since)] = found
        return found.get(s.scope_id, 0)


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    ts: datetime
    model_group: str
    deployment_id: str | None
    provider: str | None
    model: str | None
    status: str
    error_class: str | None
    error_message: str | None
    latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int  # of prompt_tokens
    cache_write_tokens: int  # of prompt_tokens
    cache_write_1h_tokens: int  # of cache_write_tokens
    reasoning_tokens: int  # of completion_tokens
    cost_micros: int
    saved_micros: int
    stream: bool
    rates: dict[str, str] | None = None  # the per-token USD rates it was priced at (0015)


@dataclass(frozen=True, slots=True)
class Story:
    request_id: str
    project_id: str
    agent_id: str
    agent_type: str | None
    attempts: list[Attempt]
    route: str | None  # why this group: metadata llmgw.route
    requested_group: str | None
    budget: dict[str, Any] | None  # the limit that refused it
    cached: bool
    reservation: dict[str, Any] | None
    cost_micros: int = field(default=0)
    saved_micros: int = field(default=0)


def story(engine: Engine, request_id: str, project: str | None) -> Story | None:
    """Every ledger row of one request, oldest attempt first; None when there is none that
    `project` may see (another project's request is "not found", like an unknown one)."""
    with engine.connect() as conn:
        rows = [r._mapping for r in conn.execute(
            select(UsageEvent.__table__).where(_T.request_id == request_id)
            .order_by(_T.attempt, _T.id))]
        hold = conn.execute(select(Reservation.__table__)
                            .where(Reservation.__table__.c.request_id == request_id)).first()
    if not rows or (project is not None and any(r["project_id"] != project for r in rows)):
        return None
    meta: dict[str, Any] = (rows[0]["metadata"] or {}).get("llmgw") or {}
    if not isinstance(meta, dict):
        meta = {}
    attempts = [Attempt(r["attempt"], r["ts"], r["model_group"], r["deployment_id"],
                        r["provider"], r["model"], r["status"], r["error_class"],
                        (r["error_message"] or "")[:500] or None, r["latency_ms"],
                        r["prompt_tokens"], r["completion_tokens"], r["cache_read_tokens"],
                        r["cache_write_tokens"], r["cache_write_1h_tokens"], r["reasoning_tokens"],
                        r["cost_micros"], r["saved_micros"], bool(r["stream"]), r["rates"])
                for r in rows]
    reservation = None
    if hold is not None:
        h = hold._mapping
        reservation = {"state": h["state"], "amount_micros": h["amount_micros"],
                       "settled_micros": h["settled_micros"], "created_at": h["created_at"]}
    first = rows[0]
    budget = meta.get("budget") if isinstance(meta.get("budget"), dict) else None
    return Story(request_id, first["project_id"], first["agent_id"], first["agent_type"],
                 attempts, meta.get("route"), meta.get("requested_group"), budget,
                 any(a.status == "cached" for a in attempts), reservation,
                 sum(a.cost_micros for a in attempts), sum(a.saved_micros for a in attempts))


@dataclass(frozen=True, slots=True)
class Recent:
    request_id: str
    ts: datetime
    project_id: str
    agent_id: str
    model_group: str
    status: str
    cost_micros: int
    session_id: str | None = None


def recent(engine: Engine, project: str | None, *, limit: int, status: str | None = None,
           since: datetime | None = None, session: str | None = None) -> list[Recent]:
    """The latest ledger rows (one per attempt), newest first, for links to their story;
    `session`: one agent run's only."""
    stmt = select(_T.request_id, _T.ts, _T.project_id, _T.agent_id, _T.model_group, _T.status,
                  _T.cost_micros, _T.session_id)
    if project is not None:
        stmt = stmt.where(_T.project_id == project)
    if session is not None:
        stmt = stmt.where(_T.session_id == session)
    if status is not None:
        stmt = stmt.where(_T.status == status)
    if since is not None:
        stmt = stmt.where(_T.ts >= since)
    with engine.connect() as conn:
        return [Recent(*r) for r in conn.execute(stmt.order_by(_T.ts.desc(), _T.id.desc())
                                                 .limit(limit))]
