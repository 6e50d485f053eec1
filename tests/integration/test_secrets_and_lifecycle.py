"""API keys never reach the ledger, logs or errors; sync wrapper; unmigrated ledger."""

from __future__ import annotations

import io
import logging

import pytest

from llmgw.errors import AllDeploymentsFailed, AuthenticationFailed, LedgerError, LLMGatewayError
from llmgw.redact import LOGGERS_TO_SCRUB
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY, ledger_rows, sim_config

SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY, "SECRET")
HELLO = [{"role": "user", "content": "hello"}]


async def test_no_api_key_in_ledger_logs_or_errors(sims, migrated_ledger_url, monkeypatch, capfd):
    from llmgw.gateway import LLMGateway

    monkeypatch.setenv("LLMGW_LITELLM_LOG_LEVEL", "DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", *LOGGERS_TO_SCRUB)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    openai_sim, anthropic_sim = sims
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    errors: list[LLMGatewayError] = []
    try:
        await gw.complete("a", "p", HELLO, model_group="primary")            # ok
        anthropic_sim.set_plan(FaultPlan.error(500))
        await gw.complete("a", "p", HELLO, model_group="primary")            # fallback
        openai_sim.set_plan(FaultPlan.error(503))
        with pytest.raises(AllDeploymentsFailed) as e1:
            await gw.complete("a", "p", HELLO, model_group="primary")
        with pytest.raises(AuthenticationFailed) as e2:
            await gw.complete("a", "p", HELLO, model_group="authg")          # wrong key
        errors += [e1.value, e2.value]
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        await gw.aclose()

    logged = stream.getvalue()
    assert "Falling back" in logged or "fallback" in logged.lower()  # LiteLLM's debug logs were captured
    out, err = capfd.readouterr()
    rows = ledger_rows(migrated_ledger_url)
    assert len(rows) == 6  # ok; error+ok; error+error; auth error
    texts = {
        "ledger": repr(rows),
        "logs": logged,
        "stdout/stderr": out + err,
        "errors": " ".join(str(e) + repr(e) + repr(e.attempts) for e in errors),
    }
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {where}"


def test_complete_sync_for_scripts(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(answer="sync works"))
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    try:
        first = gw.complete_sync("a", "p", HELLO, model_group="backup")
        second = gw.complete_sync("a", "p", HELLO, model_group="backup")  # a second event loop
    finally:
        gw.close()
    assert first.content == second.content == "sync works"
    assert [r["status"] for r in ledger_rows(migrated_ledger_url)] == ["ok", "ok"]


def test_unmigrated_ledger_fails_at_start_with_the_fix(sims, ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    with pytest.raises(LedgerError, match="llmgw db upgrade"):
        LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, ledger_url))
