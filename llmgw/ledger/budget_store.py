"""Moved to `llmgw.ledger.budgets` (one module per database). This name stays only until the
importers outside the ledger are rewritten (issue 34's restructure); import from there."""

from llmgw.ledger.budgets import (
    BudgetStore,
    Crossing,
    Hold,
    Refusal,
    RefusedError,
    SettleResult,
)

__all__ = ["BudgetStore", "Crossing", "Hold", "Refusal", "RefusedError", "SettleResult"]
