"""Budget rules: which limits apply to a request, and where their windows start and end.

Pure policy, no I/O: `llmgw.ledger.budgets` does the reserve / settle / release
transactions. A `"*"` entry in the config applies to every id that has none of its own, with
its own counter per id (each project gets the default daily limit, not one shared pot).
Rules set with `llmgw budgets set` (the `budgets` table) win over the config file.

A session (one agent run) has one window for its whole life, period `total`: its counter's
window start is the fixed `TOTAL_START`, so it never resets and is held exactly like the
others (the same counters and conditional updates on every database).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from llmgw.budgets.pricing import to_micros
from llmgw.config.models import BudgetLimits, BudgetSettings, SessionLimits

SCOPES = ("global", "project", "agent", "agent_type")
PERIODS = ("day", "month")
ANY = "*"
SESSION = "session"
TOTAL = "total"  # a session's one window: the whole run
TOTAL_START = datetime(2000, 1, 1)  # every `total` counter's window start (naive UTC)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit on one counter: `scope`/`scope_id` in windows of `period`."""

    scope: str
    scope_id: str
    period: str  # day | month | total | request
    limit_micros: int
    warn_ratio: float
    downgrade_to: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A limit as stored in the `budgets` table (scope_id may be `"*"`)."""

    scope: str
    scope_id: str
    period: str
    limit_micros: int
    warn_ratio: float


@dataclass(frozen=True, slots=True)
class CounterKey:
    scope: str
    scope_id: str
    period: str
    period_start: datetime  # naive UTC
    # As the ledger's JSON parameters list it; built once (a request lists its keys many times).
    listed: tuple[str, str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "listed", (self.scope, self.scope_id, self.period,
                                            self.period_start.isoformat()))

    def as_list(self) -> list[str]:
        return list(self.listed)

    @classmethod
    def from_list(cls, v: list[str]) -> CounterKey:
        return cls(v[0], v[1], v[2], datetime.fromisoformat(v[3]))


class BudgetPolicy:
    """The applicable limits for (agent, agent type, project), config merged with DB rules."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self._config: dict[tuple[str, str], BudgetLimits] = {}
        self._windows: dict[str, tuple[datetime, datetime]] = {}  # period -> [start, end)
        if settings.global_:
            self._config[("global", ANY)] = settings.global_
        for scope, table in (("project", settings.projects), ("agent", settings.agents),
                             ("agent_type", settings.agent_types)):
            for scope_id, limits in table.items():
                self._config[(scope, scope_id)] = limits
        self._sessions: dict[str, SessionLimits] = dict(settings.sessions)

    def config_limits(self) -> list[tuple[str, str, BudgetLimits]]:
        """(scope, scope_id, limits) of every day/month entry in the config file, sorted."""
        return [(scope, sid, cfg) for (scope, sid), cfg in sorted(self._config.items())]

    def session_limits(self) -> list[tuple[str, SessionLimits]]:
        """(session id or `"*"`, limits) of every `budgets.sessions` entry, sorted."""
        return sorted(self._sessions.items())

    @property
    def configured(self) -> bool:
        """Whether the config file sets any limit (DB rules may add more)."""
        return (bool(self._config) or bool(self._sessions)
                or self.settings.per_request_usd is not None)

    def request_cap(self, rules: list[Rule]) -> Limit | None:
        """The per-request cap: a DB rule wins over `per_request_usd`."""
        for r in rules:
            if r.scope == "request":
                return Limit("request", ANY, "request", r.limit_micros, r.warn_ratio)
        if self.settings.per_request_usd is None:
            return None
        return Limit("request", ANY, "request", to_micros(self.settings.per_request_usd),
                     self.settings.warn_at)

    def limits(self, *, agent_id: str, agent_type: str | None, project_id: str,
               rules: list[Rule], session_id: str | None = None) -> list[Limit]:
        """Every day/month limit that applies to one request (without the request cap), and
        its session's `total` when it names one."""
        ids = {"global": ANY, "project": project_id, "agent": agent_id, "agent_type": agent_type}
        db = {(r.scope, r.scope_id, r.period): r for r in rules}
        out: list[Limit] = []
        for scope in SCOPES:
            scope_id = ids[scope]
            if scope_id is None:
                continue
            cfg = self._config.get((scope, scope_id)) or self._config.get((scope, ANY))
            for period in PERIODS:
                rule = db.get((scope, scope_id, period)) or db.get((scope, ANY, period))
                if rule is not None:
                    out.append(Limit(scope, scope_id, period, rule.limit_micros, rule.warn_ratio,
                                     cfg.downgrade_to if cfg else None))
                    continue
                usd = getattr(cfg, "daily_usd" if period == "day" else "monthly_usd", None) \
                    if cfg else None
                if usd is not None:
                    warn = cfg.warn_at if cfg and cfg.warn_at else self.settings.warn_at
                    out.append(Limit(scope, scope_id, period, to_micros(usd), warn,
                                     cfg.downgrade_to if cfg else None))
        if session_id is not None:
            session = self.session_limit(session_id, db)
            if session is not None:
                out.append(session)
        return out

    def session_limit(self, session_id: str,
                      db: dict[tuple[str, str, str], Rule]) -> Limit | None:
        """The run's cap: a DB rule (its own, then `"*"`) wins over the config file's."""
        rule = db.get((SESSION, session_id, TOTAL)) or db.get((SESSION, ANY, TOTAL))
        if rule is not None:
            return Limit(SESSION, session_id, TOTAL, rule.limit_micros, rule.warn_ratio)
        cfg = self._sessions.get(session_id) or self._sessions.get(ANY)
        if cfg is None:
            return None
        return Limit(SESSION, session_id, TOTAL, to_micros(cfg.total_usd),
                     cfg.warn_at or self.settings.warn_at)

    def rule_keys(self, *, agent_id: str, agent_type: str | None, project_id: str,
                  session_id: str | None = None) -> list[tuple[str, str]]:
        """The (scope, scope_id) pairs whose DB rules can apply to such a request."""
        keys = [("request", ANY), ("global", ANY), ("project", project_id), ("project", ANY),
                ("agent", agent_id), ("agent", ANY)]
        if agent_type:
            keys += [("agent_type", agent_type), ("agent_type", ANY)]
        if session_id:
            keys += [(SESSION, session_id), (SESSION, ANY)]
        return keys

    def downgrade_group(self, agent_type: str | None) -> str | None:
        """The cheaper group an agent type moves to past its warn ratio, if configured."""
        if not agent_type:
            return None
        cfg = self.settings.agent_types.get(agent_type)
        return cfg.downgrade_to if cfg else None

    # -- windows -------------------------------------------------------------------------

    def period_start(self, now: datetime, period: str) -> datetime:
        """Start of the day or month containing `now` (naive UTC), in the budget timezone;
        `TOTAL_START` for a session's `total`, whenever `now` is."""
        if period == TOTAL:
            return TOTAL_START
        window = self._windows.get(period)  # the last one asked for: the current one
        if window is not None and now.tzinfo is None and window[0] <= now < window[1]:
            return window[0]
        start = self._period_start(now, period)
        self._windows[period] = (start, self.period_end(start, period) or datetime.max)
        return start

    def _period_start(self, now: datetime, period: str) -> datetime:
        local = now.replace(tzinfo=UTC).astimezone(self.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "month":
            start = start.replace(day=1)
        return start.astimezone(UTC).replace(tzinfo=None)

    def period_end(self, start: datetime, period: str) -> datetime | None:
        """When the window that starts at `start` resets (naive UTC); None: never (`total`)."""
        if period == TOTAL:
            return None
        local = start.replace(tzinfo=UTC).astimezone(self.tz)
        if period == "day":
            nxt = (local + timedelta(days=1, hours=2)).replace(hour=0)  # +2h: DST-safe
        else:
            days = calendar.monthrange(local.year, local.month)[1]
            nxt = (local + timedelta(days=days, hours=2)).replace(day=1, hour=0)
        nxt = nxt.replace(tzinfo=None).replace(tzinfo=self.tz)
        return nxt.astimezone(UTC).replace(tzinfo=None)

    def counter_key(self, limit: Limit, now: datetime) -> CounterKey:
        return CounterKey(limit.scope, limit.scope_id, limit.period,
                          self.period_start(now, limit.period))


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget in its current window, for `llmgw budgets status`."""

    scope: str
    scope_id: str
    period: str
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    warn_ratio: float
    resets_at: datetime | None

    @property
    def used_ratio(self) -> float:
        return (self.spent_micros + self.reserved_micros) / self.limit_micros \
            if self.limit_micros else 1.0


def limit_for(policy: BudgetPolicy, scope: str, scope_id: str, period: str,
              rules: list[Rule]) -> Limit | None:
    """The limit a counter of (scope, scope_id, period) is held against, if any."""
    if scope == SESSION:
        db = {(r.scope, r.scope_id, r.period): r for r in rules}
        limit = policy.session_limit(scope_id, db)
        return limit if limit is not None and period == TOTAL else None
    own = scope in ("agent", "agent_type")  # else the id is a project's
    for limit in policy.limits(agent_id=scope_id if scope == "agent" else "-",
                               agent_type=scope_id if scope == "agent_type" else None,
                               project_id="-" if own else scope_id, rules=rules):
        if (limit.scope, limit.scope_id, limit.period) == (scope, scope_id, period):
            return limit
    return None


class CounterRow(Protocol):
    """A `budget_counters` row, as `BudgetStore.all_counters` reads it."""

    @property
    def scope(self) -> str: ...
    @property
    def scope_id(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def period_start(self) -> datetime: ...
    @property
    def spent_micros(self) -> int: ...
    @property
    def reserved_micros(self) -> int: ...


def statuses(policy: BudgetPolicy, rules: list[Rule], counters: Sequence[CounterRow],
             now: datetime, *, session: str | None = None) -> list[BudgetStatus]:
    """Every budget that has a counter in its current window or a limit of its own. Runs are
    many: a session's budget is listed only when `session` names it."""
    seen: dict[tuple[str, str, str], BudgetStatus] = {}
    for c in counters:
        scope, scope_id, period = c.scope, c.scope_id, c.period
        if scope == SESSION and scope_id != session:
            continue
        if c.period_start != policy.period_start(now, period):
            continue
        limit = limit_for(policy, scope, scope_id, period, rules)
        if limit is None:
            continue
        seen[(scope, scope_id, period)] = BudgetStatus(
            scope, scope_id, period, limit.limit_micros, c.spent_micros,
            c.reserved_micros, limit.warn_ratio, policy.period_end(c.period_start, period))
    named = [(r.scope, r.scope_id, r.period) for r in rules if r.scope_id != ANY]
    named += [(scope, sid, period) for scope, sid, cfg in policy.config_limits()
              if sid != ANY for period in PERIODS
              if getattr(cfg, "daily_usd" if period == "day" else "monthly_usd") is not None]
    if session is not None:
        named.append((SESSION, session, TOTAL))
    for scope, scope_id, period in named:
        if (scope, scope_id, period) in seen or period == "request" or (
                scope == SESSION and scope_id != session):
            continue
        limit = limit_for(policy, scope, scope_id, period, rules)
        if limit is not None:
            start = policy.period_start(now, period)
            seen[(scope, scope_id, period)] = BudgetStatus(
                scope, scope_id, period, limit.limit_micros, 0, 0, limit.warn_ratio,
                policy.period_end(start, period))
    cap = policy.request_cap(rules)
    if cap is not None:
        seen[("request", ANY, "request")] = BudgetStatus("request", ANY, "request",
                                                         cap.limit_micros, 0, 0, cap.warn_ratio,
                                                         None)
    order = {s: i for i, s in enumerate(("request", *SCOPES, SESSION))}
    return sorted(seen.values(), key=lambda s: (order.get(s.scope, 9), s.scope_id, s.period))
