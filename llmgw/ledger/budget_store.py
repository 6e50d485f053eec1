"""Budget transactions: reserve before the call, settle or release after, reconcile crashes.

Reserve is one conditional `UPDATE ... SET reserved = reserved + :x WHERE spent + reserved
+ :x <= :limit` per counter, in one transaction, counters in a fixed order: exact under
concurrency on SQLite (one writer) and on PostgreSQL across processes (row locks, no
deadlock). Settle moves the hold to spend in the same transaction that writes the request's
ledger rows, so counters and ledger always agree. Checks read counter rows, never the ledger.
On PostgreSQL the same rules run inside the functions `llmgw_reserve` / `llmgw_settle`
(migration 0004; counters locked `FOR UPDATE` in the same order, then held): one call and
one round trip each, where the statements cost the gateway's event loop more than the
database; under load many requests' calls go as one (`llmgw_reserve_many`, migration 0005;
`llmgw_settle_many`, 0006; merged by `pg_async`). On SQLite a batch's reserves and settles
are merged in Python (`_reserve_many`, `_settle_many`): one conditional UPDATE per counter
with the batch's sum, when all of them fit. Every writer locks reservations, then
counters (one global order), then rollup rows, so none waits for another in a cycle.
`tests/ledger/test_budget_steps.py` holds both databases to the same behaviour,
`test_budget_batches.py` the batches to the lone calls'.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, and_, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from llmgw.budgets import CounterKey, Limit, Rule
from llmgw.ledger.models import BudgetCounter, BudgetRule, Reservation, UsageEvent
from llmgw.ledger.fallbacks import fell_back
from llmgw.ledger.steps import COMMIT, Call, Merge, Op, Steps, json_text, run_steps
from llmgw.ledger.group_commit import driver_transaction
from llmgw.ledger.store import UsageInsert, bind_processor, driver_sql

_C = BudgetCounter.__table__.c
_R = Reservation.__table__.c
_B = BudgetRule.__table__.c


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation the gateway holds for one request."""

    request_id: str
    amount_micros: int
    counters: tuple[tuple[CounterKey, Limit], ...]
    # SQLite: the counters' keys as driver parameters, made once at reserve for the settle
    row_keys: tuple[tuple[Any, ...], ...] = ()


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


class RefusedError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


# A batch's items wait across an await: each is one object pointing at what its request holds
# anyway. Their driver parameters are made in the batch and dropped right after it (made
# before it, ~100 requests' worth of tuples stayed alive and the GC walked them).
@dataclass(frozen=True, slots=True)
class _Reserve:
    """One request's reserve on SQLite."""

    request_id: str
    created_at: datetime
    amount: int
    agent_id: str
    agent_type: str | None
    project_id: str
    model_group: str
    pairs: list[tuple[CounterKey, Limit]]
    keys: tuple[tuple[Any, ...], ...]  # the pairs' counters as driver parameters


@dataclass(frozen=True, slots=True)
class _Settle:
    """One request's settle on SQLite."""

    hold: Hold
    state: str
    spent: int
    rows: list[dict[str, Any]]


class _NotAll(Exception):
    """A merged batch cannot run as one: its items run one by one."""


_HELD = (None, None, None)
_NO_CROSSING: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


class BudgetStore:
    """SQL for budgets; every method is one transaction on the ledger database.

    Reserve and settle run as plain driver statements (values converted by SQLAlchemy's own
    bind processors, so they read back exactly as Core wrote them): they sit on every
    request's path, and building Core statements costs ~10x the SQL itself.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._insert_usage = UsageEvent.__table__.insert()
        self._sql = {name: driver_sql(sql, engine) for name, sql in _SQL.items()}
        # SQLite before 3.35 has no RETURNING: it reads the counter back instead.
        self._returning = sqlite3.sqlite_version_info >= (3, 35)
        # PostgreSQL runs reserve and settle as functions (one call each); SQLite as steps.
        self._functions = self._dialect == "postgresql"
        # Counters known to exist (made once per window, never deleted), so a reserve skips
        # creating them; a missing one is made again on the spot.
        self._known: set[tuple[Any, ...]] = set()
        self._row_keys: dict[CounterKey, tuple[Any, ...]] = {}
        self._listed: dict[tuple[Any, ...], Any] = {}  # counters -> reservations.counters
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

    def reserve_op(self, *, request_id: str, amount_micros: int, limits: list[Limit],
                   keys: list[CounterKey], created_at: datetime, agent_id: str,
                   agent_type: str | None, project_id: str, model_group: str) -> Op[Hold]:
        """`reserve` as SQL steps, for `LedgerStore.transact` (any driver, sync or async)."""
        pairs = sorted(zip(keys, limits), key=lambda p: p[0].listed)
        return lambda: self._reserve_steps(request_id, amount_micros, pairs, created_at,
                                           agent_id, agent_type, project_id, model_group)

    def reserve(self, *, request_id: str, amount_micros: int, limits: list[Limit],
                keys: list[CounterKey], created_at: datetime, agent_id: str,
                agent_type: str | None, project_id: str, model_group: str) -> Hold:
        """Hold `amount_micros` on every counter, or raise `RefusedError` holding nothing."""
        op = self.reserve_op(request_id=request_id, amount_micros=amount_micros, limits=limits,
                             keys=keys, created_at=created_at, agent_id=agent_id,
                             agent_type=agent_type, project_id=project_id,
                             model_group=model_group)
        with driver_transaction(self.engine) as cur:
            return run_steps(cur, op())

    def _reserve_steps(self, request_id: str, amount: int,
                       pairs: list[tuple[CounterKey, Limit]], created_at: datetime,
                       agent_id: str, agent_type: str | None, project_id: str,
                       model_group: str) -> Steps[Hold]:
        sql = self._sql
        keys: tuple[tuple[Any, ...], ...] = ()
        if self._functions:  # PostgreSQL: one call (0004), or one of a batch's (0005)
            counters = [k.listed for k, _ in pairs]
            limits = [limit.limit_micros for _, limit in pairs]
            (_, row), _ = yield [Call(sql["reserve_fn"], lambda: (
                json.dumps(counters), json.dumps(limits), request_id, created_at, amount,
                agent_id, agent_type, project_id, model_group), sql["reserve_many"], {
                "request_id": request_id, "created_at": created_at, "amount": amount,
                "agent_id": agent_id, "agent_type": agent_type, "project_id": project_id,
                "model_group": model_group, "counters": counters, "amounts": limits},
                "reserve_many"), COMMIT]
        else:  # SQLite: the reserves of a batch merged (`_reserve_many`)
            keys = tuple(self._row_key(key) for key, _ in pairs)
            row = yield Merge(self._reserve_many, _Reserve(
                request_id, created_at, amount, agent_id, agent_type, project_id, model_group,
                pairs, keys))
        if row[0] is not None:
            counter, limit = pairs[row[0] - 1]
            raise RefusedError(Refusal(limit, row[1], row[2], counter.period_start))
        return Hold(request_id, amount, tuple(pairs), keys)

    def _reserve_many(self, cur: Any, items: list[_Reserve]) -> list[Any]:
        """SQLite's `llmgw_reserve_many`: each item's (index of the counter that refused it,
        its spent, its reserved), all None when held. Merged when every counter has room for
        the sum of the batch's holds on it, so holding them one by one would refuse none: one
        conditional UPDATE per counter, with that sum. Else one by one, in order."""
        if len(items) > 1 and self._hold_merged(cur, items):
            return [_HELD] * len(items)
        return [self._hold_alone(cur, item) for item in items]

    def _reservation(self, item: _Reserve) -> tuple[Any, ...]:
        """The item's `reservations` row, as driver parameters."""
        listed = self._listed.get(item.keys)
        if listed is None:  # the same agent and project in the same windows: the same text
            listed = self._listed[item.keys] = self._json([key.as_list() for key, _ in item.pairs])
        return (item.request_id, self._dt(item.created_at), item.amount, item.agent_id,
                item.agent_type, item.project_id, item.model_group, listed)

    def _hold_merged(self, cur: Any, items: list[_Reserve]) -> bool:
        sums: dict[tuple[Any, ...], list[int]] = {}
        for item in items:
            for k, (_, limit) in zip(item.keys, item.pairs):
                held = sums.get(k)
                if held is None:
                    sums[k] = [item.amount, limit.limit_micros]
                elif held[1] != limit.limit_micros:  # the rules changed between two of them
                    return False
                else:
                    held[0] += item.amount
        sql = self._sql
        cur.execute("SAVEPOINT merged")
        try:
            cur.executemany(sql["insert_reservation"], map(self._reservation, items))
            self._make_unknown(cur, sums)
            for key, (amount, limit) in sums.items():
                if cur.execute(sql["hold"], (amount, *key, amount, limit)).rowcount != 1:
                    raise _NotAll
        except Exception as exc:  # no room for all, or a bad item: one by one, undone here
            cur.execute("ROLLBACK TO merged")
            cur.execute("RELEASE merged")
            if not isinstance(exc, _NotAll):
                fell_back("reserve_many", len(items), exc)
            return False
        cur.execute("RELEASE merged")
        self._remember(sums)
        return True

    def _hold_alone(self, cur: Any, item: _Reserve) -> Any:
        sql = self._sql
        cur.execute("SAVEPOINT alone")
        try:
            cur.execute(sql["insert_reservation"], self._reservation(item))
            keys = item.keys
            self._make_unknown(cur, keys)
            for i, (key, (_, limit)) in enumerate(zip(keys, item.pairs), 1):
                hold = (item.amount, *key, item.amount, limit.limit_micros)
                if cur.execute(sql["hold"], hold).rowcount == 1:
                    continue
                row = cur.execute(sql["read_counter"], key).fetchone()
                if row is None:  # a counter thought known is gone (rolled back): make it again
                    cur.execute(sql["ensure_counter"], key)
                    if cur.execute(sql["hold"], hold).rowcount == 1:
                        continue
                    row = cur.execute(sql["read_counter"], key).fetchone()
                cur.execute("ROLLBACK TO alone")  # the holds before this one, the reservation
                cur.execute("RELEASE alone")
                return (i, row[0], row[1])
        except Exception as exc:
            cur.execute("ROLLBACK TO alone")
            cur.execute("RELEASE alone")
            return exc
        cur.execute("RELEASE alone")
        self._remember(keys)
        return _HELD

    def _make_unknown(self, cur: Any, keys: Any) -> None:
        """Make the counters not known to exist (made by another writer meanwhile: no-op)."""
        new = [key for key in keys if key not in self._known]
        if new:
            cur.executemany(self._sql["ensure_counter"], new)

    def _remember(self, keys: Any) -> None:
        """Counters that exist now (a rolled-back batch may undo one: it is made again)."""
        if len(self._known) > 100_000:  # old windows' keys: forget them all, cheaply
            self._known.clear()
            self._row_keys.clear()
            self._listed.clear()
        self._known.update(keys)

    def _keys_of(self, hold: Hold) -> tuple[tuple[Any, ...], ...]:
        return hold.row_keys or tuple(self._row_key(key) for key, _ in hold.counters)

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
        with driver_transaction(self.engine) as cur:
            return run_steps(cur, self._settle_steps(hold, spent_micros, rows, state))

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str = "settled") -> Op[SettleResult]:
        """`settle` as SQL steps, for `LedgerStore.transact` (any driver, sync or async)."""
        return lambda: self._settle_steps(hold, spent_micros, rows, state)

    def _settle_steps(self, hold: Hold, spent: int, rows: list[dict[str, Any]],
                      state: str) -> Steps[SettleResult]:
        result = SettleResult()
        sql = self._sql
        if self._functions:  # PostgreSQL: one call (0004, 0006), or one of a batch's (0006)
            counters = [key.listed for key, _ in hold.counters]
            thresholds = [int(limit.limit_micros * limit.warn_ratio)
                          for _, limit in hold.counters]
            item = {"request_id": hold.request_id, "state": state, "spent": spent,
                    "amount": hold.amount_micros, "counters": counters, "amounts": thresholds}
            if rows:
                item["rows"] = rows
            (_, row), _ = yield [Call(sql["settle_fn"], lambda: (
                json.dumps(counters), json.dumps(thresholds), hold.request_id, state, spent,
                hold.amount_micros, json_text(rows) if rows else None),
                sql["settle_many"], item, "settle_many"), COMMIT]
        else:  # SQLite: the settles of a batch merged (`_settle_many`)
            row = yield Merge(self._settle_many, _Settle(hold, state, spent, rows))
        for i, crossed_spent in zip(row[0], row[1]):
            key, limit = hold.counters[i - 1]
            result.crossings.append(Crossing(key, limit, crossed_spent))
        return result

    def _settle_many(self, cur: Any, items: list[_Settle]) -> list[Any]:
        """SQLite's `llmgw_settle_many`: close each item's reservation, move its hold to spend
        (nothing moves if it was closed already) and write its rows. Each item's result: the
        indexes of its counters that crossed their warn threshold, and their spend. Merged:
        one UPDATE per counter with the batch's sums, one INSERT for all rows; one by one if
        that fails, so that a bad item fails alone."""
        if len(items) > 1:
            merged = self._settle_merged(cur, items)
            if merged is not None:
                return merged
        return [self._settle_alone(cur, item) for item in items]

    def _settle_merged(self, cur: Any, items: list[_Settle]) -> list[Any] | None:
        sql = self._sql
        results: list[Any] = [_NO_CROSSING] * len(items)
        # counter -> [held, spent, threshold, the item and counter index a crossing goes to]
        moves: dict[tuple[Any, ...], list[int]] = {}
        for n, item in enumerate(items):
            amount = item.hold.amount_micros
            for i, (k, (_, limit)) in enumerate(zip(self._keys_of(item.hold),
                                                    item.hold.counters), 1):
                threshold = int(limit.limit_micros * limit.warn_ratio)
                move = moves.get(k)
                if move is None:
                    moves[k] = [amount, item.spent, threshold, n, i]
                elif move[2] != threshold:  # the rules changed between two of them
                    return None
                else:
                    move[0] += amount
                    move[1] += item.spent
                    if item.spent > 0:  # the crossing goes to the last one that spent
                        move[3], move[4] = n, i
        cur.execute("SAVEPOINT merged")
        try:
            closed = cur.executemany(sql["close_reservation"], [
                (item.state, item.spent, item.hold.request_id) for item in items]).rowcount
            if closed != len(items):  # some were closed already: they move nothing
                raise _NotAll
            for key, (held, spent, threshold, n, i) in moves.items():
                if self._settle_counter(cur, key, held, spent, threshold):
                    if results[n] is _NO_CROSSING:
                        results[n] = ([], [])
                    results[n][0].append(i)
                    results[n][1].append(cur.execute(sql["read_counter"], key).fetchone()[0])
            cur.executemany(self._usage.sql, self._usage.each(
                row for item in items for row in item.rows))
        except Exception as exc:  # one closed already (it moves nothing), or a bad item
            cur.execute("ROLLBACK TO merged")
            cur.execute("RELEASE merged")
            if not isinstance(exc, _NotAll):
                fell_back("settle_many", len(items), exc)
            return None
        cur.execute("RELEASE merged")
        return results

    def _settle_alone(self, cur: Any, item: _Settle) -> Any:
        sql = self._sql
        hold = item.hold
        result: tuple[list[int], list[int]] = ([], [])
        cur.execute("SAVEPOINT alone")
        try:
            booked = None
            move: tuple[int, int] | None = None  # (held, spent) to move on each counter
            if cur.execute(sql["close_reservation"], (item.state, item.spent, hold.request_id)
                           ).rowcount == 1:  # still open
                move = (hold.amount_micros, item.spent)
            else:  # settled already (it moved then), or reconciled while in flight
                booked = self._take_back(cur, item)
                if booked is not None:  # reserved went then; spent gets the real amount
                    move = (0, item.spent - booked)
            if move is not None:
                held, spent = move
                for i, (k, (_, limit)) in enumerate(zip(self._keys_of(hold), hold.counters),
                                                    1):
                    if self._settle_counter(cur, k, held, spent,
                                            int(limit.limit_micros * limit.warn_ratio)):
                        result[0].append(i)
                        result[1].append(cur.execute(sql["read_counter"], k).fetchone()[0])
            if booked is not None:
                self._drop_reconciled_rows(cur, hold.request_id)
            if item.rows:
                cur.executemany(self._usage.sql, self._usage.each(item.rows))
        except Exception as exc:
            cur.execute("ROLLBACK TO alone")
            cur.execute("RELEASE alone")
            return exc
        cur.execute("RELEASE alone")
        return result

    def _take_back(self, cur: Any, item: _Settle) -> int | None:
        """A reconcile booked this hold at its reserved amount while its request was still in
        flight: the reservation goes to this settle, and the amount booked is returned (its
        counters' `reserved` was released then; their `spent` is corrected by the caller).
        None if the hold was settled by its own request already."""
        sql = self._sql
        row = cur.execute(sql["read_reconciled"], (item.hold.request_id,)).fetchone()
        if row is None:
            return None
        cur.execute(sql["take_back"], (item.state, item.spent, item.hold.request_id))
        return int(row[0])

    def _drop_reconciled_rows(self, cur: Any, request_id: str) -> None:
        """Delete the request's `Reconciled` row and take it out of the rollup (its insert
        trigger added it there); the request's real rows replace it."""
        sql = self._sql
        gone = cur.execute(sql["reconciled_rollup"], (request_id,)).fetchall()
        cur.executemany(sql["unroll"], [(*r[_ROLLUP_KEYS:], *r[:_ROLLUP_KEYS]) for r in gone])
        cur.execute(sql["drop_reconciled"], (request_id,))

    def _settle_counter(self, cur: Any, key: tuple[Any, ...], held: int, spent: int,
                        threshold: int) -> bool:
        """Move `held` to `spent` on a counter; True if it crossed its warn threshold now
        (exactly one process sees that: once per window)."""
        sql = self._sql
        if self._returning:
            row = cur.execute(sql["settle_counter_returning"], (held, spent, *key)).fetchone()
            # Only a counter at its threshold and not yet warned can cross.
            if spent <= 0 or row is None or row[1] or row[0] < threshold:
                return False
        else:
            cur.execute(sql["settle_counter"], (held, spent, *key))
            if spent <= 0:
                return False
        marked: int = cur.execute(sql["mark_warned"], (*key, threshold)).rowcount
        return marked == 1

    # -- reads ---------------------------------------------------------------------------

    def counters(self, keys: list[CounterKey]) -> dict[CounterKey, tuple[int, int]]:
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
                    prompt_tokens=0, completion_tokens=0, cached_tokens=0,
                    cost_micros=r.amount_micros, saved_micros=0, latency_ms=None, stream=False,
                    metadata={"llmgw": {"reconciled_at": now.isoformat()}})])
            done.append(r.request_id)
        return done


# Driver SQL for SQLite and PostgreSQL alike (`?` becomes `%s` for psycopg).
_WHERE_KEY = "scope = ? AND scope_id = ? AND period = ? AND period_start = ?"
_SETTLE = ("UPDATE budget_counters SET reserved_micros = reserved_micros - ?, "
           f"spent_micros = spent_micros + ? WHERE {_WHERE_KEY}")
# The counters as one JSON text parameter (`CounterKey.as_list()` each) and one JSON array
# of amounts (limits or thresholds), unpacked into the functions' arrays by the server:
# psycopg dumps two strings far cheaper than five typed arrays.
_KEYS_FROM_JSON = (
    "(SELECT ?::json AS counters, ?::json AS amounts) j, LATERAL (SELECT "
    "coalesce(array_agg(e->>0 ORDER BY n), '{}') AS scopes, "
    "coalesce(array_agg(e->>1 ORDER BY n), '{}') AS scope_ids, "
    "coalesce(array_agg(e->>2 ORDER BY n), '{}') AS periods, "
    "coalesce(array_agg((e->>3)::timestamp ORDER BY n), '{}') AS starts, "
    "coalesce(array_agg((j.amounts->>(n::integer - 1))::bigint ORDER BY n), '{}') AS amounts "
    "FROM json_array_elements(j.counters) WITH ORDINALITY AS x(e, n)) k")
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


_SQL = {
    "insert_reservation": (
        "INSERT INTO reservations (request_id, created_at, state, amount_micros, agent_id, "
        "agent_type, project_id, model_group, counters) VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?)"),
    "ensure_counter": (
        "INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros, "
        "reserved_micros, warned) VALUES (?, ?, ?, ?, 0, 0, FALSE) ON CONFLICT DO NOTHING"),
    "hold": (f"UPDATE budget_counters SET reserved_micros = reserved_micros + ? WHERE "
             f"{_WHERE_KEY} AND spent_micros + reserved_micros + ? <= ?"),
    "read_counter": f"SELECT spent_micros, reserved_micros FROM budget_counters WHERE {_WHERE_KEY}",
    "close_reservation": ("UPDATE reservations SET state = ?, settled_micros = ? "
                          "WHERE request_id = ? AND state = 'open'"),
    "settle_counter": _SETTLE,
    "settle_counter_returning": _SETTLE + " RETURNING spent_micros, warned",
    "reserve_fn": (
        f"SELECT r.o_refused, r.o_spent, r.o_reserved FROM {_KEYS_FROM_JSON}, "
        "llmgw_reserve(?::text, ?::timestamp, ?::bigint, ?::text, ?::text, ?::text, ?::text, "
        "j.counters, k.scopes, k.scope_ids, k.periods, k.starts, k.amounts) r"),
    "settle_fn": (
        f"SELECT r.o_crossed, r.o_crossed_spent FROM {_KEYS_FROM_JSON}, "
        "llmgw_settle(?::text, ?::text, ?::bigint, ?::bigint, k.scopes, k.scope_ids, "
        "k.periods, k.starts, k.amounts, ?::json) r"),
    "reserve_many": ("SELECT o_index, o_refused, o_spent, o_reserved "
                     "FROM llmgw_reserve_many(?::json)"),
    "settle_many": "SELECT o_index, o_crossed, o_crossed_spent FROM llmgw_settle_many(?::json)",
    "mark_warned": (f"UPDATE budget_counters SET warned = TRUE WHERE {_WHERE_KEY} "
                    "AND warned = FALSE AND spent_micros >= ?"),
    # A late settle after a reconcile (SQLite; PostgreSQL: `llmgw_settle`, migration 0008).
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
