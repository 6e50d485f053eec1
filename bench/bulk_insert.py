"""Bulk insert into the ledger with the rollup trigger on: rows/s at 10k and 100k rows.

One statement per run: a COPY on PostgreSQL, an executemany on SQLite (one transaction), of
tests/ledger/test_report_scale.py's generated rows into a fresh ledger migrated to
--revision. The ratio is the per-row time at 100k over the per-row time at 10k: about 1 when
the insert is linear, about 10 when it is quadratic. PostgreSQL runs two cases:

- fresh: the COPY is the connection's first insert;
- small plans: the connection inserted a few rows into the table after it was analyzed while
  small (a new ledger's first writes, then autovacuum), so the trigger's cached plans were
  made for a one-page table; then the COPY. This is where revision 0006 goes quadratic.

PostgreSQL: the tests' embedded server (or LLMGW_TEST_POSTGRES_URL). A run longer than
--timeout seconds is cancelled (statement_timeout) and shown as "> timeout".

    .venv/bin/python bench/bulk_insert.py [--revision head|0006] [--db sqlite,postgresql]
        [--sizes 10000,100000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.* (the generator and the embedded PostgreSQL)

from llmgw.ledger.engine import make_engine  # noqa: E402
from llmgw.ledger.migrate import upgrade  # noqa: E402
from llmgw.ledger.store import UsageInsert  # noqa: E402
from tests.fixtures.databases import fresh_database, stop_postgres_server  # noqa: E402
from tests.ledger.test_report_scale import copy_rows, generate  # noqa: E402

WARM_ROWS = 10  # the "small plans" case: rows written before the COPY


def run_sqlite(url: str, rows: list[dict[str, Any]], _: int) -> float | None:
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        insert = UsageInsert(engine)
        params = list(insert.params(rows))
        start = time.perf_counter()
        raw.cursor().executemany(insert.sql, params)
        raw.commit()
        return time.perf_counter() - start
    finally:
        raw.close()
        engine.dispose()


def run_postgres(small_plans: bool) -> Callable[[str, list[dict[str, Any]], int], float | None]:
    def run(url: str, rows: list[dict[str, Any]], timeout_s: int) -> float | None:
        import psycopg

        engine = make_engine(url)
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if small_plans:
                copy_rows(cur, rows[:WARM_ROWS // 2])
                raw.commit()
                cur.execute("ANALYZE usage_events")
                raw.commit()
                copy_rows(cur, rows[WARM_ROWS // 2:WARM_ROWS])
                raw.commit()
                rows = rows[WARM_ROWS:]
            cur.execute(f"SET statement_timeout = '{timeout_s}s'")
            start = time.perf_counter()
            try:
                copy_rows(cur, rows)
                raw.commit()
            except psycopg.errors.QueryCanceled:
                raw.rollback()
                return None
            return time.perf_counter() - start
        finally:
            raw.close()
            engine.dispose()

    return run


def measure(backend: str, case: str, runner: Callable[[str, list[dict[str, Any]], int],
                                                      float | None],
            revision: str, sizes: list[int], timeout_s: int, tmp: Path) -> None:
    per_row: dict[int, float | None] = {}
    for n in sizes:
        extra = WARM_ROWS if case == "small plans" else 0
        rows = generate(n + extra, seed=2026)[:n + extra]
        with fresh_database(backend, tmp) as url:
            upgrade(url, revision)
            seconds = runner(url, rows, timeout_s)
        per_row[n] = None if seconds is None else seconds / n
        shown = (f"> {timeout_s} s (cancelled)" if seconds is None
                 else f"{seconds:8.2f} s {n / seconds:10,.0f} rows/s")
        print(f"{backend:10} {case:12} rev {revision:5} {n:>8,} rows  {shown}", flush=True)
    small, big = min(sizes), max(sizes)
    if len(sizes) > 1:
        a, b = per_row[small], per_row[big]
        ratio = "n/a (a run was cancelled)" if a is None or b is None else f"{b / a:.2f}"
        print(f"{backend:10} {case:12} rev {revision:5} per-row time {big:,}/{small:,}: {ratio}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--revision", default="head", help="migrate the fresh ledgers to this")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per PostgreSQL COPY")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for backend in args.db.split(","):
                if backend == "sqlite":
                    measure(backend, "executemany", run_sqlite, args.revision, sizes,
                            args.timeout, Path(tmp))
                else:
                    for case, small in (("fresh", False), ("small plans", True)):
                        measure(backend, case, run_postgres(small), args.revision, sizes,
                                args.timeout, Path(tmp))
        finally:
            stop_postgres_server()


if __name__ == "__main__":
    main()
