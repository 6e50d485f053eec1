"""`llmgw usage explain REQUEST_ID`: each attempt's arithmetic from the rates its row was
priced at, summing to the micro-dollars the row holds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal

from llmgw.config.loading import config_from_dict
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, ledger_rows


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "llmgw.cli", *args],
                                   capture_output=True, text=True, timeout=60)


async def test_explain_shows_every_kind_through_its_rate_to_the_row(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    _, anthropic_sim = sims
    anthropic_sim.set_plan(FaultPlan(prompt_tokens=10_100, cached_tokens=8000,
                                     cache_write_5m_tokens=1500, cache_write_1h_tokens=500,
                                     completion_tokens=50))
    gw = LLMGateway(config_from_dict({
        "model_list": [{"model_name": "anth", "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5", "api_base": anthropic_sim.base_url,
            "api_key": ANTHROPIC_KEY},
            "model_info": {"id": "anth", "input_cost_per_token": 0.000003,
                           "output_cost_per_token": 0.000015}}],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "anth", "ledger": {"url": migrated_ledger_url},
                  "cache": {"backend": "none"}}}))
    try:
        done = await gw.anthropic_messages("dev-1", "p", {
            "model": "anth", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]})
    finally:
        await gw.aclose()
    (row,) = ledger_rows(migrated_ledger_url)
    assert row["rates"]["cache_write_1h"] == "0.000006"  # LiteLLM's map, kept on the row
    out = await _cli("usage", "explain", done.request_id, "--format", "json",
                     "--ledger-url", migrated_ledger_url)
    assert out.returncode == 0, out.stderr
    (attempt,) = json.loads(out.stdout)
    lines = {ln["kind"]: ln for ln in attempt["lines"]}
    assert {k: ln["tokens"] for k, ln in lines.items()} == {
        "input": 100, "cache_read": 8000, "cache_write": 1500, "cache_write_1h": 500,
        "output": 50}
    assert sum(Decimal(ln["micros"]) for ln in lines.values()) == Decimal("12075")
    assert attempt["computed_micros"] == attempt["recorded_micros"] == row["cost_micros"] == 12075
    missing = await _cli("usage", "explain", "no-such-id", "--ledger-url", migrated_ledger_url)
    assert missing.returncode != 0 and "No request 'no-such-id'" in missing.stderr
