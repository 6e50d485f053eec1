"""`llmgw usage report` at scale: every --by (and the TOTAL row) over a large generated ledger.

Bulk-generates realistic ledger rows (many projects/agents/agent types, several groups,
deployments and providers, every status, fallback chains sharing one request_id, ~90 days)
into a fresh SQLite file and a fresh PostgreSQL database (the tests' embedded server, or
LLMGW_TEST_POSTGRES_URL), then times what `llmgw usage report --by X` runs (usage_report +
usage_totals) per --by and filter: cold (first run on a fresh engine: empty connection and
SQLite page cache; the OS cache and PostgreSQL's shared buffers are not dropped) and warm
(median of the next runs). Target: every report <= 1 s.

With --write it also measures the write-side cost of the ledger's rollup triggers: the same
LedgerStore.write_sync calls (the gateway's ledger write) with the triggers on and dropped,
in interleaved rounds, on the loaded ledger.

    .venv/bin/python bench/report.py [--rows 1000000] [--db sqlite,postgresql] [--write]
        [--baseline old_report.py]   # e.g. `git show HEAD~1:llmgw/ledger/report.py > old.py`
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fixtures.databases (the embedded PostgreSQL helpers)

from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from llmgw.ledger.engine import make_engine  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402
from llmgw.ledger.migrations import sqlfiles  # noqa: E402
from llmgw.ledger.models import USAGE_COLUMNS as COLUMNS  # noqa: E402
from llmgw.ledger.report import GROUP_BY_VALUES  # noqa: E402
from llmgw.ledger.store import LedgerStore  # noqa: E402

TARGET_S = 1.0
START = datetime(2026, 8, 1)
DAYS = 90

# (model_group, deployment_id, provider, model, input micros/token, output micros/token)
DEPLOYMENTS = [
    ("high-reasoning", "claude-primary", "anthropic", "claude-sonnet-4-5", 3, 15),
    ("high-reasoning", "gpt4-backup", "openai", "gpt-4-turbo", 10, 30),
    ("high-reasoning", "bedrock-claude", "bedrock", "anthropic.claude-sonnet-4-5", 3, 15),
    ("fast-response", "gemini-flash", "gemini", "gemini-2.0-flash", 0, 1),
    ("fast-response", "gpt4o-mini", "openai", "gpt-4o-mini", 0, 1),
    ("fast-response", "ollama-local", "ollama", "qwen2.5-coder", 0, 0),
    ("cost-optimized", "ruv-auto", "ruvector", "auto", 0, 1),
    ("cost-optimized", "deepseek", "deepseek", "deepseek-chat", 0, 1),
    ("local", "local-gguf", None, None, 0, 0),  # NULL provider/model keys
]
GROUPS = sorted({d[0] for d in DEPLOYMENTS})
AGENT_TYPES = [f"type-{i:02d}" for i in range(12)] + [None]  # some agents have no type


class Generator:
    """Deterministic ledger rows as tuples in COLUMNS order (Python values)."""

    def __init__(self, seed: int = 8, projects: int = 40, agents: int = 400) -> None:
        self.rng = random.Random(seed)
        self.projects = [f"proj-{i:03d}" for i in range(projects)]
        rng = self.rng
        # Each agent belongs to one project, has one type and prefers one or two groups.
        self.agents = [(f"agent-{i:04d}", rng.choice(self.projects), rng.choice(AGENT_TYPES),
                        rng.sample(GROUPS, rng.choice([1, 1, 2]))) for i in range(agents)]
        self.by_group = {g: [d for d in DEPLOYMENTS if d[0] == g] for g in GROUPS}

    def rows(self, n_rows: int) -> Iterator[tuple[Any, ...]]:
        made, n = 0, 0
        while made < n_rows:
            n += 1
            for row in self._request(n):
                yield row
                made += 1
                if made == n_rows:
                    return

    def _request(self, n: int) -> list[tuple[Any, ...]]:
        rng = self.rng
        request_id = uuid.UUID(int=rng.getrandbits(128)).hex
        agent, project, agent_type, groups = rng.choice(self.agents)
        group = rng.choice(groups)
        ts = START + timedelta(seconds=rng.random() * DAYS * 86400)
        meta = json.dumps({"llmgw": {"requested_group": group, "route": "agent-type default"}})
        base = (agent, agent_type, project)
        kind = rng.random()
        if kind < 0.03:
            return [self._row(request_id, 1, ts, base, (group, None, None, None, 0, 0), "refused",
                              meta, prompt=rng.randint(10, 8000), error="BudgetExceeded")]
        if kind < 0.15:
            dep = rng.choice(self.by_group[group])
            return [self._row(request_id, 1, ts, base, dep, "cached", meta,
                              saved=rng.randint(1, 90_000))]
        attempts = rng.choices([1, 2, 3], weights=[85, 11, 4])[0]
        out = []
        for attempt in range(1, attempts + 1):
            # Fallbacks may leave the group; they run seconds later (rarely past midnight).
            dep = rng.choice(DEPLOYMENTS if attempt > 1 and rng.random() < 0.3
                             else self.by_group[group])
            last = attempt == attempts
            status = (rng.choices(["ok", "error", "partial"], weights=[90, 5, 5])[0]
                      if last else "error")
            out.append(self._row(request_id, attempt, ts, base, dep, status, meta,
                                 prompt=rng.randint(20, 12_000),
                                 completion=0 if status == "error" else rng.randint(1, 3000)))
            ts += timedelta(seconds=rng.uniform(0.2, 30))
        return out

    def _row(self, request_id: str, attempt: int, ts: datetime, base: tuple[Any, ...],
             dep: tuple[Any, ...], status: str, meta: str, *, prompt: int = 0,
             completion: int = 0, saved: int = 0, error: str | None = None) -> tuple[Any, ...]:
        agent, agent_type, project = base
        group, deployment, provider, model = dep[:4]
        cost = prompt * dep[4] + completion * dep[5] if status in ("ok", "partial") else 0
        if status == "error":
            error = error or self.rng.choice(["RateLimited", "Timeout", "ProviderError"])
        return (request_id, attempt, ts, agent, agent_type, project, group, deployment, provider,
                model, status, error, f"{error}: upstream said no" if error else None, prompt,
                completion, 0, cost, saved, round(self.rng.uniform(50, 9000), 3),
                self.rng.random() < 0.2, meta)


# --- loading ----------------------------------------------------------------------------------


def load(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    """Bulk-insert rows into a migrated ledger (the triggers, if any, run as on any insert)."""
    if make_url(url).get_backend_name() == "sqlite":
        _load_sqlite(url, rows)
    else:
        _load_postgres(url, rows)


def _load_sqlite(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    # Stored exactly as SQLAlchemy stores them: 'YYYY-MM-DD HH:MM:SS.ffffff', booleans 0/1.
    def convert(r: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*r[:2], r[2].isoformat(" ", "microseconds"), *r[3:19], int(r[19]), r[20])

    conn = sqlite3.connect(make_url(url).database)  # type: ignore[arg-type]
    try:
        sql = (f"INSERT INTO usage_events ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in COLUMNS)})")
        conn.executemany(sql, map(convert, rows))
        conn.commit()
    finally:
        conn.close()


def _load_postgres(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    engine = make_engine(url)
    try:
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:  # type: ignore[attr-defined]
                with cur.copy(f"COPY usage_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
            raw.commit()
        finally:
            raw.close()
        # What autovacuum does soon after a load: statistics and the visibility map.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


# --- timing -----------------------------------------------------------------------------------

FILTERS: dict[str, dict[str, Any]] = {
    "all": {},
    "project": {"project": "proj-007"},
    "since/until": {"since": START + timedelta(days=30, hours=7, minutes=13),
                    "until": START + timedelta(days=60, hours=17, seconds=5)},
    "proj+agent+range": {"project": "proj-007", "agent": None,  # agent filled in at run time
                         "since": START + timedelta(days=10, hours=3),
                         "until": START + timedelta(days=80, minutes=1)},
}


def cli_report(impl: Any, engine: Engine, by: str, filters: dict[str, Any]) -> int:
    """What `llmgw usage report --by X` (table format) asks the ledger."""
    rows = impl.usage_report(engine, by=by, **filters)
    impl.usage_totals(engine, **filters)
    return len(rows)


def load_impl(path: str | None) -> Any:
    """The report functions to time: llmgw's, or another report.py (e.g. a previous version)."""
    if path is None:
        return sys.modules["llmgw.ledger.report"]
    spec = importlib.util.spec_from_file_location("report_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_reports(url: str, warm_runs: int, impl: Any) -> list[tuple[str, str, float, float]]:
    """(by, filter, cold s, warm s) for every --by and filter."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            agent = conn.execute(text("SELECT MIN(agent_id) FROM usage_events "
                                      "WHERE project_id = 'proj-007'")).scalar()
    finally:
        engine.dispose()
    out = []
    for name, filters in FILTERS.items():
        filters = {k: (agent if k == "agent" else v) for k, v in filters.items()}
        for by in GROUP_BY_VALUES:
            engine = make_engine(url)  # cold: a new connection, an empty SQLite page cache
            try:
                report = functools.partial(cli_report, impl, engine, by, filters)
                cold = timed(report)
                warm = statistics.median(timed(report) for _ in range(warm_runs))
            finally:
                engine.dispose()
            out.append((by, name, cold, warm))
    return out


def print_table(backend: str, rows: int, results: list[tuple[str, str, float, float]],
                label: str) -> bool:
    print(f"\n{backend} [{label}]: {rows:,} ledger rows; report + TOTAL per --by, milliseconds")
    print(f"{'--by':12} {'filter':17} {'cold ms':>9} {'warm ms':>9}")
    for by, name, cold, warm in results:
        print(f"{by:12} {name:17} {cold * 1000:9.1f} {warm * 1000:9.1f}")
    worst = max(results, key=lambda r: r[2])
    ok = worst[2] <= TARGET_S and max(r[3] for r in results) <= TARGET_S
    print(f"worst: --by {worst[0]} ({worst[1]}) cold {worst[2] * 1000:.1f} ms, warm max "
          f"{max(r[3] for r in results) * 1000:.1f} ms -> target <= {TARGET_S:.0f} s: "
          f"{'met' if ok else 'NOT met'}")
    return ok


# --- write-side cost --------------------------------------------------------------------------


def _rollup_migration() -> Any:
    """The 0003 migration module (its trigger DDL), or None before it exists."""
    found = sorted((ROOT / "llmgw" / "ledger" / "migrations" / "legacy").glob("0003_*.py"))
    if not found:
        return None
    spec = importlib.util.spec_from_file_location("rollup_0003", found[0])
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cost(url: str, requests: int, rounds: int) -> None:
    """LedgerStore.write_sync per request (1-3 rows), rollup triggers on vs dropped."""
    migration = _rollup_migration()
    if migration is None:
        print("\nwrite cost: no 0003 migration, nothing to compare")
        return
    gen = Generator(seed=99)
    store = LedgerStore(url)
    dialect = store.engine.dialect.name
    samples: dict[str, list[float]] = {"triggers on": [], "triggers dropped": []}
    try:
        for _ in range(30):  # warm up
            store.write_sync(_as_dicts(gen._request(0)))
        for i in range(rounds * 2):
            on = i % 2 == 1  # the triggers exist: drop them first
            with store.engine.begin() as conn:
                for sql in (migration.trigger_ddl(dialect) if on else
                            migration.drop_trigger_ddl(dialect)):
                    conn.exec_driver_sql(sql)
                if on and dialect == "postgresql":  # 0003's DDL made the old function
                    conn.exec_driver_sql(sqlfiles.legacy_load("usage_events_rollup", 2))
            batch = [_as_dicts(gen._request(0)) for _ in range(requests // rounds)]
            name = "triggers on" if on else "triggers dropped"
            for rows in batch:
                samples[name].append(timed(functools.partial(store.write_sync, rows)) * 1000)
    finally:
        store.dispose()
    print(f"\n{dialect}: LedgerStore.write_sync, one request (1-3 rows) per call, "
          f"{rounds} interleaved rounds each")
    print(f"{'':18} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in samples.items():
        ordered = sorted(values)
        print(f"{name:18} {ordered[len(ordered) // 2]:8.3f} "
              f"{ordered[int(len(ordered) * 0.99)]:8.3f} {statistics.fmean(values):8.3f}")


def _as_dicts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{**dict(zip(COLUMNS, r, strict=True)), "metadata": json.loads(r[20])} for r in rows]


# --- main -------------------------------------------------------------------------------------


def fresh_url(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'ledger.db'}"
    from tests.fixtures.databases import create_postgres_database

    return create_postgres_database("llmgw_bench")


def run(backend: str, n_rows: int, warm_runs: int, write: bool, tmp: Path,
        baseline: str | None) -> bool:
    url = fresh_url(backend, tmp)
    upgrade(url)
    t0 = time.perf_counter()
    load(url, Generator().rows(n_rows))
    print(f"\n{backend}: generated and loaded {n_rows:,} rows in {time.perf_counter() - t0:.1f} s")
    if baseline:
        print_table(backend, n_rows, time_reports(url, warm_runs, load_impl(baseline)), baseline)
    ok = print_table(backend, n_rows, time_reports(url, warm_runs, load_impl(None)),
                     "llmgw.ledger.report")
    if write:
        write_cost(url, requests=2000, rounds=4)
    if backend == "postgresql":
        from tests.fixtures.databases import drop_postgres_database

        drop_postgres_database(url)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="also measure the write-side cost")
    ap.add_argument("--baseline", metavar="REPORT_PY",
                    help="also time this report.py's functions (e.g. the previous version)")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-report-") as tmp:
        try:
            for backend in args.db.split(","):
                results[backend] = run(backend, args.rows, args.warm_runs, args.write, Path(tmp),
                                       args.baseline)
        finally:
            from tests.fixtures.databases import stop_postgres_server

            stop_postgres_server()
    print("\n" + "  ".join(f"{b}: {'met' if ok else 'NOT met'}" for b, ok in results.items()))


if __name__ == "__main__":
    main()
