"""A settle that comes after a reconcile booked its hold (the request was still in flight)
wins: the real rows replace the `Reconciled` row, counters' spent gets the real amount, the
rollup follows. SQLite's steps and PostgreSQL's functions alike, each
settle alone or in a batch."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import Engine, text

from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import downgrade, upgrade
from llmgw.ledger.report import usage_report, usage_totals
from tests.ledger.test_budget_batches import reserve_op
from tests.ledger.test_budget_steps import NOW, limits, row

BOTH = pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)


def reconcile_all(budgets: BudgetStore) -> list[str]:
    return budgets.reconcile(now=NOW + timedelta(seconds=1), older_than=timedelta(0))


def table(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def assert_rollup_matches_ledger(engine: Engine) -> None:
    """The report, read from the rollup the trigger keeps, equals plain SQL over the rows."""
    measures = ("COUNT(DISTINCT request_id), "
                "SUM(CASE WHEN status IN ('ok', 'error', 'partial') THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), SUM(cost_micros)")
    for by, column in (("deployment", "deployment_id"), ("provider", "provider"),
                       ("model-group", "model_group"), ("agent", "agent_id")):
        plain = {("-" if r[0] is None else r[0]): r[1:] for r in table(
            engine, f"SELECT {column}, {measures} FROM usage_events GROUP BY {column}")}
        report = {r.key: (r.requests, r.attempts, r.errors, r.cost_micros)
                  for r in usage_report(engine, by=by)}
        assert report == plain, by
    totals = usage_totals(engine)
    [plain_totals] = table(engine, f"SELECT {measures} FROM usage_events")
    assert (totals.requests, totals.attempts, totals.errors, totals.cost_micros) == tuple(
        v or 0 for v in plain_totals)


@BOTH
async def test_a_late_settle_replaces_the_reconciled_row_and_books_the_real_spend(stores):
    ledger, budgets = stores
    lims, keys = limits()
    hold = await ledger.transact(reserve_op(budgets, 300, lims, keys))
    assert reconcile_all(budgets) == [hold.request_id]
    assert set(budgets.counters(keys).values()) == {(300, 0)}  # booked at worst case
    assert table(ledger.engine, "SELECT error_class, attempt FROM usage_events") == [
        ("Reconciled", 1)]

    result = await ledger.transact(budgets.settle_op(hold, spent_micros=100,
                                                     rows=[row(hold.request_id, 100)]))
    assert result.crossings == []
    assert set(budgets.counters(keys).values()) == {(100, 0)}
    assert table(ledger.engine, "SELECT request_id, attempt, status, error_class, cost_micros "
                                "FROM usage_events") == [(hold.request_id, 1, "ok", None, 100)]
    assert table(ledger.engine, "SELECT state, settled_micros FROM reservations") == [
        ("settled", 100)]
    assert_rollup_matches_ledger(ledger.engine)
    # Reconcile again, settle again: nothing moves twice.
    assert reconcile_all(budgets) == []
    await ledger.transact(budgets.settle_op(hold, spent_micros=100, rows=[]))
    assert set(budgets.counters(keys).values()) == {(100, 0)}


@BOTH
async def test_a_batch_of_open_and_reconciled_holds_settles_each_as_alone(stores):
    ledger, budgets = stores
    lims, keys = limits()
    early = await asyncio.gather(*(ledger.transact(reserve_op(budgets, 300, lims, keys))
                                   for _ in range(3)))
    assert len(reconcile_all(budgets)) == 3  # 900 booked
    fresh = await ledger.transact(reserve_op(budgets, 300, lims, keys))
    assert set(budgets.counters(keys).values()) == {(900, 300)}
    # One settles, one is released having cost nothing, one has its hold settled twice
    # (the second moves nothing), and the open one settles as usual: one batch.
    settles = [(early[0], 100, "settled"), (early[1], 0, "released"), (early[2], 50, "settled"),
               (early[2], 50, "settled"), (fresh, 70, "settled")]
    outcomes = await asyncio.gather(*(ledger.transact(budgets.settle_op(
        hold, spent_micros=spent, state=state,
        rows=[row(hold.request_id, spent) | {"attempt": n}] if spent else []))
        for n, (hold, spent, state) in enumerate(settles, 1)), return_exceptions=True)
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    assert set(budgets.counters(keys).values()) == {(100 + 50 + 70, 0)}
    assert table(ledger.engine, "SELECT count(*) FROM usage_events WHERE "
                                "error_class = 'Reconciled'") == [(0,)]
    assert sorted(table(ledger.engine, "SELECT request_id, state, settled_micros "
                                       "FROM reservations")) == sorted([
        (early[0].request_id, "settled", 100), (early[1].request_id, "released", 0),
        (early[2].request_id, "settled", 50), (fresh.request_id, "settled", 70)])
    [(ledger_sum,)] = table(ledger.engine, "SELECT SUM(cost_micros) FROM usage_events")
    assert ledger_sum == 100 + 50 + 50 + 70  # the second settle's row is kept, as before
    assert_rollup_matches_ledger(ledger.engine)


@pytest.mark.parametrize(("ledger_url", "returning"), [
    ("sqlite", True), ("sqlite", False), ("postgresql", True)], indirect=["ledger_url"],
    ids=["sqlite", "sqlite<3.35", "postgresql"])
async def test_a_late_settle_that_spends_past_the_warn_threshold_warns_once(stores, returning):
    ledger, budgets = stores
    if not returning:  # SQLite without RETURNING too
        budgets.db._returning = False
    lims, keys = limits()  # 10_000 each, warn at 8_000
    hold = await ledger.transact(reserve_op(budgets, 1_000, lims, keys))
    reconcile_all(budgets)
    result = await ledger.transact(budgets.settle_op(hold, spent_micros=9_000,
                                                     rows=[row(hold.request_id, 9_000)]))
    assert sorted(c.spent_micros for c in result.crossings) == [9_000] * 3
    assert set(budgets.counters(keys).values()) == {(9_000, 0)}


@BOTH
async def test_a_late_settle_that_fails_leaves_the_reconcile_standing(stores):
    ledger, budgets = stores
    lims, keys = limits()
    hold = await ledger.transact(reserve_op(budgets, 300, lims, keys))
    reconcile_all(budgets)
    bad = row(hold.request_id, 100) | {"status": "no such status"}  # a CHECK fails
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        await ledger.transact(budgets.settle_op(hold, spent_micros=100, rows=[bad]))
    assert set(budgets.counters(keys).values()) == {(300, 0)}
    assert table(ledger.engine, "SELECT error_class FROM usage_events") == [("Reconciled",)]
    assert table(ledger.engine, "SELECT state FROM reservations") == [("reconciled",)]
    assert_rollup_matches_ledger(ledger.engine)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_0008_steps_back_to_the_settles_of_0006(ledger_url: str) -> None:
    def functions() -> dict[str, str]:
        engine = make_engine(ledger_url)
        try:
            with engine.connect() as conn:
                return dict(conn.execute(text(  # type: ignore[arg-type]
                    "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'llmgw%'")).all())
        finally:
            engine.dispose()

    late = {"llmgw_take_back", "llmgw_drop_reconciled"}
    upgrade(ledger_url, "0010")
    found = functions()
    assert late <= found.keys()
    assert all("llmgw_take_back" in found[f] for f in ("llmgw_settle", "llmgw_settle_many"))
    downgrade(ledger_url, "0007")
    found = functions()
    assert not late & found.keys()
    assert not any("llmgw_take_back" in found[f] for f in ("llmgw_settle", "llmgw_settle_many"))
    upgrade(ledger_url)
    assert late <= functions().keys()
