"""PostgreSQL's budget store: each reserve or settle is one call of a function installed by
the migrations (`llmgw/ledger/migrations/sql/`), queued so that `pg_async` sends the calls of
many requests as one statement (`llmgw_reserve_many`, `llmgw_settle_many`). The rule itself
(lock order, refusals, warnings, a late settle after reconcile) lives in those SQL files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert

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
from llmgw.ledger.ops import Call, Op

# A batch's reserves or settles, one JSON element each (`Call`).
_RESERVE = "SELECT o_index, o_refused, o_spent, o_reserved FROM llmgw_reserve_many(%s::json)"
_SETTLE = "SELECT o_index, o_crossed, o_crossed_spent FROM llmgw_settle_many(%s::json)"


class PostgresBudgets:
    """`BudgetDatabase` on PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set_rule(self, rule: Rule, now: datetime) -> None:
        values, changes = rule_values(rule, now)
        stmt = insert(BudgetRule.__table__).values(**values).on_conflict_do_update(
            index_elements=["scope", "scope_id", "period"], set_=changes)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def driver_rows(self, pairs: tuple[tuple[CounterKey, Limit], ...]
                    ) -> tuple[tuple[tuple[Any, ...], ...], Any]:
        return (), None  # the calls take JSON: no driver parameters to prepare

    def reserve_op(self, counters: Counters, *, request_id: str, amount_micros: int,
                   created_at: datetime, agent_id: str, agent_type: str | None,
                   project_id: str, model_group: str) -> Op[Hold]:
        pairs = counters.pairs

        def held(row: Any) -> Hold:
            if row[0] is not None:
                counter, limit = pairs[row[0] - 1]
                raise RefusedError(Refusal(limit, row[1], row[2], counter.period_start))
            return Hold(request_id, amount_micros, pairs)

        return Op.of_call(Call(_RESERVE, {
            "request_id": request_id, "created_at": created_at, "amount": amount_micros,
            "agent_id": agent_id, "agent_type": agent_type, "project_id": project_id,
            "model_group": model_group, "counters": [k.listed for k, _ in pairs],
            "amounts": list(counters.caps)}, "reserve_many"), held)

    def settle_op(self, hold: Hold, *, spent_micros: int, rows: list[dict[str, Any]],
                  state: str) -> Op[SettleResult]:
        item = {"request_id": hold.request_id, "state": state, "spent": spent_micros,
                "amount": hold.amount_micros, "counters": [k.listed for k, _ in hold.counters],
                "amounts": thresholds(hold)}
        if rows:
            item["rows"] = rows
        return Op.of_call(Call(_SETTLE, item, "settle_many"), lambda row: crossed(hold, row))
