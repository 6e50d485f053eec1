"""Soak with faults: N minutes of mixed SDK traffic against `llmgw serve --workers 2` on
PostgreSQL and Redis while PostgreSQL restarts, Redis is killed, a worker is SIGKILLed and an
upstream simulator stalls then drops connections. At the end (after `llmgw db reconcile`):
no open reservation, every budget counter equals the ledger, every answer the clients saw has
its ledger row or was a typed error with a request id, no key in the server's log.

    .venv/bin/python bench/soak.py --minutes 10

Loopback only (simulators, Redis and the server on 127.0.0.1, PostgreSQL on a Unix socket);
bounded in time and requests; exits 1 if any check fails. tests/soak runs a 60 s version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from llmgw._litellm import set_offline_env  # noqa: E402

set_offline_env()

import anthropic  # noqa: E402
import httpx  # noqa: E402
import httpx2  # noqa: E402  (the SDKs' transport here: a cut stream raises its errors)
import openai  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from llmgw.budgets.rules import Rule  # noqa: E402
from llmgw.ledger.api_keys import ApiKeyStore  # noqa: E402
from llmgw.ledger.budgets import BudgetStore  # noqa: E402
from llmgw.ledger.engine import make_engine  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402
from llmgw.ledger.timespec import utcnow  # noqa: E402
from llmgw.sim import AnthropicSim, Fault, FaultPlan, OpenAISim  # noqa: E402
from tests.fixtures.redis import RedisServer, free_port, start_redis  # noqa: E402
from tests.soak.postgres import RestartablePostgres  # noqa: E402
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY, sim_config_dict  # noqa: E402

FAULTS = ("pg_restart", "redis_kill", "worker_kill", "upstream_stall", "upstream_drop")
RID = "x-llmgw-request-id"
CLIENT_TIMEOUT_S = 120.0  # generous: a loaded 2-core machine, a stalled upstream
READY_TIMEOUT_S = 120.0
TINY_PROJECT = "proj-tiny"  # a budget no request fits: every call is refused
LIMITED_RPM = 2  # a key's own limit the traffic exceeds
HI = [{"role": "user", "content": "Say hi"}]


@dataclass
class Outcome:
    window: str
    kind: str
    result: str  # ok | error | hangup | cancelled | transport
    status: int | None = None
    request_id: str | None = None
    code: str | None = None
    detail: str = ""  # a connection error's exception chain, to tell its cause
    at_s: float = 0.0  # when it started, seconds into its window
    span: tuple[float, float] = (0.0, 0.0)  # time.monotonic() at its start and end


@dataclass
class Report:
    outcomes: list[Outcome]
    windows: list[str]
    checks: dict[str, bool]
    figures: dict[str, Any]
    faults_done: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll a condition the system makes true (never a fixed sleep as synchronization)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- the server under test ---------------------------------------------------------------


class Serve:
    """`llmgw serve --workers 2` as a subprocess; stdout and stderr go to one log file."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "serve.log"
        # wide log lines: a traceback in the server log stays readable (rich wraps at COLUMNS)
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        env.pop("LLMGW_LEDGER_URL", None)
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmgw.cli", "serve", "--port", str(self.port), "--config",
             str(config), "--workers", "2", "--grace", "15", "--no-access-log"],
            env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self.ready, "llmgw serve to be ready")
        wait_for(lambda: len(self.workers()) == 2, "two workers")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"llmgw serve exited: {self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(self.base + "/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def workers(self) -> list[int]:
        """The uvicorn parent's worker processes (multiprocessing spawn children)."""
        pids = []
        for child in psutil.Process(self.process.pid).children():
            try:
                cmdline = " ".join(child.cmdline())
                if "spawn_main" in cmdline and child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except psutil.Error:
                continue
        return pids

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# --- faults ------------------------------------------------------------------------------


class Faults:
    """Each fault: break something, hold it broken for `down_s`, mend it, wait until mended."""

    def __init__(self, pg: RestartablePostgres, redis_server: RedisServer, serve: Serve,
                 openai_sim: OpenAISim, down_s: float) -> None:
        self.pg, self.redis, self.serve, self.sim = pg, redis_server, serve, openai_sim
        self.down_s = down_s
        self.respawned = 0
        self.killed_workers: list[int] = []
        self.killed_at: list[float] = []  # time.monotonic() of each SIGKILL

    async def run(self, name: str) -> None:
        await getattr(self, name)()

    async def pg_restart(self) -> None:
        await asyncio.to_thread(self.pg.stop)
        await asyncio.sleep(self.down_s)  # the outage itself, not a synchronization
        await asyncio.to_thread(self.pg.start)  # polls until it answers

    async def redis_kill(self) -> None:
        proc = self.redis.proc
        assert proc is not None
        proc.kill()
        await asyncio.to_thread(proc.wait)
        self.redis.proc = None
        await asyncio.sleep(self.down_s)
        await asyncio.to_thread(self.redis.start)  # same port; polls PING

    async def worker_kill(self) -> None:
        before = self.serve.workers()
        victim = before[0]
        self.killed_at.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)
        self.killed_workers.append(victim)

        def respawned() -> bool:
            now = self.serve.workers()
            return len(now) == 2 and victim not in now

        try:  # uvicorn's supervisor checks its workers every few seconds and respawns them
            await asyncio.to_thread(wait_for, respawned, "a respawned worker")
            self.respawned += 1
        except RuntimeError:
            pass  # counted: respawned stays below the kills
        await asyncio.to_thread(wait_for, self.serve.ready, "the server to be ready")

    async def upstream_stall(self) -> None:
        self.sim.set_plan(FaultPlan(faults=[Fault(kind="latency", delay_s=self.down_s)]))
        await asyncio.sleep(self.down_s)
        self.sim.set_plan(FaultPlan())

    async def upstream_drop(self) -> None:
        self.sim.set_plan(FaultPlan(faults=[Fault(kind="drop", after_chunks=2)]))
        await asyncio.sleep(self.down_s)
        self.sim.set_plan(FaultPlan())


# --- clients -----------------------------------------------------------------------------


def _openai(base: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0,
                              timeout=CLIENT_TIMEOUT_S)


def _anthropic(base: str, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base, api_key=key, max_retries=0,
                                    timeout=CLIENT_TIMEOUT_S)


def _chain(exc: BaseException) -> str:
    """`Type: message` of an exception and its causes, innermost last."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        parts.append(f"{type(seen).__name__}: {str(seen)[:80]}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code") or inner.get("type")
    return None


async def _read_sse(r: Any, kind: str, hang_up_after: int | None = None) -> Outcome:
    """A stream's outcome. Its request id and facts come in the `llmgw` field of its last
    event (or of its error event: the SDKs drop that field when they raise, so we read the
    events the SDK's response gives us ourselves)."""
    rid, code, seen = r.headers.get(RID), None, 0
    async for line in r.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        seen += 1
        event = json.loads(line[len("data: "):])
        facts = event.get("llmgw") or (event.get("response") or {}).get("llmgw")
        if isinstance(facts, dict) and facts.get("request_id"):
            rid = facts["request_id"]
        if event.get("error") or event.get("type") in ("error", "response.failed"):
            code = _error_code(event) or _error_code(event.get("response") or {}) or "stream_error"
        if hang_up_after is not None and seen >= hang_up_after and code is None:
            return Outcome("", kind, "hangup", r.status_code, rid)
    if code is not None:
        return Outcome("", kind, "error", r.status_code, rid, code)
    return Outcome("", kind, "ok", r.status_code, rid)


class Clients:
    def __init__(self, base: str, key: str, tiny_key: str, limited_key: str) -> None:
        self.base, self.key, self.tiny_key, self.limited_key = base, key, tiny_key, limited_key

    async def chat_json(self, i: int) -> Outcome:
        model = ("solo", "backup", "primary")[i % 3]
        async with _openai(self.base, self.key) as c:
            r = await c.chat.completions.with_raw_response.create(model=model, messages=HI,
                                                                  max_tokens=20)
            return Outcome("", "chat_json", "ok", r.status_code, r.headers.get(RID))

    async def chat_stream(self, i: int) -> Outcome:
        model = ("backup", "primary", "solo")[i % 3]
        async with _openai(self.base, self.key) as c:
            async with c.chat.completions.with_streaming_response.create(
                    model=model, messages=HI, max_tokens=20, stream=True) as r:
                return await _read_sse(r, "chat_stream")

    async def responses_json(self, i: int) -> Outcome:
        async with _openai(self.base, self.key) as c:
            r = await c.responses.with_raw_response.create(model="backup", input="Say hi",
                                                           max_output_tokens=20)
            return Outcome("", "responses_json", "ok", r.status_code, r.headers.get(RID))

    async def responses_stream(self, i: int) -> Outcome:
        async with _openai(self.base, self.key) as c:
            async with c.responses.with_streaming_response.create(
                    model="backup", input="Say hi", max_output_tokens=20, stream=True) as r:
                return await _read_sse(r, "responses_stream")

    async def messages_json(self, i: int) -> Outcome:
        async with _anthropic(self.base, self.key) as c:
            r = await c.messages.with_raw_response.create(model="primary", messages=HI,
                                                          max_tokens=20)
            return Outcome("", "messages_json", "ok", r.status_code, r.headers.get(RID))

    async def messages_stream(self, i: int) -> Outcome:
        async with _anthropic(self.base, self.key) as c:
            async with c.messages.with_streaming_response.create(
                    model="primary", messages=HI, max_tokens=20, stream=True) as r:
                return await _read_sse(r, "messages_stream")

    async def hangup_stream(self, i: int) -> Outcome:
        """Reads two events, then closes the connection mid-stream."""
        async with _openai(self.base, self.key) as c:
            async with c.chat.completions.with_streaming_response.create(
                    model="backup", messages=HI, max_tokens=200, stream=True) as r:
                return await _read_sse(r, "hangup_stream", hang_up_after=2)

    async def cancel_json(self, i: int) -> Outcome:
        """Gives up after a short while: the connection closes before (or as) the answer comes."""
        try:
            return await asyncio.wait_for(self.chat_json(i), timeout=0.05 + (i % 7) * 0.05)
        except TimeoutError:
            return Outcome("", "cancel_json", "cancelled")

    async def budget_refusal(self, i: int) -> Outcome:
        async with _openai(self.base, self.tiny_key) as c:
            r = await c.chat.completions.with_raw_response.create(model="solo", messages=HI,
                                                                  max_tokens=20)
            return Outcome("", "budget_refusal", "ok", r.status_code, r.headers.get(RID))

    async def rate_limited(self, i: int) -> Outcome:
        """A key with its own small rpm (`llmgw keys create --rpm`): most calls are refused."""
        async with _openai(self.base, self.limited_key) as c:
            r = await c.chat.completions.with_raw_response.create(model="solo", messages=HI,
                                                                  max_tokens=20)
            return Outcome("", "rate_limited", "ok", r.status_code, r.headers.get(RID))

    def kinds(self) -> list[Callable[[int], Awaitable[Outcome]]]:
        # budget refusals: "a few", one slot in twenty
        mix = [self.chat_json, self.chat_stream, self.responses_json, self.responses_stream,
               self.messages_json, self.messages_stream, self.hangup_stream, self.cancel_json]
        return mix * 2 + [self.chat_json, self.messages_json, self.chat_stream,
                          self.budget_refusal, self.chat_json, self.rate_limited]

    async def one(self, i: int) -> Outcome:
        kind = self.kinds()[i % len(self.kinds())]
        try:
            return await kind(i)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            headers = exc.response.headers
            return Outcome("", kind.__name__, "error", exc.status_code, headers.get(RID),
                           _error_code(exc.body))
        except (openai.APIConnectionError, anthropic.APIConnectionError, httpx.TransportError,
                httpx2.TransportError) as exc:
            return Outcome("", kind.__name__, "transport", detail=_chain(exc))


# --- the run -----------------------------------------------------------------------------


def schedule(duration_s: float) -> list[tuple[str, float]]:
    """(window, start offset): a quiet window, each fault once per minute or so, a quiet end."""
    rounds = max(1, round(duration_s / 60))
    names = ["baseline", *(f for _ in range(rounds) for f in FAULTS), "recovery"]
    slot = duration_s / len(names)
    return [(name, i * slot) for i, name in enumerate(names)]


async def traffic_and_faults(clients: Clients, faults: Faults, duration_s: float, concurrency: int,
                             max_requests: int) -> tuple[list[Outcome], list[str], Counter[str]]:
    plan = schedule(duration_s)
    window: dict[str, Any] = {"name": plan[0][0], "since": time.monotonic()}
    outcomes: list[Outcome] = []
    done: Counter[str] = Counter()
    stop = asyncio.Event()
    counter = iter(range(max_requests))

    async def loop() -> None:
        while not stop.is_set():
            i = next(counter, None)
            if i is None:
                return
            started = time.monotonic()
            name, at_s = window["name"], started - window["since"]
            outcome = await clients.one(i)
            outcome.window, outcome.at_s = name, round(at_s, 1)
            outcome.span = (started, time.monotonic())
            outcomes.append(outcome)
            await asyncio.sleep(0.02)  # pacing: a steady load, not synchronization

    async def conductor() -> None:
        start = time.monotonic()
        for name, offset in plan:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            window.update(name=name, since=time.monotonic())
            if name in FAULTS:
                await faults.run(name)
                done[name] += 1
        await asyncio.sleep(max(0.0, start + duration_s - time.monotonic()))
        stop.set()

    await asyncio.gather(conductor(), *(loop() for _ in range(concurrency)))
    return outcomes, [name for name, _ in plan], done


def ledger_facts(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rids = {r[0] for r in conn.execute(text("SELECT request_id FROM usage_events"))}
            statuses = dict(conn.execute(text(
                "SELECT status, COUNT(*) FROM usage_events GROUP BY status")).all())
            by = {scope: dict(conn.execute(text(
                f"SELECT {scope}_id, COALESCE(SUM(cost_micros), 0) FROM usage_events "
                f"GROUP BY {scope}_id")).all()) for scope in ("agent", "project")}
            counters = {(r[0], r[1], r[2]): (r[3], r[4]) for r in conn.execute(text(
                "SELECT scope, scope_id, period, spent_micros, reserved_micros FROM budget_counters"))}
            open_holds = conn.execute(text(
                "SELECT COUNT(*) FROM reservations WHERE state = 'open'")).scalar_one()
            reconciled = conn.execute(text(
                "SELECT COUNT(*) FROM usage_events WHERE error_class = 'Reconciled'")).scalar_one()
    finally:
        engine.dispose()
    mismatched = [k for k, (spent, reserved) in counters.items()
                  if (spent, reserved) != (by[k[0]].get(k[1], 0), 0)]
    return {"request_ids": rids, "statuses": statuses, "counters": len(counters),
            "mismatched": mismatched, "open": open_holds, "reconciled": reconciled,
            "rows": sum(statuses.values())}


def reconcile(ledger_url: str, workdir: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "llmgw.cli", "db", "reconcile", "--older-than", "0",
                           "--force", "--ledger-url", ledger_url], env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"llmgw db reconcile failed: {done.stdout}{done.stderr}")
    return done.stdout.strip()


def evaluate(outcomes: list[Outcome], windows: list[str], facts: dict[str, Any], log: str,
             secrets: list[str], faults: Faults, done: Counter[str]) -> tuple[dict[str, bool],
                                                                             dict[str, Any]]:
    rids = facts["request_ids"]
    ok = [o for o in outcomes if o.result == "ok"]
    errors = [o for o in outcomes if o.result == "error"]
    hangups = [o for o in outcomes if o.result == "hangup"]
    transport = [o for o in outcomes if o.result == "transport"]
    refused = [o for o in errors if o.code == "budget_exceeded"]
    limited = [o for o in errors if o.kind == "rate_limited" and o.status == 429]
    checks = {
        "every fault ran": all(done[f] >= 1 for f in FAULTS),
        "0 open reservations": facts["open"] == 0,
        "every budget counter equals the ledger": not facts["mismatched"] and facts["counters"] > 0,
        "every success has a request id and a ledger row": bool(ok) and all(
            o.status == 200 and o.request_id in rids for o in ok),
        "every error is typed and has a request id": all(o.request_id and o.code for o in errors),
        "no 500 without a request id": not any(o.status == 500 and not o.request_id
                                              for o in outcomes),
        "every hang-up with a request id has a ledger row": all(
            o.request_id in rids for o in hangups if o.request_id),
        # a request in flight when its worker was SIGKILLed loses its connection: expected
        # (nobody is left to answer), whichever window it started in
        "connection errors only while a worker was killed": all(
            any(o.span[0] <= t <= o.span[1] for t in faults.killed_at) for o in transport),
        "budget refusals seen": bool(refused),
        "key rate-limit refusals seen": bool(limited),
        "every killed worker respawned": faults.respawned == len(faults.killed_workers) > 0,
        "no API key in the server's log": not [s for s in secrets if s in log],
    }
    figures = {
        "requests": len(outcomes), "ok": len(ok), "typed errors": len(errors),
        "budget refusals": len(refused), "key rate-limit refusals": len(limited), "hang-ups": len(hangups),
        "cancels": sum(o.result == "cancelled" for o in outcomes),
        "connection errors": len(transport), "ledger rows": facts["rows"],
        "ledger statuses": dict(sorted(facts["statuses"].items())),
        "rows settled by reconcile": facts["reconciled"], "open reservations": facts["open"],
        "counters checked": facts["counters"], "counters mismatched": len(facts["mismatched"]),
        "workers killed": len(faults.killed_workers), "workers respawned": faults.respawned,
        "error codes": dict(Counter(f"{o.status} {o.code}" for o in errors).most_common()),
        "faults": dict(done),
        "successes without a row": [(o.window, o.kind, o.request_id) for o in ok
                                    if o.status != 200 or o.request_id not in rids][:10],
        "errors untyped or without id": [(o.window, o.kind, o.status, o.code, o.request_id)
                                         for o in errors if not (o.request_id and o.code)][:10],
        "connection errors outside a worker kill": sum(
            not any(o.span[0] <= t <= o.span[1] for t in faults.killed_at) for o in transport),
        "connection errors at": [(o.window, o.at_s, o.kind, o.detail) for o in transport][:10],
    }
    return checks, figures


def window_table(outcomes: list[Outcome], windows: list[str]) -> str:
    rows = ["| window | requests | ok | typed errors | refused | hang-ups/cancels | conn errors |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(windows):
        of = [o for o in outcomes if o.window == name]
        rows.append(f"| {name} | {len(of)} | {sum(o.result == 'ok' for o in of)} | "
                    f"{sum(o.result == 'error' for o in of)} | "
                    f"{sum(o.code == 'budget_exceeded' for o in of)} | "
                    f"{sum(o.result in ('hangup', 'cancelled') for o in of)} | "
                    f"{sum(o.result == 'transport' for o in of)} |")
    return "\n".join(rows)


def run_soak(duration_s: float, *, concurrency: int = 6, max_requests: int = 200_000,
             down_s: float | None = None, workdir: Path | None = None) -> Report:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="llmgw-soak-"))
    down_s = down_s if down_s is not None else min(5.0, duration_s / len(schedule(duration_s)) / 3)
    pg = RestartablePostgres().start()
    redis_server = start_redis()
    openai_sim = OpenAISim(api_key=OPENAI_KEY).start()
    anthropic_sim = AnthropicSim(api_key=ANTHROPIC_KEY).start()
    serve: Serve | None = None
    try:
        ledger_url = pg.create_database("llmgw_soak")
        upgrade(ledger_url)
        engine = make_engine(ledger_url)
        try:
            budgets = BudgetStore(engine)
            budgets.set_rule(Rule("project", "proj-a", "day", 1_000_000_000, 0.8), utcnow())
            budgets.set_rule(Rule("project", TINY_PROJECT, "day", 1, 0.8), utcnow())
            keys = ApiKeyStore(engine)
            key = keys.create(project_id="proj-a", agent_id="soak-1").secret
            tiny_key = keys.create(project_id=TINY_PROJECT, agent_id="soak-tiny").secret
            limited_key = keys.create(project_id="proj-a", agent_id="soak-limited",
                                      rpm=LIMITED_RPM).secret
        finally:
            engine.dispose()
        config = workdir / "model_list.yaml"
        config.write_text(yaml.safe_dump(sim_config_dict(
            openai_sim.base_url, anthropic_sim.base_url, ledger_url, redis_url=redis_server.url)))
        serve = Serve(workdir, config)
        faults = Faults(pg, redis_server, serve, openai_sim, down_s)
        outcomes, windows, done = asyncio.run(traffic_and_faults(
            Clients(serve.base, key, tiny_key, limited_key), faults, duration_s, concurrency, max_requests))
        serve.stop()
        reconcile(ledger_url, workdir)
        facts = ledger_facts(ledger_url)
        log = serve.log_path.read_text(errors="replace")
        print(f"soak: server log {serve.log_path}", file=sys.stderr)
        secrets = [OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY, key, tiny_key, limited_key]
        checks, figures = evaluate(outcomes, windows, facts, log, secrets, faults, done)
        return Report(outcomes, windows, checks, figures, done)
    finally:
        if serve is not None:
            serve.stop()
        openai_sim.stop()
        anthropic_sim.stop()
        redis_server.close()
        pg.close()


def print_report(report: Report, duration_s: float, elapsed_s: float) -> None:
    print(f"soak: {duration_s:.0f} s of traffic, {elapsed_s:.0f} s in all")
    print(window_table(report.outcomes, report.windows))
    for name, value in report.figures.items():
        print(f"{name}: {value}")
    for name, passed in report.checks.items():
        print(f"[{'PASS' if passed else 'FAIL'}] {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()
    started = time.monotonic()
    report = run_soak(args.minutes * 60, concurrency=args.concurrency, max_requests=args.max_requests)
    print_report(report, args.minutes * 60, time.monotonic() - started)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
