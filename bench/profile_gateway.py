"""Where the gateway's own time goes under load: a sampling profile of bench/load.py's load.

Builds one configuration of bench/load.py (`sqlite`: SQLite ledger + memory cache, or
`pg-redis`: PostgreSQL ledger + Redis cache and Router state) in this process, pinned as
load.py pins (servers and py-spy on the last core), warms it up, then samples it with py-spy
(every thread, CPU only: idle waits are not counted) while 100 agents send unique prompts.
py-spy counts a thread that is runnable but waiting for the core (or the GIL) as busy, so
lines right after a system call collect samples they did not spend: trust process CPU
(load.py's `CPU ms`) for totals. Each sample is attributed to:
  llmgw   a frame of llmgw is on the stack and it is not inside `Router.acompletion`
          (or it is an llmgw callback LiteLLM calls from there);
  litellm inside `Router.acompletion` or LiteLLM's own background work;
  other   the event loop, asyncio, the bench itself.
Prints the split and the llmgw functions the llmgw samples end in (the deepest llmgw frame,
with the library call it was making). `--tool pyinstrument` writes pyinstrument's text
report of the event-loop thread instead.

    .venv/bin/python bench/profile_gateway.py [--config sqlite|pg-redis] [--requests 1500]
                                              [--path gateway|router] [--tool py-spy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from load import Servers, _worker_setup, configs, load, messages, pin_cores

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def _path(frame: str) -> str:
    """py-spy names a frame `Class.func (pkg/file.py:line)`."""
    return frame.partition(" (")[2].rsplit(":", 1)[0]


def is_llmgw(frame: str) -> bool:
    path = "/" + _path(frame)
    return "/llmgw/" in path and "/llmgw/sim/" not in path


def is_router_call(frame: str) -> bool:
    return frame.startswith("Router.acompletion ") and _path(frame).endswith("litellm/router.py")


def short(frame: str) -> str:
    """`Class.func (pkg/file.py:12)` -> `pkg/file.py:Class.func:12`."""
    name, _, where = frame.partition(" (")
    return f"{where.rstrip(')')}:{name}" if where else name


def function(frame: str) -> str:
    """`Class.func (pkg/file.py:12)` -> `pkg/file.py:Class.func` (any line of it)."""
    return f"{_path(frame)}:{frame.partition(' (')[0]}"


def classify(stack: list[str]) -> tuple[str, str | None]:
    """('llmgw'|'litellm'|'other', the attribution key of an llmgw sample)."""
    router_at = next((i for i, f in enumerate(stack) if is_router_call(f)), None)
    llmgw_at = [i for i, f in enumerate(stack) if is_llmgw(f)]
    if router_at is not None:
        llmgw_at = [i for i in llmgw_at if i > router_at]
        if not llmgw_at:
            return "litellm", None
    if not llmgw_at:
        return ("litellm" if any("litellm/" in _path(f) for f in stack) else "other"), None
    deepest = llmgw_at[-1]
    callee = stack[deepest + 1] if deepest + 1 < len(stack) else None
    key = short(stack[deepest]) + (f"  -> {short(callee)}" if callee else "  (self)")
    return "llmgw", key


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: `frame;frame;... count`, root first."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def analyse(samples: list[tuple[list[str], int]], top: int, requests: int, wall: float) -> None:
    split: Counter[str] = Counter()
    where: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in samples:
        kind, key = classify(stack)
        split[kind] += n
        if key:
            where[key] += n
            for f in {function(f) for f in stack if is_llmgw(f)}:
                inclusive[f] += n
    total = sum(split.values()) or 1
    print(f"\n{requests} requests in {wall:.1f} s ({requests / wall:.1f} req/s); "
          f"{total} CPU samples (all threads)")
    for kind in ("llmgw", "litellm", "other"):
        print(f"  {kind:8} {split[kind]:7d}  {100 * split[kind] / total:5.1f} %")
    print("\ntop llmgw endings (deepest llmgw frame -> what it was calling), % of all samples")
    for key, n in where.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {key}")
    print("\ntop llmgw functions, inclusive (% of all samples)")
    for key, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {key}")


async def profile(config: str, path: str, requests: int, agents: int, tool: str, top: int,
                  out: Path, native: bool = False) -> None:
    servers = Servers()
    gw = None
    try:
        cfg = configs(servers)[config]
        servers_core = sorted(os.sched_getaffinity(0))[-1]  # the core pin_cores gives them
        print(pin_cores(), flush=True)  # as bench/load.py: servers' CPU is not sampled here
        gw, paths = await _worker_setup(cfg)
        call = paths[path]
        make = lambda n, p: messages("prof", n, p)  # noqa: E731
        if tool == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            t0 = time.perf_counter()
            profiler.start()
            await load(call, requests, agents, make)
            profiler.stop()
            wall = time.perf_counter() - t0
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            await asyncio.to_thread(out.write_text, text)
            print(f"{requests} requests in {wall:.1f} s; pyinstrument report: {out}")
            return
        raw = out.with_suffix(".raw")
        spy = await asyncio.create_subprocess_exec(
            PY_SPY, "record", "--pid", str(os.getpid()), "--rate", "250", "--format", "raw",
            "--output", str(raw), *(["--native"] if native else ["--nonblocking"]),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        os.sched_setaffinity(spy.pid, {servers_core})  # the sampler off the bench's core
        await asyncio.sleep(1.0)  # py-spy attached
        t0 = time.perf_counter()
        await load(call, requests, agents, make)
        wall = time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 30)
        analyse(parse_raw(raw), top, requests, wall)
        print(f"\nraw py-spy stacks: {raw}")
    finally:
        if gw is not None:
            await gw.aclose()
        servers.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=("sqlite", "pg-redis"), default="sqlite")
    ap.add_argument("--path", choices=("gateway", "router"), default="gateway")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--native", action="store_true", help="py-spy: C frames too")
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/llmgw-profile-{os.getpid()}.txt"))
    a = ap.parse_args()
    asyncio.run(profile(a.config, a.path, a.requests, a.agents, a.tool, a.top, a.out,
                          a.native))
