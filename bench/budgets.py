"""The budget check must not grow with the ledger, and must cost little per request.

1. p50 / p99 of one reserve and one settle (BudgetStore, SQLite WAL) with 10, 10^4 and 10^6
   rows in usage_events (flat is the target: the check reads counter rows, never the ledger).
2. LLMGateway.complete against a loopback OpenAI simulator (own process), budgets off vs on
   (a project daily and monthly limit + an agent daily limit: 4 counters per request).

    .venv/bin/python bench/budgets.py [--sizes 10,10000,1000000] [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from overhead import KEY, MESSAGES, SIM_SCRIPT, pct, start_sim, stop_sim

from llmgw._litellm import set_offline_env

set_offline_env()

from llmgw.budgets.rules import BudgetPolicy, CounterKey, Limit  # noqa: E402
from llmgw.config.loading import config_from_dict  # noqa: E402
from llmgw.config.models import BudgetSettings
from llmgw.ledger.budgets import BudgetStore  # noqa: E402
from llmgw.ledger.engine import make_engine  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402


def fill(url: str, rows: int) -> None:
    """Bulk rows over 30 days, 50 projects, 500 agents (driver-level executemany)."""
    engine = make_engine(url)
    start = datetime(2026, 10, 24)
    sql = ("INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, project_id, "
           "model_group, deployment_id, provider, model, status, prompt_tokens, "
           "completion_tokens, cache_read_tokens, cost_micros, saved_micros, latency_ms, stream) "
           "VALUES (?, 1, ?, ?, 'qa', ?, 'g', 'd', 'openai', 'openai/m', 'ok', 10, 20, 0, 50, 0, "
           "5.0, 0)")
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        for base in range(0, rows, 50_000):
            batch = [(f"bulk-{i}", (start + timedelta(seconds=i * 2.6)).isoformat(" "),
                      f"agent-{i % 500}", f"proj-{i % 50}")
                     for i in range(base, min(rows, base + 50_000))]
            cur.executemany(sql, batch)
            conn.commit()
    finally:
        conn.close()
        engine.dispose()


def check_latency(url: str, n: int = 2000) -> tuple[list[float], list[float]]:
    engine = make_engine(url)
    store = BudgetStore(engine)
    policy = BudgetPolicy(BudgetSettings())
    now = datetime(2026, 11, 23, 12)
    limits = [Limit("project", "proj-1", "day", 10**12, 0.8),
              Limit("project", "proj-1", "month", 10**12, 0.8),
              Limit("agent", "agent-1", "day", 10**12, 0.8),
              Limit("global", "*", "month", 10**12, 0.8)]
    keys = [CounterKey(x.scope, x.scope_id, x.period, policy.period_start(now, x.period))
            for x in limits]
    reserve, settle = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        hold = store.reserve(request_id=uuid.uuid4().hex, amount_micros=500, limits=limits,
                             keys=keys, created_at=now, agent_id="agent-1", agent_type="qa",
                             project_id="proj-1", model_group="g")
        t1 = time.perf_counter()
        store.settle(hold, spent_micros=120, rows=[])
        t2 = time.perf_counter()
        reserve.append((t1 - t0) * 1000)
        settle.append((t2 - t1) * 1000)
    engine.dispose()
    return reserve, settle


async def gateway_on_off(requests: int) -> dict[str, list[float]]:
    from llmgw.gateway import LLMGateway

    sim, base = await start_sim(SIM_SCRIPT, KEY)
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    out: dict[str, list[float]] = {"budgets off": [], "budgets on": []}
    gws = {}
    try:
        for name, budgets in (("budgets off", {}), ("budgets on", {
                "projects": {"*": {"daily_usd": 1000, "monthly_usd": 10000}},
                "agents": {"*": {"daily_usd": 1000}}})):
            url = f"sqlite:///{tmp / (name.replace(' ', '-') + '.db')}"
            upgrade(url)
            gws[name] = LLMGateway(config_from_dict({
                "model_list": [{"model_name": "g", "litellm_params": {
                    "model": "openai/bench", "api_base": base + "/v1", "api_key": KEY},
                    "model_info": {"id": "bench", "input_cost_per_token": 0.000001,
                                   "output_cost_per_token": 0.000002}}],
                "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
                "llmgw": {"default_group": "g", "ledger": {"url": url}, "budgets": budgets,
                          "cache": {"backend": "none"}},
            }))
        for gw in gws.values():
            for _ in range(30):
                await gw.complete("bench-agent", "bench-project", MESSAGES, max_tokens=64)
        rounds = 6
        for _ in range(rounds):
            for name, gw in gws.items():
                for _ in range(requests // rounds):
                    t0 = time.perf_counter()
                    await gw.complete("bench-agent", "bench-project", MESSAGES, max_tokens=64)
                    out[name].append((time.perf_counter() - t0) * 1000)
    finally:
        for gw in gws.values():
            gw.close()
        await stop_sim(sim)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,10000,1000000")
    ap.add_argument("--requests", type=int, default=600)
    args = ap.parse_args()
    print("1. budget check vs ledger size (SQLite, 4 counters per request)\n")
    print(f"{'ledger rows':>12} {'fill s':>7} {'reserve p50':>12} {'p99':>7} "
          f"{'settle p50':>11} {'p99':>7}  (ms)")
    for size in (int(s) for s in args.sizes.split(",")):
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='llmgw-bench-')) / 'ledger.db'}"
        upgrade(url)
        t0 = time.perf_counter()
        fill(url, size)
        filled = time.perf_counter() - t0
        reserve, settle = check_latency(url)
        print(f"{size:>12,} {filled:7.1f} {pct(reserve, 50):12.3f} {pct(reserve, 99):7.3f} "
              f"{pct(settle, 50):11.3f} {pct(settle, 99):7.3f}")
    print("\n2. LLMGateway.complete, budgets off vs on (sequential, simulator in its own "
          "process)\n")
    res = asyncio.run(gateway_on_off(args.requests))
    for name, values in res.items():
        print(f"{name:12} p50 {pct(values, 50):7.3f} ms   p99 {pct(values, 99):7.3f} ms   "
              f"mean {statistics.fmean(values):7.3f} ms")
    delta = pct(res["budgets on"], 50) - pct(res["budgets off"], 50)
    print(f"budgets on - off at p50: {delta:+.3f} ms")


if __name__ == "__main__":
    main()
