"""Budget transactions: reserve before the call, settle or release after, reconcile crashes.

Reserve is one conditional `UPDATE ... SET reserved = reserved + :x WHERE spent + reserved
+ :x <= :limit` per counter, in one transaction, counters in a fixed order: exact under
concurrency on SQLite (one writer) and on PostgreSQL across processes (row locks, no
deadlock). Settle moves the hold to spend in the same transaction that writes the request's
ledger rows, so counters and ledger always agree. Checks read counter rows, never the ledger.
Each rule has one home per dialect: SQLite's statements here (`reserve_op`, `settle_op`),
PostgreSQL's functions in `llmgw/ledger/sql/` (`llmgw_reserve`, which `llmgw_reserve_many`
runs per request, and `llmgw_settle_many`; `pg_async` sends the calls of many requests as one
statement: one round trip each).
Every writer locks reservations, then counters (one global order), then rollup rows, so none
waits for another in a cycle. `tests/ledger/test_budget_steps.py` holds both databases to
the same behaviour, `test_budget_batches.py` the batches to the lone calls'.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, and_, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from llmgw.budgets import CounterKey, Limit, Rule
from llmgw.ledger.models import BudgetCounter, BudgetRule, Reservation, UsageEvent
from llmgw.ledger.ops import Call, Op, run_sync
from llmgw.ledger.store import UsageInsert, bind_processor

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
class _Counters:
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


class BudgetStore:
    """SQL for budgets; every method is one transaction on the ledger database.

    SQLite's reserve and settle are plain driver statements (values converted by SQLAlchemy's
    own bind processors, so they read back exactly as Core wrote them): they sit on every
    request's path, and building Core statements costs far more than the SQL itself.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._insert_usage = UsageEvent.__table__.insert()
        # SQLite before 3.35 has no RETURNING: it reads the counter back instead.
        self._returning = sqlite3.sqlite_version_info >= (3, 35)
        # Counters known to exist (made once per window, never deleted), so a reserve skips
        # creating them; a missing one is made again on the spot.
        self._known: set[tuple[Any, ...]] = set()
        self._row_keys: dict[CounterKey, tuple[Any, ...]] = {}
        self._prepared: dict[int, _Counters] = {}  # id(keys) -> its counters (`_counters`)
        self._dt = bind_processor(DateTime(), engine) or (lambda v: v)
        self._json = bind_processor(JSON(), engine) or (lambda v: v)
        self._usage = UsageInsert(engine)

    # -- rules ---------------------------------------------------------------------------

    def rules(self, keys: list[tuple[str, str]] | None = None) -> list[Rule]:
        stmt = select(_B.scope, _B.scope_id, _B.period, _B.limit_micros, _B.warn_ratio)
        if keys is not None:
            stmt = stmt.where(tuple_(_B.scope, _B.scope_id).in_(keys))
        with self.engine.connect() as conn:
            return [Rule(*r) for r in conn.execute(stmt.order_by(_B.scope, _B.scope_id, _B.period))]

    def set_rule(self, rule: Rule, now: datetime) -> None:
        values = dict(scope=rule.scope, scope_id=rule.scope_id, period=rule.period,
                      limit_micros=rule.limit_micros, warn_ratio=rule.warn_ratio, updated_at=now)
        ins = (pg_insert if self._dialect == "postgresql" else sqlite_insert)(BudgetRule.__table__)
        stmt = ins.values(**values).on_conflict_do_update(
            index_elements=["scope", "scope_id", "period"],
            set_=dict(limit_micros=rule.limit_micros, warn_ratio=rule.warn_ratio, updated_at=now))
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def delete_rule(self, scope: str, scope_id: str, period: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(BudgetRule.__table__.delete().where(
                _B.scope == scope, _B.scope_id == scope_id, _B.period == period)).rowcount == 1

    # -- reserve -------------------------------------------------------------------------

    def reserve_op(self, *, request_id: str, amount_micros: int, limits: Sequence[Limit],
                   keys: Sequence[CounterKey], created_at: datetime, agent_id: str,
                   agent_type: str | None, project_id: str, model_group: str) -> Op[Hold]:
        """`reserve` as an `Op`, for `LedgerStore.transact`."""
        counters = self._counters(keys, limits)
        pairs = counters.pairs

        def held(row: Any, rows: tuple[tuple[Any, ...], ...] = (),
                 rowids: tuple[int, ...] = ()) -> Hold:
            if row[0] is not None:
                counter, limit = pairs[row[0] - 1]
                raise RefusedError(Refusal(limit, row[1], row[2], counter.period_start))
            return Hold(request_id, amount_micros, pairs, rows, rowids)

        if self._dialect == "postgresql":  # llmgw_reserve_many (0005, 0006)
            return Op.of_call(Call(_PG_RESERVE, {
                "request_id": request_id, "created_at": created_at, "amount": amount_micros,
                "agent_id": agent_id, "agent_type": agent_type, "project_id": project_id,
                "model_group": model_group, "counters": [k.listed for k, _ in pairs],
                "amounts": list(counters.caps)}, "reserve_many"), held)

        def run(cur: Any) -> Hold:
            rows = counters.rows
            cur.execute(_SQL["insert_reservation"], (
                request_id, self._dt(created_at), amount_micros, agent_id, agent_type,
                project_id, model_group, counters.listed))
            new = [key for key in rows if key not in self._known]
            if new:  # made by another writer meanwhile: a no-op
                cur.executemany(_SQL["ensure_counter"], new)
            rowids = []
            for i, (key, cap) in enumerate(zip(rows, counters.caps, strict=True), 1):
                rowid = self._hold(cur, key, amount_micros, cap)
                if rowid is None:
                    return held((i, *cur.execute(_SQL["read_counter"], key).fetchone()))
                rowids.append(rowid)
            self._remember(rows)
            return held((None,), rows, tuple(rowids) if self._returning else ())
        return Op(run)

    def _counters(self, keys: Sequence[CounterKey], limits: Sequence[Limit]) -> _Counters:
        """The counters of a reserve in lock order, with their driver parameters. The planner
        hands every request of an agent the same `keys` and `limits` objects while their
        windows last, so they are worked out once per agent and window, not per request."""
        found = self._prepared.get(id(keys))
        if found is not None and found.keys is keys and found.limits is limits:
            return found
        pairs = tuple(sorted(zip(keys, limits, strict=True), key=lambda p: p[0].listed))
        counters = _Counters(keys, limits, pairs,
                             tuple(limit.limit_micros for _, limit in pairs),
                             tuple(self._row_key(key) for key, _ in pairs),
                             self._json([key.as_list() for key, _ in pairs]))
        if len(self._prepared) >= 10_000:  # old windows' and agents': forget them all
            self._prepared.clear()
        self._prepared[id(keys)] = counters  # holds `keys`: its id is not reused meanwhile
        return counters

    def reserve(self, **kwargs: Any) -> Hold:
        """Hold `amount_micros` on every counter, or raise `RefusedError` holding nothing."""
        return run_sync(self.engine, self.reserve_op(**kwargs))

    def _hold(self, cur: Any, key: tuple[Any, ...], amount: int, limit: int) -> int | None:
        """Hold `amount` on a counter if it has room: its rowid (0 without RETURNING), else
        None. A counter thought known but gone (its batch rolled back) is made again."""
        hold = (amount, *key, amount, limit)
        held = self._held(cur, hold)
        if held is not None:
            return held
        if cur.execute(_SQL["read_counter"], key).fetchone() is not None:
            return None
        cur.execute(_SQL["ensure_counter"], key)
        return self._held(cur, hold)

    def _held(self, cur: Any, hold: tuple[Any, ...]) -> int | None:
        if self._returning:
            row = cur.execute(_SQL["hold_returning"], hold).fetchone()
            return None if row is None else int(row[0])
        return 0 if cur.execute(_SQL["hold"], hold).rowcount == 1 else None

    def _remember(self, keys: tuple[tuple[Any, ...], ...]) -> None:
        """Counters that exist now (a rolled-back batch may undo one: it is made again)."""
        if len(self._known) > 100_000:  # old windows' keys: forget them all, cheaply
            self._known.clear()
            self._row_keys.clear()
        self._known.update(keys)

    def _row_key(self, key: CounterKey) -> tuple[Any, ...]:
        """A counter's key as driver parameters (the window start converted once, not per
        request: SQLAlchemy's DateTime conversion costs more than the rest of a step)."""
        row = self._row_keys.get(key)
        if row is None:
            row = self._row_keys[key] = (key.scope, key.scope_id, key.period,
                                         self._dt(key.period_start))
        return row

    # -- settle / release ----------------------------------------------------------------

    def settle(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
               state: str = "settled") -> SettleResult:
        """Turn the hold into `spent_micros` of spend and write the request's ledger rows,
        in one transaction. Idempotent: a hold that is no longer open moves no counter."""
        return run_sync(self.engine, self.settle_op(hold, spent_micros=spent_micros, rows=rows,
                                                    state=state))

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str = "settled") -> Op[SettleResult]:
        """`settle` as an `Op`, for `LedgerStore.transact`."""
        spent = spent_micros
        thresholds = [int(limit.limit_micros * limit.warn_ratio) for _, limit in hold.counters]

        def crossed(row: Any) -> SettleResult:
            pairs = [hold.counters[i - 1] for i in row[0]]
            return SettleResult([Crossing(k, limit, s) for (k, limit), s in zip(pairs, row[1], strict=True)])

        if self._dialect == "postgresql":  # llmgw_settle_many (0006, 0008)
            item = {"request_id": hold.request_id, "state": state, "spent": spent,
                    "amount": hold.amount_micros, "counters": [k.listed for k, _ in hold.counters],
                    "amounts": thresholds}
            if rows:
                item["rows"] = rows
            return Op.of_call(Call(_PG_SETTLE, item, "settle_many"), crossed)

        def run(cur: Any) -> SettleResult:
            # Locks in the one order: reservation, counters, then rollup rows (the rows' trigger).
            moved: tuple[list[int], list[int]] = ([], [])
            still_open = cur.execute(_SQL["close_reservation"], (state, spent, hold.request_id)
                                     ).rowcount == 1
            # Not open: settled already (it moved then), or reconciled while in flight.
            booked = None if still_open else self._take_back(cur, hold.request_id, state, spent)
            if still_open or booked is not None:
                held = hold.amount_micros if still_open else 0  # else released by reconcile
                keys = hold.rows or [self._row_key(key) for key, _ in hold.counters]
                net = spent - (booked or 0)
                if hold.rowids:  # one statement for every counter; what each reads after
                    after = self._settle_counters(cur, hold.rowids, held, net)
                    now = [after.get(rowid) for rowid in hold.rowids]
                else:  # SQLite before 3.35 (no RETURNING): one statement a counter
                    for key in keys:
                        cur.execute(_SQL["settle_counter"], (held, net, *key))
                    now = [None] * len(keys)
                for i, (key, threshold, row) in enumerate(zip(keys, thresholds, now, strict=True), 1):
                    # Only a counter at its threshold and not yet warned can cross; without
                    # RETURNING the mark's own condition decides.
                    if net <= 0 or (row is not None and (row[1] or row[0] < threshold)):
                        continue
                    crossing = self._mark_warned(cur, key, threshold)
                    if crossing is not None:
                        moved[0].append(i)
                        moved[1].append(crossing)
            if booked is not None:
                self._drop_reconciled_rows(cur, hold.request_id)
            if rows:
                cur.executemany(self._usage.sql, self._usage.each(rows))
            return crossed(moved) if moved[0] else SettleResult()
        return Op(run)

    def _take_back(self, cur: Any, request_id: str, state: str, spent: int) -> int | None:
        """A reconcile booked this hold at its reserved amount while its request was still in
        flight: the reservation goes to this settle, and the amount booked is returned (its
        counters' `reserved` was released then; their `spent` is corrected by the caller).
        None if the hold was settled by its own request already."""
        row = cur.execute(_SQL["read_reconciled"], (request_id,)).fetchone()
        if row is None:
            return None
        cur.execute(_SQL["take_back"], (state, spent, request_id))
        return int(row[0])

    def _drop_reconciled_rows(self, cur: Any, request_id: str) -> None:
        """Delete the request's `Reconciled` row and take it out of the rollup (its insert
        trigger added it there); the request's real rows replace it."""
        gone = cur.execute(_SQL["reconciled_rollup"], (request_id,)).fetchall()
        cur.executemany(_SQL["unroll"], [(*r[_ROLLUP_KEYS:], *r[:_ROLLUP_KEYS]) for r in gone])
        cur.execute(_SQL["drop_reconciled"], (request_id,))

    def _settle_counters(self, cur: Any, rowids: tuple[int, ...], held: int,
                         spent: int) -> dict[int, tuple[int, bool]]:
        """Move `held` to `spent` on counters by rowid: rowid -> (spend, warned) after."""
        sql = _SETTLE_BY_ROWID.get(len(rowids))
        if sql is None:
            sql = _SETTLE_BY_ROWID[len(rowids)] = (
                "UPDATE budget_counters SET reserved_micros = reserved_micros - ?, "
                f"spent_micros = spent_micros + ? WHERE rowid IN ({', '.join('?' * len(rowids))}) "
                "RETURNING rowid, spent_micros, warned")
        return {r[0]: (r[1], r[2]) for r in cur.execute(sql, (held, spent, *rowids)).fetchall()}

    def _mark_warned(self, cur: Any, key: tuple[Any, ...], threshold: int) -> int | None:
        """The counter's spend if this settle is the one that warns of it (once per window)."""
        if cur.execute(_SQL["mark_warned"], (*key, threshold)).rowcount != 1:
            return None
        return int(cur.execute(_SQL["read_counter"], key).fetchone()[0])

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
        books the real amount and rows instead (`_take_back`; migration 0008)."""
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


# PostgreSQL: a batch's reserves or settles, one JSON element each (`Call`).
_PG_RESERVE = "SELECT o_index, o_refused, o_spent, o_reserved FROM llmgw_reserve_many(%s::json)"
_PG_SETTLE = "SELECT o_index, o_crossed, o_crossed_spent FROM llmgw_settle_many(%s::json)"
# SQLite's reserve and settle.
_WHERE_KEY = "scope = ? AND scope_id = ? AND period = ? AND period_start = ?"
# The rollup (migration 0003) as its SQLite trigger adds a row: these are its key, measures
# and request credits (1 for the first row of its request, or the first with that column's
# value, counted over the rows with a lower id). Taking a row out subtracts the same.
_ROLLUP_KEY_COLUMNS = ("project_id", "agent_id", "day", "agent_type", "model_group",
                       "deployment_id", "provider", "model", "null_keys")
_ROLLUP_KEYS = len(_ROLLUP_KEY_COLUMNS)
_ROLLUP_MEASURES = ("attempts", "errors", "cached", "refused", "prompt_tokens",
                    "completion_tokens", "cost_micros", "saved_micros")
_ROLLUP_CREDITS = (("req_first", None), ("req_agent_type", "agent_type"),
                   ("req_model_group", "model_group"), ("req_deployment", "deployment_id"),
                   ("req_provider", "provider"), ("req_model", "model"))
# A reconcile writes one row per reservation: status error, error_class Reconciled.
_RECONCILED_ROWS = ("{n}request_id = ? AND {n}status = 'error' "
                    "AND {n}error_class = 'Reconciled'")


def _reconciled_rollup() -> str:
    """Each `Reconciled` row of a request: its rollup key, measures and credits."""
    key = ["n.project_id", "n.agent_id", "date(n.ts)", "COALESCE(n.agent_type, '')",
           "n.model_group", "COALESCE(n.deployment_id, '')", "COALESCE(n.provider, '')",
           "COALESCE(n.model, '')",
           "(n.agent_type IS NULL) * 1 + (n.deployment_id IS NULL) * 2 "
           "+ (n.provider IS NULL) * 4 + (n.model IS NULL) * 8"]
    measures = ["n.status IN ('ok', 'error', 'partial')", "n.status = 'error'",
                "n.status = 'cached'", "n.status = 'refused'", "n.prompt_tokens",
                "n.completion_tokens", "n.cost_micros", "n.saved_micros"]
    credits = [
        "NOT EXISTS (SELECT 1 FROM usage_events e WHERE e.request_id = n.request_id "
        f"AND e.id < n.id{f' AND e.{column} IS n.{column}' if column else ''})"
        for _, column in _ROLLUP_CREDITS]
    return (f"SELECT {', '.join(key + measures + credits)} FROM usage_events n "
            f"WHERE {_RECONCILED_ROWS.format(n='n.')}")


_SETTLE_BY_ROWID: dict[int, str] = {}  # number of counters -> its statement

_SQL = {
    "insert_reservation": (
        "INSERT INTO reservations (request_id, created_at, state, amount_micros, agent_id, "
        "agent_type, project_id, model_group, counters) VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?)"),
    "ensure_counter": (
        "INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros, "
        "reserved_micros, warned) VALUES (?, ?, ?, ?, 0, 0, FALSE) ON CONFLICT DO NOTHING"),
    "hold": (f"UPDATE budget_counters SET reserved_micros = reserved_micros + ? WHERE "
             f"{_WHERE_KEY} AND spent_micros + reserved_micros + ? <= ?"),
    "hold_returning": (f"UPDATE budget_counters SET reserved_micros = reserved_micros + ? WHERE "
                       f"{_WHERE_KEY} AND spent_micros + reserved_micros + ? <= ? RETURNING rowid"),
    "read_counter": f"SELECT spent_micros, reserved_micros FROM budget_counters WHERE {_WHERE_KEY}",
    "close_reservation": ("UPDATE reservations SET state = ?, settled_micros = ? "
                          "WHERE request_id = ? AND state = 'open'"),
    "settle_counter": ("UPDATE budget_counters SET reserved_micros = reserved_micros - ?, "
                       f"spent_micros = spent_micros + ? WHERE {_WHERE_KEY}"),
    "mark_warned": (f"UPDATE budget_counters SET warned = TRUE WHERE {_WHERE_KEY} "
                    "AND warned = FALSE AND spent_micros >= ?"),
    # A late settle after a reconcile (SQLite; PostgreSQL: `llmgw_take_back`, migration 0008).
    "read_reconciled": ("SELECT settled_micros FROM reservations "
                        "WHERE request_id = ? AND state = 'reconciled'"),
    "take_back": ("UPDATE reservations SET state = ?, settled_micros = ? "
                  "WHERE request_id = ? AND state = 'reconciled'"),
    "reconciled_rollup": _reconciled_rollup(),
    "unroll": ("UPDATE usage_rollup SET " + ", ".join(
        f"{m} = {m} - ?" for m in (*_ROLLUP_MEASURES, *(c for c, _ in _ROLLUP_CREDITS)))
        + " WHERE " + " AND ".join(f"{k} = ?" for k in _ROLLUP_KEY_COLUMNS)),
    "drop_reconciled": f"DELETE FROM usage_events WHERE {_RECONCILED_ROWS.format(n='')}",
}


def _key(key: CounterKey) -> Any:
    return and_(_C.scope == key.scope, _C.scope_id == key.scope_id, _C.period == key.period,
                _C.period_start == key.period_start)
