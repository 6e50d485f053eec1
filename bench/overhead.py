"""What llmgw adds on top of LiteLLM's Router, per request.

Against one loopback OpenAI simulator (its own process), sequential calls, interleaved rounds:
  (a) raw httpx POST /v1/chat/completions
  (b) bare `Router.acompletion` (the gateway's own Router instance)
  (c) `LLMGateway.complete` with the SQLite ledger on (WAL)
Prints p50/p95/p99 of each, the ratio (c)/(b) and (c)-(b). Target: (c)-(b) <= 0.5 ms at p50.

The Anthropic Messages path, against one loopback Anthropic simulator (its own process), the
deployment a real Claude model name (`anthropic/claude-sonnet-4-5`) so LiteLLM takes its native
Messages path, same options:
  (d) bare `Router.aanthropic_messages`
  (e) `LLMGateway.anthropic_messages`, the config of (c): SQLite ledger on, no budgets
  (f) the same with budgets on (bench/load.py's: a request cap + project day, month, agent day)
Prints the same table and the ratios (e)/(d), (f)/(d).

The OpenAI Responses path, against one loopback OpenAI simulator's `POST /v1/responses` (its own
process), the deployment `openai/gpt-5` so LiteLLM takes its native Responses path, same options:
  (g) bare `Router.aresponses`
  (h) `LLMGateway.responses`, the config of (c) (`store` on by default: it also keeps each answer)
  (i) the same with budgets on
Prints the same table and the ratios (h)/(g), (i)/(g).

    .venv/bin/python bench/overhead.py [--requests 400] [--rounds 4] [--only chat|messages|responses]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from llmgw._litellm import set_offline_env

set_offline_env()

import httpx  # noqa: E402

from llmgw.config.loading import config_from_dict  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402

KEY = "sk-bench-key-000000"
MESSAGES = [{"role": "user", "content": "Say something short."}]
SIM_SCRIPT = (
    "import sys; from llmgw.sim import OpenAISim; s = OpenAISim(api_key=sys.argv[1]).start(); "
    "print(s.base_url, flush=True); sys.stdin.read()"
)
ANTHROPIC_KEY = "sk-ant-bench-key-000000"
ANTHROPIC_SIM_SCRIPT = SIM_SCRIPT.replace("OpenAISim", "AnthropicSim")
ANTHROPIC_MODEL = "anthropic/claude-sonnet-4-5"  # a Claude name: LiteLLM's native Messages path
MAX_TOKENS = 256  # Messages requires it; both paths send it, the gateway reserves for it
RESPONSES_MODEL = "openai/gpt-5"  # an OpenAI deployment: LiteLLM's native Responses path
RESPONSES_INPUT = MESSAGES[0]["content"]
BUDGETS = {"per_request_usd": 1.00,  # bench/load.py's, as a user would run them
           "projects": {"*": {"daily_usd": 50, "monthly_usd": 1000, "warn_at": 0.8}},
           "agents": {"*": {"daily_usd": 10}}}
WARM_UP = 30  # calls per path before measuring: connections, caches, first-call costs


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def start_sim(script: str, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """A simulator in its own process (so the bench's loop runs only the client side) and
    the base URL it printed; `stop_sim` ends it."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, *args,
                                                stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    return proc, (await proc.stdout.readline()).decode().strip()


async def stop_sim(proc: asyncio.subprocess.Process) -> None:
    """The simulator's script exits when its stdin closes."""
    assert proc.stdin is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 10)


async def main(requests: int, rounds: int, only: str | None = None) -> None:
    if only in (None, "chat"):
        sim, base = await start_sim(SIM_SCRIPT, KEY)
        try:
            await run(base, requests, rounds)
        finally:
            await stop_sim(sim)
    if only in (None, "messages"):
        if only is None:
            print()
        sim, base = await start_sim(ANTHROPIC_SIM_SCRIPT, ANTHROPIC_KEY)
        try:
            await run_messages(base, requests, rounds)
        finally:
            await stop_sim(sim)
    if only in (None, "responses"):
        if only is None:
            print()
        sim, base = await start_sim(SIM_SCRIPT, KEY)
        try:
            await run_responses(base, requests, rounds)
        finally:
            await stop_sim(sim)


def ledger_url() -> str:
    """A fresh migrated SQLite ledger (WAL) in its own temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    url = f"sqlite:///{tmp / 'ledger.db'}"
    upgrade(url)
    return url


async def measure(paths: dict[str, Callable[[], Awaitable[None]]], requests: int,
                  rounds: int) -> tuple[int, dict[str, list[float]]]:
    """Warm every path up, then `rounds` rounds of each path in turn, one request at a time;
    the per-path count and the samples in ms."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        for _ in range(WARM_UP):
            await fn()
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                await fn()
                samples[name].append((time.perf_counter() - t0) * 1000)
    return per_round * rounds, samples


def print_table(samples: dict[str, list[float]]) -> None:
    width = max(28, *(len(name) for name in samples))
    print(f"{'path':{width}} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in samples.items():
        print(f"{name:{width}} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {pct(values, 99):8.3f} "
              f"{statistics.fmean(values):8.3f}")


def print_ratio(label: str, over: list[float], under: list[float]) -> None:
    print(f"ratio {label} p50: {pct(over, 50) / pct(under, 50):.3f}   "
          f"p95: {pct(over, 95) / pct(under, 95):.3f}   p99: {pct(over, 99) / pct(under, 99):.3f}   "
          f"delta p50: {pct(over, 50) - pct(under, 50):+.3f} ms")


async def run(base: str, requests: int, rounds: int) -> None:
    from llmgw.gateway import LLMGateway

    cfg = config_from_dict({
        "model_list": [{"model_name": "g", "litellm_params": {
            "model": "openai/bench", "api_base": base + "/v1", "api_key": KEY},
            "model_info": {"id": "bench", "input_cost_per_token": 0.000001,
                           "output_cost_per_token": 0.000002}}],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "llmgw": {"default_group": "g", "ledger": {"url": ledger_url()},
                  "cache": {"backend": "none"}},  # every call must reach the provider
    })
    gw = LLMGateway(cfg)
    client = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"})

    async def raw() -> None:
        r = await client.post("/v1/chat/completions", json={"model": "bench", "messages": MESSAGES})
        r.raise_for_status()

    async def router() -> None:
        await gw.router.acompletion(model="g", messages=MESSAGES)

    async def gateway() -> None:
        await gw.complete("bench-agent", "bench-project", MESSAGES)

    paths = {"(a) raw httpx": raw, "(b) Router.acompletion": router, "(c) LLMGateway.complete": gateway}
    count, samples = await measure(paths, requests, rounds)
    await client.aclose()
    gw.close()

    print(f"{count} sequential requests per path, {rounds} interleaved rounds, "
          f"simulator in its own process\n")
    print_table(samples)
    b, c = samples["(b) Router.acompletion"], samples["(c) LLMGateway.complete"]
    print(f"\nratio (c)/(b) p50: {pct(c, 50) / pct(b, 50):.3f}   p95: {pct(c, 95) / pct(b, 95):.3f}   "
          f"p99: {pct(c, 99) / pct(b, 99):.3f}")
    delta = pct(c, 50) - pct(b, 50)
    print(f"(c)-(b) at p50: {delta:+.3f} ms  (target <= 0.5 ms: {'met' if delta <= 0.5 else 'NOT met'})")


def messages_config(base: str, budgets: dict[str, Any] | None) -> Any:
    """(c)'s config with one Anthropic deployment (Sonnet's list prices, explicit as (c)'s)."""
    return config_from_dict({
        "model_list": [{"model_name": "anth", "litellm_params": {
            "model": ANTHROPIC_MODEL, "api_base": base, "api_key": ANTHROPIC_KEY},
            "model_info": {"id": "bench-anth", "input_cost_per_token": 0.000003,
                           "output_cost_per_token": 0.000015}}],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "llmgw": {"default_group": "anth", "ledger": {"url": ledger_url()},
                  "cache": {"backend": "none"},  # every call must reach the provider
                  **({"budgets": budgets} if budgets else {})},
    })


async def run_messages(base: str, requests: int, rounds: int) -> None:
    from llmgw.gateway import LLMGateway

    plain = LLMGateway(messages_config(base, None))
    budgeted = LLMGateway(messages_config(base, BUDGETS))
    body = {"model": "anth", "max_tokens": MAX_TOKENS, "messages": MESSAGES}

    async def router() -> None:
        await plain.router.aanthropic_messages(model="anth", max_tokens=MAX_TOKENS, messages=MESSAGES)

    async def gateway() -> None:
        await plain.anthropic_messages("bench-agent", "bench-project", body)

    async def gateway_budgets() -> None:
        await budgeted.anthropic_messages("bench-agent", "bench-project", body)

    first = await plain.anthropic_messages("bench-agent", "bench-project", body)
    assert first.body["type"] == "message", first.body  # the native path answered
    paths = {"(d) Router.aanthropic_messages": router,
             "(e) LLMGateway.anthropic_messages": gateway,
             "(f) (e) with budgets on": gateway_budgets}
    count, samples = await measure(paths, requests, rounds)
    await plain.aclose()
    await budgeted.aclose()

    print(f"Anthropic Messages ({ANTHROPIC_MODEL}, max_tokens {MAX_TOKENS}): {count} sequential "
          f"requests per path, {rounds} interleaved rounds, simulator in its own process\n")
    print_table(samples)
    d = samples["(d) Router.aanthropic_messages"]
    print()
    print_ratio("(e)/(d)", samples["(e) LLMGateway.anthropic_messages"], d)
    print_ratio("(f)/(d)", samples["(f) (e) with budgets on"], d)


def responses_config(base: str, budgets: dict[str, Any] | None) -> Any:
    """(c)'s config with one OpenAI `gpt-5` deployment (prices explicit, as (c)'s)."""
    return config_from_dict({
        "model_list": [{"model_name": "resp", "litellm_params": {
            "model": RESPONSES_MODEL, "api_base": base + "/v1", "api_key": KEY},
            "model_info": {"id": "bench-resp", "input_cost_per_token": 0.00000125,
                           "output_cost_per_token": 0.00001}}],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "llmgw": {"default_group": "resp", "ledger": {"url": ledger_url()},
                  "cache": {"backend": "none"},  # every call must reach the provider
                  **({"budgets": budgets} if budgets else {})},
    })


async def run_responses(base: str, requests: int, rounds: int) -> None:
    from llmgw.gateway import LLMGateway

    plain = LLMGateway(responses_config(base, None))
    budgeted = LLMGateway(responses_config(base, BUDGETS))
    # No `store` field: the gateway as users run it keeps every answer (one more ledger write).
    body = {"model": "resp", "input": RESPONSES_INPUT, "max_output_tokens": MAX_TOKENS}

    async def router() -> None:
        await plain.router.aresponses(model="resp", input=RESPONSES_INPUT, max_output_tokens=MAX_TOKENS)

    async def gateway() -> None:
        await plain.responses("bench-agent", "bench-project", body)

    async def gateway_budgets() -> None:
        await budgeted.responses("bench-agent", "bench-project", body)

    first = await plain.responses("bench-agent", "bench-project", body)
    assert first.body["object"] == "response", first.body  # the native path answered
    assert await plain.stored_response("bench-project", first.body["id"])  # and it was stored
    paths = {"(g) Router.aresponses": router,
             "(h) LLMGateway.responses": gateway,
             "(i) (h) with budgets on": gateway_budgets}
    count, samples = await measure(paths, requests, rounds)
    await plain.aclose()
    await budgeted.aclose()

    print(f"OpenAI Responses ({RESPONSES_MODEL}, max_output_tokens {MAX_TOKENS}, store on): {count} "
          f"sequential requests per path, {rounds} interleaved rounds, simulator in its own process\n")
    print_table(samples)
    g = samples["(g) Router.aresponses"]
    print()
    print_ratio("(h)/(g)", samples["(h) LLMGateway.responses"], g)
    print_ratio("(i)/(g)", samples["(i) (h) with budgets on"], g)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--only", choices=("chat", "messages", "responses"), default=None,
                    help="run only the chat completions part (a-c), the Anthropic Messages part (d-f) "
                         "or the OpenAI Responses part (g-i)")
    args = ap.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.only))
