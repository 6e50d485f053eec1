"""What the HTTP front (`llmgw serve`) costs over calling the gateway in-process.

One loopback OpenAI simulator (its own process). In the same run, interleaved rounds of:
  (a) in-process: 100 concurrent tasks calling `LLMGateway.complete`
  (b) HTTP: 100 concurrent `openai.AsyncOpenAI` clients against `llmgw serve` (one worker,
      its own process), each with an agent key
Each has its own SQLite ledger. Prints req/s, p50 and p99 per path and round, the CPU each
process spent per request (the server's own, apart from the clients'), then one client at a
time (the latency the front adds, without queueing), the medians and the verdicts. Targets
(issue 21): (b) adds <= 1.0 ms at p50 and keeps >= 85 % of (a)'s throughput.

    .venv/bin/python bench/http_front.py [--clients 100] [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is sys.path[0], where its own name shadows the
# standard library's `http` package (httpx, uvicorn and the SDKs import it).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time

from llmgw._litellm import set_offline_env

set_offline_env()

import httpx  # noqa: E402
import yaml  # noqa: E402

from llmgw.config.loading import config_from_dict  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402

KEY = "sk-bench-key-000000"
MESSAGES = [{"role": "user", "content": "Say something short."}]
SIM_SCRIPT = (
    "import sys; from llmgw.sim import OpenAISim; s = OpenAISim(api_key=sys.argv[1]).start(); "
    "print(s.base_url, flush=True); sys.stdin.read()"
)
REPO = Path(__file__).resolve().parents[1]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def config_dict(base: str, ledger: str) -> dict:
    return {
        "model_list": [{"model_name": "g", "litellm_params": {
            "model": "openai/bench", "api_base": base + "/v1", "api_key": KEY},
            "model_info": {"id": "bench", "input_cost_per_token": 0.000001,
                           "output_cost_per_token": 0.000002}}],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "llmgw": {"default_group": "g", "ledger": {"url": ledger},
                  "cache": {"backend": "none"}},  # every call must reach the provider
    }


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of `pid` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(call, clients: int, requests: int) -> tuple[float, list[float]]:
    """`requests` calls spread over `clients` concurrent workers: (req/s, latencies ms)."""
    latencies: list[float] = []
    per_client = max(1, requests // clients)

    async def worker(i: int) -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return len(latencies) / (time.perf_counter() - t0), latencies


async def wait_ready(url: str, server: asyncio.subprocess.Process) -> None:
    """Polls the server's readiness until it answers 200, it exits, or a deadline passes."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.returncode is not None:
                raise SystemExit("llmgw serve did not start")
            await asyncio.sleep(0.2)


async def main(clients: int, requests: int, rounds: int) -> None:
    import openai

    from llmgw.gateway import LLMGateway
    from llmgw.ledger.api_keys import ApiKeyStore
    from llmgw.ledger.engine import make_engine

    sim = await asyncio.create_subprocess_exec(sys.executable, "-c", SIM_SCRIPT, KEY,
                                               stdin=asyncio.subprocess.PIPE,
                                               stdout=asyncio.subprocess.PIPE)
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-http-"))
    server = None
    try:
        base = (await sim.stdout.readline()).decode().strip()  # type: ignore[union-attr]
        local_ledger, http_ledger = (f"sqlite:///{tmp / name}" for name in ("a.db", "b.db"))
        for ledger in (local_ledger, http_ledger):
            upgrade(ledger)
        engine = make_engine(http_ledger)
        store = ApiKeyStore(engine)
        keys = [store.create(project_id="bench", agent_id=f"agent-{i}").secret
                for i in range(clients)]
        engine.dispose()
        config = tmp / "model_list.yaml"
        config.write_text(yaml.safe_dump(config_dict(base, http_ledger)))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmgw.cli", "serve", "--port", str(port), "--config",
            str(config), "--no-access-log", env=env, cwd=tmp)
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url + "/readyz", server)

        gw = LLMGateway(config_from_dict(config_dict(base, local_ledger)))
        sdk = [openai.AsyncOpenAI(base_url=url + "/v1", api_key=k, max_retries=0)
               for k in keys]

        async def local(i: int) -> None:
            await gw.complete(f"agent-{i}", "bench", MESSAGES)

        async def http(i: int) -> None:
            await sdk[i].chat.completions.create(model="g", messages=MESSAGES)

        paths = {"(a) in-process complete": local, "(b) HTTP, openai SDK": http}
        for call in paths.values():  # warm up: connections, first-call costs
            await load(call, clients, clients * 2)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
        cpu: dict[str, list[float]] = {"(a) bench process": [], "(b) server process": [],
                                       "(b) client process": []}
        print(f"{clients} concurrent clients, {requests} requests per path and round, "
              f"{rounds} interleaved rounds; simulator and server in their own processes\n")
        print(f"{'round':>5} {'path':26} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/req':>22}")
        for r in range(rounds):
            for name, call in paths.items():
                mine, theirs = cpu_s(), cpu_s(server.pid)
                rps, lat = await load(call, clients, requests)
                mine, theirs = cpu_s() - mine, cpu_s(server.pid) - theirs
                n = len(lat)
                results[name].append((rps, pct(lat, 50), pct(lat, 99)))
                if name.startswith("(a)"):
                    cpu["(a) bench process"].append(mine / n * 1000)
                    spent = f"gateway {mine / n * 1000:.2f}"
                else:
                    cpu["(b) server process"].append(theirs / n * 1000)
                    cpu["(b) client process"].append(mine / n * 1000)
                    spent = f"server {theirs / n * 1000:.2f} clients {mine / n * 1000:.2f}"
                print(f"{r + 1:>5} {name:26} {rps:8.1f} {pct(lat, 50):8.2f} {pct(lat, 99):8.2f} "
                      f"{spent:>22}")
        alone: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(rounds):  # one request at a time: what the front adds, no queueing
            for name, call in paths.items():
                alone[name].extend((await load(call, 1, 100))[1])
        for client in sdk:
            await client.close()
        await gw.aclose()

        med = {name: tuple(statistics.median(v[i] for v in values) for i in range(3))
               for name, values in results.items()}
        a, b = med["(a) in-process complete"], med["(b) HTTP, openai SDK"]
        print(f"\nmedians: (a) {a[0]:.1f} req/s, p50 {a[1]:.2f} ms, p99 {a[2]:.2f} ms")
        print(f"         (b) {b[0]:.1f} req/s, p50 {b[1]:.2f} ms, p99 {b[2]:.2f} ms")
        ratio = b[0] / a[0]
        ratios = [rb[0] / ra[0] for ra, rb in zip(results["(a) in-process complete"],
                                                    results["(b) HTTP, openai SDK"], strict=True)]
        delta = b[1] - a[1]
        print(f"throughput (b)/(a): {ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
              f"target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'})")
        print(f"p50 (b)-(a) at {clients} clients: {delta:+.2f} ms (queueing included)")
        print("CPU ms per request (median of rounds): " + ", ".join(
            f"{k} {statistics.median(v):.2f}" for k, v in cpu.items()))
        la, lb = alone["(a) in-process complete"], alone["(b) HTTP, openai SDK"]
        added = pct(lb, 50) - pct(la, 50)
        print(f"one client at a time, {len(la)} requests each: (a) p50 {pct(la, 50):.2f} ms, "
              f"(b) p50 {pct(lb, 50):.2f} ms; the front adds {added:+.2f} ms at p50 "
              f"(target <= 1.0 ms: {'met' if added <= 1.0 else 'NOT met'})")
    finally:
        if server is not None:
            server.terminate()
            await asyncio.wait_for(server.wait(), 60)
        sim.stdin.close()  # type: ignore[union-attr]
        await asyncio.wait_for(sim.wait(), 10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(main(args.clients, args.requests, args.rounds))
