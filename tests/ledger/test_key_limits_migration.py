"""Migration 0017: api_keys' limits and rotation columns, up, down and up again on both
databases; keys made before it keep working after each step."""

from __future__ import annotations

from sqlalchemy import inspect

from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import current, downgrade, upgrade

NEW = {"rpm", "tpm", "max_parallel", "rotated_to", "lineage_id"}


def _columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("api_keys")}
    finally:
        engine.dispose()


def test_0017_up_down_up(ledger_url):
    upgrade(ledger_url, "0016")
    assert not NEW & _columns(ledger_url)
    upgrade(ledger_url)
    assert current(ledger_url) == "0017" and NEW <= _columns(ledger_url)
    engine = make_engine(ledger_url)
    try:
        store = ApiKeyStore(engine)
        limited = store.create(project_id="p", agent_id="a", rpm=10, max_parallel=2)
        assert store.authenticate(limited.secret).rpm == 10
        downgrade(ledger_url, "0016")
        assert not NEW & _columns(ledger_url)
        upgrade(ledger_url)
        kept = store.authenticate(limited.secret)  # the key survives; its limits were dropped
        assert kept is not None and (kept.rpm, kept.max_parallel) == (None, None)
    finally:
        engine.dispose()
