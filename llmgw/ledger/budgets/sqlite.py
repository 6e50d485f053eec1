"""SQLite's budget store: reserve and settle as plain driver statements (values converted by
SQLAlchemy's own bind processors, so they read back exactly as Core wrote them). They sit on
every request's path, and building Core statements costs far more than the SQL itself.
SQLite has no functions: the rules PostgreSQL keeps in `llmgw/ledger/migrations/sql/` are
these statements, in the same order (reservation, counters, then rollup rows)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine
from sqlalchemy.dialects.sqlite import insert

from llmgw.budgets.rules import CounterKey, Limit, Rule
from llmgw.ledger.budgets import (
    Counters,
    Hold,
    Refusal,
    RefusedError,
    SettleResult,
    crossed,
    rule_values,
    thresholds,
)
from llmgw.ledger.models import BudgetRule
from llmgw.ledger.ops import Op
from llmgw.ledger.store import UsageInsert, bind_processor


class SqliteBudgets:
    """`BudgetDatabase` on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite before 3.35 has no RETURNING: it reads the counter back instead.
        self._returning = sqlite3.sqlite_version_info >= (3, 35)
        # Counters known to exist (made once per window, never deleted), so a reserve skips
        # creating them; a missing one is made again on the spot.
        self._known: set[tuple[Any, ...]] = set()
        self._row_keys: dict[CounterKey, tuple[Any, ...]] = {}
        self._dt = bind_processor(DateTime(), engine) or (lambda v: v)
        self._json = bind_processor(JSON(), engine) or (lambda v: v)
        self._usage = UsageInsert(engine)

    def set_rule(self, rule: Rule, now: datetime) -> None:
        values, changes = rule_values(rule, now)
        stmt = insert(BudgetRule.__table__).values(**values).on_conflict_do_update(
            index_elements=["scope", "scope_id", "period"], set_=changes)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def driver_rows(self, pairs: tuple[tuple[CounterKey, Limit], ...]
                     ) -> tuple[tuple[tuple[Any, ...], ...], Any]:
        return (tuple(self._row_key(key) for key, _ in pairs),
                self._json([key.as_list() for key, _ in pairs]))

    # -- reserve -------------------------------------------------------------------------

    def reserve_op(self, counters: Counters, *, request_id: str, amount_micros: int,
                   created_at: datetime, agent_id: str, agent_type: str | None,
                   project_id: str, model_group: str) -> Op[Hold]:
        pairs = counters.pairs

        def held(row: Any, rows: tuple[tuple[Any, ...], ...] = (),
                 rowids: tuple[int, ...] = ()) -> Hold:
            if row[0] is not None:
                counter, limit = pairs[row[0] - 1]
                raise RefusedError(Refusal(limit, row[1], row[2], counter.period_start))
            return Hold(request_id, amount_micros, pairs, rows, rowids)

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

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str) -> Op[SettleResult]:
        spent = spent_micros
        limits = thresholds(hold)

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
                for i, (key, threshold, row) in enumerate(zip(keys, limits, now, strict=True), 1):
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
            return crossed(hold, moved) if moved[0] else SettleResult()
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


_WHERE_KEY = "scope = ? AND scope_id = ? AND period = ? AND period_start = ?"
# The rollup as its SQLite trigger adds a row (migrations/sql/usage_events_rollup_sqlite.v1.sql):
# these are its key, measures and request credits (1 for the first row of its request, or the
# first with that column's value, counted over the rows with a lower id). Taking a row out
# subtracts the same.
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
    # A late settle after a reconcile (PostgreSQL: `llmgw_take_back`, migrations/sql/).
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
