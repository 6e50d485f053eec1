"""What a cache hit costs, on memory and on Redis.

1. The cache layer's own cost per hit (key = sha256 of canonical JSON, then `get`), next to
   a bare dict lookup. Targets: <= 0.1 ms (memory) and <= 0.5 ms (Redis) above the dict.
2. LLMGateway.complete end to end: a hit (memory, Redis) next to a miss (provider call on a
   loopback simulator in its own process). A hit still validates the call and writes its
   `cached` ledger row (SQLite), which is most of what it costs.

    .venv/bin/python bench/cache.py [--requests 400]   (needs redis-server on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from overhead import KEY, SIM_SCRIPT, pct, start_sim, stop_sim

from llmgw._litellm import set_offline_env

set_offline_env()

from llmgw.cache import CachedAnswer, cache_key  # noqa: E402
from llmgw.cache.backends import MemoryCache, RedisCache  # noqa: E402
from llmgw.config.loading import config_from_dict  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402
from llmgw.types import Usage  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are a careful reviewer."},
            {"role": "user", "content": "Review this function for race conditions: " + "x" * 400}]
PARAMS = {"max_tokens": 256, "temperature": 0}


def start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    from redis import Redis

    for _ in range(500):
        try:
            Redis.from_url(url).ping()
            return proc, url
        except Exception:
            time.sleep(0.01)
    raise RuntimeError("redis-server did not start")


async def layer(redis_url: str, n: int = 5000) -> None:
    answer = CachedAnswer(content="Looks safe. " * 40, usage=Usage(prompt_tokens=150,
                          completion_tokens=120), cost_micros=1200, model_group="g",
                          requested_group="g", request_id="r", created_at=datetime.now())
    key = cache_key("project:p", "g", MESSAGES, PARAMS)
    bare = {key: answer}
    memory, redis = MemoryCache(), RedisCache(redis_url)
    await memory.set(key, answer, 3600)
    await redis.set(key, answer, 3600)
    rows = {}
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        bare.get(cache_key("project:p", "g", MESSAGES, PARAMS))
        t.append((time.perf_counter() - t0) * 1000)
    rows["bare dict (key + lookup)"] = t
    for name, cache in (("MemoryCache (key + get)", memory), ("RedisCache (key + get)", redis)):
        t = []
        for _ in range(n if name.startswith("Memory") else n // 5):
            t0 = time.perf_counter()
            assert await cache.get(cache_key("project:p", "g", MESSAGES, PARAMS)) is not None
            t.append((time.perf_counter() - t0) * 1000)
        rows[name] = t
    await redis.aclose()
    print("1. the cache layer per hit\n")
    base = pct(rows["bare dict (key + lookup)"], 50)
    for name, t in rows.items():
        print(f"{name:28} p50 {pct(t, 50):7.4f} ms  p99 {pct(t, 99):7.4f} ms  "
              f"above bare dict {pct(t, 50) - base:+.4f} ms")


async def gateway(redis_url: str, requests: int) -> None:
    from llmgw.gateway import LLMGateway

    sim, base = await start_sim(SIM_SCRIPT, KEY)
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    results: dict[str, list[float]] = {}
    try:
        for name, cache in (("miss (provider call)", {"backend": "none"}),
                            ("hit, memory", {"backend": "memory"}),
                            ("hit, Redis", {"backend": "redis", "url": redis_url})):
            url = f"sqlite:///{tmp / (name.split()[0] + name.split()[-1] + '.db')}"
            upgrade(url)
            gw = LLMGateway(config_from_dict({
                "model_list": [{"model_name": "g", "litellm_params": {
                    "model": "openai/bench", "api_base": base + "/v1", "api_key": KEY},
                    "model_info": {"id": "bench", "input_cost_per_token": 0.000001,
                                   "output_cost_per_token": 0.000002}}],
                "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
                "llmgw": {"default_group": "g", "ledger": {"url": url}, "cache": cache}}))
            for _ in range(30):
                await gw.complete("a", "p", MESSAGES, **PARAMS)
            t = []
            for _ in range(requests):
                t0 = time.perf_counter()
                done = await gw.complete("a", "p", MESSAGES, **PARAMS)
                t.append((time.perf_counter() - t0) * 1000)
                assert done.cached == name.startswith("hit")
            results[name] = t
            await gw.aclose()
    finally:
        await stop_sim(sim)
    print("\n2. LLMGateway.complete (SQLite ledger, the hit's `cached` row included)\n")
    for name, t in results.items():
        print(f"{name:22} p50 {pct(t, 50):7.3f} ms  p99 {pct(t, 99):7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    proc, url = start_redis()
    try:
        asyncio.run(layer(url))
        asyncio.run(gateway(url, args.requests))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
