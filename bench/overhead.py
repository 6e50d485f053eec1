"""What llmgw adds on top of LiteLLM's Router, per request.

Against one loopback OpenAI simulator (its own process), sequential calls, interleaved rounds:
  (a) raw httpx POST /v1/chat/completions
  (b) bare `Router.acompletion` (the gateway's own Router instance)
  (c) `LLMGateway.complete` with the SQLite ledger on (WAL)
Prints p50/p99 of each, the ratio (c)/(b) and (c)-(b). Target: (c)-(b) <= 0.5 ms at p50.

    .venv/bin/python bench/overhead.py [--requests 400] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from llmgw._litellm import set_offline_env

set_offline_env()

import httpx  # noqa: E402

from llmgw.config import config_from_dict  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402

KEY = "sk-bench-key-000000"
MESSAGES = [{"role": "user", "content": "Say something short."}]
SIM_SCRIPT = (
    "import sys; from llmgw.sim import OpenAISim; s = OpenAISim(api_key=sys.argv[1]).start(); "
    "print(s.base_url, flush=True); sys.stdin.read()"
)


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


async def main(requests: int, rounds: int) -> None:
    sim, base = await start_sim(SIM_SCRIPT, KEY)
    try:
        await run(base, requests, rounds)
    finally:
        await stop_sim(sim)


async def run(base: str, requests: int, rounds: int) -> None:
    from llmgw.gateway import LLMGateway

    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    upgrade(ledger)
    cfg = config_from_dict({
        "model_list": [{"model_name": "g", "litellm_params": {
            "model": "openai/bench", "api_base": base + "/v1", "api_key": KEY},
            "model_info": {"id": "bench", "input_cost_per_token": 0.000001,
                           "output_cost_per_token": 0.000002}}],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "llmgw": {"default_group": "g", "ledger": {"url": ledger},
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
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():  # warm up connections, caches, first-call costs
        for _ in range(30):
            await fn()
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                await fn()
                samples[name].append((time.perf_counter() - t0) * 1000)
    await client.aclose()
    gw.close()

    print(f"{per_round * rounds} sequential requests per path, {rounds} interleaved rounds, "
          f"simulator in its own process\n")
    print(f"{'path':28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in samples.items():
        print(f"{name:28} {pct(values, 50):8.3f} {pct(values, 99):8.3f} "
              f"{statistics.fmean(values):8.3f}")
    b, c = samples["(b) Router.acompletion"], samples["(c) LLMGateway.complete"]
    print(f"\nratio (c)/(b) p50: {pct(c, 50) / pct(b, 50):.3f}   p99: {pct(c, 99) / pct(b, 99):.3f}")
    delta = pct(c, 50) - pct(b, 50)
    print(f"(c)-(b) at p50: {delta:+.3f} ms  (target <= 0.5 ms: {'met' if delta <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    asyncio.run(main(args.requests, args.rounds))
