"""A hold reconciled while its request is still in flight: the late settle wins cleanly
. The caller gets its answer, the ledger keeps the real rows and no
`Reconciled` row, and every counter holds what the ledger sums to."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from llmgw.ledger.engine import make_engine
from llmgw.sim import FaultPlan
from tests.budgets.conftest import ANSWER_USAGE, assert_counters_match_ledger, sums
from tests.budgets.test_budgets_gateway import ASK, gateway_for
from tests.ledger.test_late_settle import assert_rollup_matches_ledger
from tests.support import expected_cost_micros, ledger_rows

ACTUAL = expected_cost_micros("solo-openai", 10, 100)
BUDGETS = {"projects": {"*": {"daily_usd": 1}}, "agents": {"*": {"daily_usd": 1}}}


class SettleGate:
    """Holds every settle the gateway starts on its ledger (our code: `settle_op` and
    `LedgerStore.start`) after the provider answered, until released."""

    def __init__(self, gw: Any, expected: int) -> None:
        self.expected = expected
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.release = asyncio.Event()
        self._ops: set[int] = set()
        settle_op, start = gw.budget_store.settle_op, gw.ledger.start

        def gated_settle_op(*args: Any, **kwargs: Any) -> Any:
            op = settle_op(*args, **kwargs)
            self._ops.add(id(op))
            return op

        async def released(op: Any, **kwargs: Any) -> Any:
            self.waiting += 1
            if self.waiting == self.expected:
                self.all_waiting.set()
            await self.release.wait()
            return await start(op, **kwargs)

        def gated_start(op: Any, **kwargs: Any) -> Any:
            if id(op) in self._ops:
                return asyncio.ensure_future(released(op, **kwargs))
            return start(op, **kwargs)

        gw.budget_store.settle_op = gated_settle_op
        gw.ledger.start = gated_start


@pytest.mark.parametrize("in_flight", [1, 3], ids=["alone", "batched"])
async def test_a_request_reconciled_in_flight_returns_and_its_real_rows_win(
        sims, migrated_ledger_url, in_flight):
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan(**ANSWER_USAGE))
    url = migrated_ledger_url
    gw = gateway_for(sims, url, BUDGETS)
    gate = SettleGate(gw, in_flight)
    try:
        tasks = [asyncio.ensure_future(gw.complete(f"dev-{i}", "proj-a", ASK, model_group="solo",
                                                   max_tokens=100)) for i in range(in_flight)]
        await asyncio.wait_for(gate.all_waiting.wait(), timeout=60)  # answered, not settled
        held = sums(url)["counters"][("project", "proj-a", "day")]
        assert held[0] == 0 and held[1] > in_flight * ACTUAL
        # An operator reconciles everything (forced): the holds are booked at worst case.
        assert len(await asyncio.to_thread(gw.reconcile, 0)) == in_flight
        booked = sums(url)
        assert booked["counters"][("project", "proj-a", "day")] == (held[1], 0)
        assert booked["statuses"] == {"error": in_flight}
        gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        await gw.aclose()
    assert [c.cost_micros for c in done] == [ACTUAL] * in_flight
    s = sums(url)
    assert s["statuses"] == {"ok": in_flight}
    assert s["counters"][("project", "proj-a", "day")] == (in_flight * ACTUAL, 0)
    assert s["ledger"] == {"proj-a": in_flight * ACTUAL}
    assert_counters_match_ledger(url)
    rows = ledger_rows(url)
    assert sorted(r["request_id"] for r in rows) == sorted(c.request_id for c in done)
    assert all(r["error_class"] is None for r in rows)
    engine = make_engine(url)
    try:
        assert_rollup_matches_ledger(engine)
        with engine.connect() as conn:
            assert set(conn.execute(text("SELECT state, settled_micros FROM reservations"))
                       ) == {("settled", ACTUAL)}
            if engine.dialect.name == "postgresql":  # one batch settled them all
                assert conn.execute(text("SELECT count(DISTINCT xmin::text) FROM usage_events")
                                    ).scalar_one() == 1
    finally:
        engine.dispose()
