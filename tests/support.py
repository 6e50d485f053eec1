"""Helpers for tests that run the gateway against the loopback simulators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine, select

from llmgw.config.loading import config_from_dict
from llmgw.config.models import Config
from llmgw.ledger.models import UsageEvent

OPENAI_KEY = "sk-sim-openai-SECRET-0123456789"
ANTHROPIC_KEY = "sk-ant-sim-SECRET-9876543210"
WRONG_KEY = "sk-ant-wrong-SECRET-5555555555"

PRICES = {  # deployment id -> (input, output) dollars per token
    "primary-anthropic": (Decimal("0.000003"), Decimal("0.000015")),
    "backup-openai": (Decimal("0.000001"), Decimal("0.000002")),
    "solo-openai": (Decimal("0.0000004"), Decimal("0.0000016")),
    "auth-anthropic": (Decimal("0.000003"), Decimal("0.000015")),
    "auth-openai": (Decimal("0.000001"), Decimal("0.000002")),
}


def _deployment(group: str, dep_id: str, model: str, api_base: str, key: str) -> dict[str, Any]:
    inp, out = PRICES[dep_id]
    return {"model_name": group,
            "litellm_params": {"model": model, "api_base": api_base, "api_key": key},
            "model_info": {"id": dep_id, "input_cost_per_token": str(inp),
                           "output_cost_per_token": str(out)}}


def sim_config_dict(openai_url: str, anthropic_url: str, ledger_url: str,
                    **router_settings: Any) -> dict[str, Any]:
    """Groups: primary (Anthropic) -> backup (OpenAI); solo (OpenAI, no fallback);
    authg (Anthropic, wrong key) -> backup; autho (OpenAI, wrong key) -> primary."""
    return {
        "model_list": [
            _deployment("primary", "primary-anthropic", "anthropic/claude-sim", anthropic_url,
                        ANTHROPIC_KEY),
            _deployment("backup", "backup-openai", "openai/gpt-sim", openai_url + "/v1", OPENAI_KEY),
            _deployment("solo", "solo-openai", "openai/solo-sim", openai_url + "/v1", OPENAI_KEY),
            _deployment("authg", "auth-anthropic", "anthropic/claude-auth", anthropic_url, WRONG_KEY),
            _deployment("autho", "auth-openai", "openai/gpt-auth", openai_url + "/v1", WRONG_KEY),
        ],
        "router_settings": {"num_retries": 0,
                            "fallbacks": [{"primary": ["backup"]}, {"authg": ["backup"]},
                                          {"autho": ["primary"]}],
                            **router_settings},
        # No answer cache here: these tests repeat requests on purpose (tests/integration/
        # test_cache_gateway.py turns it on).
        "llmgw": {"default_group": "backup",
                  "agent_types": {"software-architect": "primary", "qa-engineer": "backup"},
                  "ledger": {"url": ledger_url}, "cache": {"backend": "none"}},
    }


def sim_config(openai_url: str, anthropic_url: str, ledger_url: str, **rs: Any) -> Config:
    return config_from_dict(sim_config_dict(openai_url, anthropic_url, ledger_url, **rs))


def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every usage_events row, oldest first, as plain dicts."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            result = conn.execute(select(UsageEvent.__table__).order_by(UsageEvent.__table__.c.id))
            return [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def expected_cost_micros(dep_id: str, prompt_tokens: int, completion_tokens: int) -> int:
    """Tokens x configured prices in exact decimal arithmetic, rounded once."""
    inp, out = PRICES[dep_id]
    exact = (prompt_tokens * inp + completion_tokens * out) * 1_000_000
    return int(exact.quantize(Decimal(1)))


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Await a condition the system under test makes true on this loop or another thread:
    polled with a deadline, so a test never stands a fixed sleep in for synchronization."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually_async(condition: Callable[[], Awaitable[object]], what: str,
                           timeout_s: float = 30.0) -> None:
    """`eventually` for a condition that must be awaited (e.g. a Redis read)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
