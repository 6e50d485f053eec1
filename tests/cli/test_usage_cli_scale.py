"""`llmgw usage report` itself (a subprocess, as a user runs it) over a generated 10^5-row
ledger, in all three formats, against plain SQL sums computed here, to the micro-dollar.

The ledger is tests/ledger/test_report_scale.py's: every status, fallback chains, NULL keys,
requests across midnight, project or agent, bulk-loaded (COPY on PostgreSQL) in several
statements so the rollup trigger sees requests cut across them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from tests.fixtures.databases import BACKENDS, fresh_database
from tests.ledger.test_report_scale import ROWS, expected, load

ROOT = Path(__file__).resolve().parents[2]
MEASURES = ("requests", "attempts", "errors", "cached", "refused", "prompt_tokens",
            "completion_tokens", "cache_read_tokens", "cache_write_tokens",
            "cache_write_1h_tokens", "reasoning_tokens", "cost_micros", "saved_micros")
COUNTS = len(MEASURES) - 2  # the integer columns before cost and saved

# (--by, CLI filters, the same filters as datetimes for the plain SQL). Edges off midnight,
# so the CLI adds rollup days, partial days and split requests.
CASES: list[tuple[str, list[str], dict[str, Any]]] = [
    ("project", [], {}),
    ("day", ["--since", "2026-09-04T05:30", "--until", "2026-09-29T18:00"],
     {"since": datetime(2026, 9, 4, 5, 30), "until": datetime(2026, 9, 29, 18)}),
    ("model", ["--project", "p03", "--since", "2026-09-09"],
     {"project": "p03", "since": datetime(2026, 9, 9)}),
    ("agent-type", ["--agent", "a007", "--until", "2026-09-21T23:00"],
     {"agent": "a007", "until": datetime(2026, 9, 21, 23)}),
    ("deployment", ["--project", "p07", "--since", "2026-09-26T13:00"],
     {"project": "p07", "since": datetime(2026, 9, 26, 13)}),
    ("provider", ["--since", "2026-09-10T01:00", "--until", "2026-09-10T22:00"],
     {"since": datetime(2026, 9, 10, 1), "until": datetime(2026, 9, 10, 22)}),
]
FORMATS = ("table", "json", "csv")


@pytest.fixture(scope="module", params=BACKENDS)
def ledger(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated ledger holding the generated rows, shared by the module's tests."""
    with fresh_database(request.param, tmp_path_factory.mktemp("ledger")) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            load(engine, ROWS)
        finally:
            engine.dispose()
        yield url


def usd(micros: int) -> str:
    """Exact dollars with six decimals, from integers only."""
    return f"{micros // 10**6}.{micros % 10**6:06d}"


def report(url: str, by: str, fmt: str, filters: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    env.pop("LLMGW_LEDGER_URL", None)
    env.pop("LLMGW_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "llmgw.cli", "usage", "report", "--ledger-url", url,
         "--by", by, "--format", fmt, *filters],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def parsed(fmt: str, out: str) -> list[tuple[str, tuple[int, ...], tuple[str, str]]]:
    """Rows in output order: key, the measures, (cost_usd, saved_usd) as printed."""
    if fmt == "json":
        return [(r["key"], tuple(r[m] for m in MEASURES), (r["cost_usd"], r["saved_usd"]))
                for r in json.loads(out)]
    if fmt == "csv":
        return [(r["key"], tuple(int(r[m]) for m in MEASURES), (r["cost_usd"], r["saved_usd"]))
                for r in csv.DictReader(io.StringIO(out))]
    rows = []
    for line in out.splitlines():
        cells = line.split()
        # key, the counts (with thousands commas), cost USD, saved USD; headers and rules fail.
        if len(cells) == COUNTS + 3 and all(c.replace(",", "").isdigit()
                                            for c in cells[1:COUNTS + 1]):
            cost, saved = cells[COUNTS + 1], cells[COUNTS + 2]
            micros = [int(v.replace(".", "")) for v in (cost, saved)]
            counts = tuple(int(c.replace(",", "")) for c in cells[1:COUNTS + 1])
            rows.append((cells[0], (*counts, *micros), (cost, saved)))
    return rows


def want_rows(url: str, by: str, filters: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    engine = make_engine(url)
    try:
        rows = expected(engine, by, **filters)
    finally:
        engine.dispose()
    # The CLI's order: days ascending, else cost descending then key.
    order = (lambda kv: kv[0]) if by == "day" else (lambda kv: (-kv[1][COUNTS], kv[0]))
    return sorted(rows.items(), key=order)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("by", "cli_filters", "filters"), CASES,
                         ids=[case[0] for case in CASES])
def test_report_matches_plain_sql(ledger: str, by: str, cli_filters: list[str],
                                  filters: dict[str, Any], fmt: str) -> None:
    have = parsed(fmt, report(ledger, by, fmt, cli_filters))
    want = want_rows(ledger, by, filters)
    assert want  # the filters leave something to compare
    if fmt == "table":
        total_row = [r for r in have if r[0] == "TOTAL"]
        have = [r for r in have if r[0] != "TOTAL"]
        engine = make_engine(ledger)
        try:
            total = expected(engine, None, **filters)["TOTAL"]
        finally:
            engine.dispose()
        assert [(k, v) for k, v, _ in total_row] == [("TOTAL", total)]
    assert [(key, values) for key, values, _ in have] == want
    # Dollars are the micro-dollar sums, exactly.
    assert [money for _, _, money in have] == [(usd(v[COUNTS]), usd(v[COUNTS + 1]))
                                               for _, v in want]
    # Every token kind is there, and not all zeros (the generated rows have them all).
    assert all(sum(v[i] for _, v in want) > 0 for i in range(7, COUNTS))
