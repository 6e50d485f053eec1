"""Budget transactions: reserve before the call, settle or release after, reconcile crashes.

Reserve is one conditional `UPDATE ... SET reserved = reserved + :x WHERE spent + reserved
+ :x <= :limit` per counter, in one transaction, counters in a fixed order: exact under
concurrency on SQLite (one writer) and on PostgreSQL across processes (row locks, no
deadlock). Settle moves the hold to spend in the same transaction that writes the request's
ledger rows, so counters and ledger always agree. Checks read counter rows, never the ledger.

`BudgetStore` holds what both databases share (rules, reads, reconcile) and hands reserve
and settle to its database's `BudgetDatabase` (the interface below); each rule has one home
per database:
- `sqlite.py`: SQLite's reserve and settle as driver statements;
- `postgres.py`: calls of PostgreSQL's functions (`llmgw/ledger/migrations/sql/`:
  `llmgw_reserve_many`, which runs `llmgw_reserve` per request, and `llmgw_settle_many`);
  `pg_async` sends the calls of many requests as one statement: one round trip each).
Every writer locks reservations, then counters (one global order), then rollup rows, so none
waits for another in a cycle. `tests/ledger/test_budget_steps.py` holds both databases to
the same behaviour, `test_budget_batches.py` the batches to the lone calls'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, and_, or_, select, tuple_, update

from llmgw.budgets.rules import CounterKey, Limit, Rule
from llmgw.ledger.models import BudgetCounter, BudgetRule, Reservation, UsageEvent
from llmgw.ledger.ops import Op, run_sync

_C = BudgetCounter.__table__.c
_R = Reservation.__table__.c
_B = BudgetRule.__table__.c


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation the gateway holds for one request."""

    request_id: str
    amount_micros: int
    counters: tuple[tuple[CounterKey, Limit], ...]
    # SQLite: each counter's key as driver parameters, made once at reserve for the settle,
    # and each counter's rowid (counters are never deleted: the settle finds them by it)
    rows: tuple[tuple[Any, ...], ...] = field(default=(), repr=False, compare=False)
    rowids: tuple[int, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first counter that had no room."""

    limit: Limit
    spent_micros: int
    reserved_micros: int
    period_start: datetime | None


@dataclass
class Crossing:
    """A counter whose spend crossed its warn ratio for the first time in its window."""

    key: CounterKey
    limit: Limit
    spent_micros: int


@dataclass
class SettleResult:
    crossings: list[Crossing] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Counters:
    """A reserve's counters, worked out once per `keys` object (`BudgetStore._counters`)."""

    keys: Sequence[CounterKey]
    limits: Sequence[Limit]
    pairs: tuple[tuple[CounterKey, Limit], ...]  # in lock order
    caps: tuple[int, ...]  # each counter's limit, in that order
    rows: tuple[tuple[Any, ...], ...]  # SQLite: each key as driver parameters
    listed: Any  # SQLite: `reservations.counters` as the driver takes it


class RefusedError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


class BudgetDatabase(Protocol):
    """What each database does its own way: `sqlite.SqliteBudgets`, `postgres.PostgresBudgets`."""

    def set_rule(self, rule: Rule, now: datetime) -> None:
        """Insert or replace the rule of (scope, scope_id, period)."""

    def driver_rows(self, pairs: tuple[tuple[CounterKey, Limit], ...]
                    ) -> tuple[tuple[tuple[Any, ...], ...], Any]:
        """(each key as driver parameters, the counters list as the driver takes it) for a
        database that sends driver statements, else ((), None). Kept in `Counters`."""

    def reserve_op(self, counters: Counters, *, request_id: str, amount_micros: int,
                   created_at: datetime, agent_id: str, agent_type: str | None,
                   project_id: str, model_group: str) -> Op[Hold]:
        """A reserve on `counters` (in lock order) as an `Op`."""

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str) -> Op[SettleResult]:
        """A settle (or, with `state="released"`, a release) of `hold` as an `Op`."""


class BudgetStore:
    """SQL for budgets; every method is one transaction on the ledger database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.db = database_for(engine)
        self._insert_usage = UsageEvent.__table__.insert()
        self._prepared: dict[int, Counters] = {}  # id(keys) -> its counters (`_counters`)

    # -- rules ---------------------------------------------------------------------------

    def rules(self, keys: list[tuple[str, str]] | None = None) -> list[Rule]:
        stmt = select(_B.scope, _B.scope_id, _B.period, _B.limit_micros, _B.warn_ratio)
        if keys is not None:
            stmt = stmt.where(tuple_(_B.scope, _B.scope_id).in_(keys))
        with self.engine.connect() as conn:
            return [Rule(*r) for r in conn.execute(stmt.order_by(_B.scope, _B.scope_id, _B.period))]

    def set_rule(self, rule: Rule, now: datetime) -> None:
        self.db.set_rule(rule, now)

    def delete_rule(self, scope: str, scope_id: str, period: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(BudgetRule.__table__.delete().where(
                _B.scope == scope, _B.scope_id == scope_id, _B.period == period)).rowcount == 1

    # -- reserve / settle ----------------------------------------------------------------

    def reserve_op(self, *, request_id: str, amount_micros: int, limits: Sequence[Limit],
                   keys: Sequence[CounterKey], created_at: datetime, agent_id: str,
                   agent_type: str | None, project_id: str, model_group: str) -> Op[Hold]:
        """`reserve` as an `Op`, for `LedgerStore.transact`."""
        return self.db.reserve_op(
            self._counters(keys, limits), request_id=request_id, amount_micros=amount_micros,
            created_at=created_at, agent_id=agent_id, agent_type=agent_type,
            project_id=project_id, model_group=model_group)

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str = "settled") -> Op[SettleResult]:
        """`settle` as an `Op`, for `LedgerStore.transact`."""
        return self.db.settle_op(hold, spent_micros=spent_micros, rows=rows, state=state)

    def reserve(self, **kwargs: Any) -> Hold:
        """Hold `amount_micros` on every counter, or raise `RefusedError` holding nothing."""
        return run_sync(self.engine, self.reserve_op(**kwargs))

    def settle(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
               state: str = "settled") -> SettleResult:
        """Turn the hold into `spent_micros` of spend and write the request's ledger rows,
        in one transaction. Idempotent: a hold that is no longer open moves no counter."""
        return run_sync(self.engine, self.settle_op(hold, spent_micros=spent_micros, rows=rows,
                                                    state=state))

    def _counters(self, keys: Sequence[CounterKey], limits: Sequence[Limit]) -> Counters:
        """The counters of a reserve in lock order, with their driver parameters. The planner
        hands every request of an agent the same `keys` and `limits` objects while their
        windows last, so they are worked out once per agent and window, not per request."""
        found = self._prepared.get(id(keys))
        if found is not None and found.keys is keys and found.limits is limits:
            return found
        pairs = tuple(sorted(zip(keys, limits, strict=True), key=lambda p: p[0].listed))
        rows, listed = self.db.driver_rows(pairs)
        counters = Counters(keys, limits, pairs, tuple(limit.limit_micros for _, limit in pairs),
                            rows, listed)
        if len(self._prepared) >= 10_000:  # old windows' and agents': forget them all
            self._prepared.clear()
        self._prepared[id(keys)] = counters  # holds `keys`: its id is not reused meanwhile
        return counters

    # -- reads ---------------------------------------------------------------------------

    def counters(self, keys: Sequence[CounterKey]) -> dict[CounterKey, tuple[int, int]]:
        """(spent, reserved) of each existing counter."""
        if not keys:
            return {}
        cond = or_(*(_key(k) for k in keys))
        with self.engine.connect() as conn:
            rows = conn.execute(select(_C.scope, _C.scope_id, _C.period, _C.period_start,
                                       _C.spent_micros, _C.reserved_micros).where(cond)).all()
        return {CounterKey(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in rows}

    def all_counters(self, since: datetime | None = None) -> list[Any]:
        stmt = select(BudgetCounter.__table__)
        if since is not None:
            stmt = stmt.where(_C.period_start >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt.order_by(_C.scope, _C.scope_id, _C.period,
                                                   _C.period_start)))

    def open_reservations(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Reservation.__table__).where(_R.state == "open")))

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, *, now: datetime, older_than: timedelta) -> list[str]:
        """Settle reservations a crash left open, at their reserved amount, each with a ledger
        row so counters and ledger still agree. Safe to run twice or from two processes. If a
        hold's request was in fact still running, its settle later takes the hold back and
        books the real amount and rows instead (SQLite `_take_back`; PostgreSQL
        `llmgw_take_back`)."""
        cutoff = now - older_than
        with self.engine.connect() as conn:
            stale = conn.execute(select(Reservation.__table__).where(
                _R.state == "open", _R.created_at <= cutoff)).all()
        done: list[str] = []
        for r in stale:
            with self.engine.begin() as conn:
                if conn.execute(update(Reservation.__table__)
                                .where(_R.request_id == r.request_id, _R.state == "open")
                                .values(state="reconciled", settled_micros=r.amount_micros)
                                ).rowcount != 1:
                    continue  # another process got there first
                for raw in r.counters:
                    key = CounterKey.from_list(raw)
                    conn.execute(update(BudgetCounter.__table__).where(_key(key)).values(
                        reserved_micros=_C.reserved_micros - r.amount_micros,
                        spent_micros=_C.spent_micros + r.amount_micros))
                attempt = conn.execute(select(UsageEvent.__table__.c.attempt).where(
                    UsageEvent.__table__.c.request_id == r.request_id).order_by(
                    UsageEvent.__table__.c.attempt.desc()).limit(1)).scalar() or 0
                conn.execute(self._insert_usage, [dict(
                    request_id=r.request_id, attempt=attempt + 1, ts=r.created_at,
                    agent_id=r.agent_id, agent_type=r.agent_type, project_id=r.project_id,
                    model_group=r.model_group, deployment_id=None, provider=None, model=None,
                    status="error", error_class="Reconciled",
                    error_message="reservation left open by a stopped gateway; settled at its "
                                  "reserved amount so no spend is lost",
                    prompt_tokens=0, completion_tokens=0, cache_read_tokens=0,
                    cost_micros=r.amount_micros, saved_micros=0, latency_ms=None, stream=False,
                    metadata={"llmgw": {"reconciled_at": now.isoformat()}})])
            done.append(r.request_id)
        return done


def database_for(engine: Engine) -> BudgetDatabase:
    """The engine's database's reserve and settle, by SQLAlchemy dialect name."""
    if engine.dialect.name == "postgresql":
        from llmgw.ledger.budgets.postgres import PostgresBudgets

        return PostgresBudgets(engine)
    if engine.dialect.name == "sqlite":
        from llmgw.ledger.budgets.sqlite import SqliteBudgets

        return SqliteBudgets(engine)
    raise ValueError(f"no budget store for the {engine.dialect.name!r} database "
                     "(SQLite or PostgreSQL)")


def rule_values(rule: Rule, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `budgets` row of `rule`, what an existing row of its key takes from it)."""
    values = dict(scope=rule.scope, scope_id=rule.scope_id, period=rule.period,
                  limit_micros=rule.limit_micros, warn_ratio=rule.warn_ratio, updated_at=now)
    return values, dict(limit_micros=rule.limit_micros, warn_ratio=rule.warn_ratio,
                        updated_at=now)


def crossed(hold: Hold, row: Any) -> SettleResult:
    """The crossings a settle reports: (counter positions from 1, each one's spend)."""
    pairs = [hold.counters[i - 1] for i in row[0]]
    return SettleResult([Crossing(k, limit, s) for (k, limit), s in zip(pairs, row[1], strict=True)])


def thresholds(hold: Hold) -> list[int]:
    """Each counter's warning threshold, in the hold's order."""
    return [int(limit.limit_micros * limit.warn_ratio) for _, limit in hold.counters]


def _key(key: CounterKey) -> Any:
    return and_(_C.scope == key.scope, _C.scope_id == key.scope_id, _C.period == key.period,
                _C.period_start == key.period_start)


__all__ = ["BudgetDatabase", "BudgetStore", "Counters", "Crossing", "Hold", "Refusal", "RefusedError",
           "SettleResult"]
