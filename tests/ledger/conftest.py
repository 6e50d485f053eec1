"""Fixtures shared by the ledger's tests."""

from __future__ import annotations

import pytest

from llmgw.ledger.budgets import BudgetStore
from llmgw.ledger.store import LedgerStore


@pytest.fixture
async def stores(migrated_ledger_url: str):
    """A `LedgerStore` over the migrated ledger, and a `BudgetStore` on its engine."""
    ledger = LedgerStore(migrated_ledger_url)
    yield ledger, BudgetStore(ledger.engine)
    ledger.dispose()
