"""The SQL cost ledger: models, engines, migrations and usage reports."""

from llmgw.ledger.engine import DEFAULT_LEDGER_URL, make_engine, resolve_ledger_url, safe_url
from llmgw.ledger.migrate import current, downgrade, ensure_current, head, upgrade
from llmgw.ledger.report import GROUP_BY_VALUES, GroupBy, ReportRow, usage_report, usage_totals

__all__ = [
    "DEFAULT_LEDGER_URL",
    "GROUP_BY_VALUES",
    "GroupBy",
    "ReportRow",
    "current",
    "downgrade",
    "ensure_current",
    "head",
    "make_engine",
    "resolve_ledger_url",
    "safe_url",
    "upgrade",
    "usage_report",
    "usage_totals",
]
