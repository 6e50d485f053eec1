"""usage_report / usage_totals at scale (the rollup of migration 0003) against plain SQL.

A generated ledger of 10^5 rows, bulk-loaded in several statements (so the rollup trigger sees
requests whose rows arrive in different statements, like `llmgw db reconcile` writes them),
then every --by and the totals, unfiltered and filtered, compared with a direct GROUP BY over
usage_events written here in plain SQL, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.models import USAGE_COLUMNS
from llmgw.ledger.report import GROUP_BY_VALUES, ReportRow, usage_report, usage_totals
from llmgw.ledger.store import OPTIONAL_USAGE, LedgerStore, UsageInsert
from tests.fixtures.databases import fresh_database

# The columns of the rows made here: those every revision since 0001 has (the tests load
# ledgers at older revisions too, where cache reads were `cached_tokens`, 0015 renamed it);
# 0013's and 0015's columns take their defaults there. At head: every column.
COLUMNS = tuple("cached_tokens" if c == "cache_read_tokens" else c
                for c in USAGE_COLUMNS if c not in OPTIONAL_USAGE)
AT_HEAD = USAGE_COLUMNS
START = datetime(2026, 9, 1)
DAYS = 40
# (group, deployment, provider, model); NULL keys too.
DEPLOYMENTS = [("smart", "claude", "anthropic", "sonnet"), ("smart", "gpt", "openai", "gpt-4"),
               ("fast", "flash", "gemini", "flash"), ("fast", "mini", "openai", "gpt-4o-mini"),
               ("cheap", "auto", "ruvector", "auto"), ("local", "gguf", None, None)]
PROJECTS = [f"p{i:02d}" for i in range(12)]
TYPES = ["dev", "qa", "ops", "pm", None]


def generate(n_rows: int, seed: int = 2026) -> list[dict[str, Any]]:
    """Ledger rows: every status, fallback chains across deployments and groups, NULL keys,
    requests straddling midnight and (unrealistic, but the sums must still be exact) requests
    whose rows change project or agent."""
    rng = random.Random(seed)
    agents = [(f"a{i:03d}", rng.choice(PROJECTS), rng.choice(TYPES)) for i in range(90)]
    rows: list[dict[str, Any]] = []
    while len(rows) < n_rows:
        request_id = uuid.UUID(int=rng.getrandbits(128)).hex
        agent, project, agent_type = rng.choice(agents)
        ts = START + timedelta(microseconds=rng.randrange(DAYS * 86_400 * 10**6))
        kind = rng.random()
        session = None if rng.random() < 0.15 else f"{agent}-s{rng.randrange(8)}"
        attempts = 1 if kind < 0.2 else rng.choice([1, 1, 1, 2, 2, 3, 4])
        for attempt in range(1, attempts + 1):
            group, dep, provider, model = rng.choice(DEPLOYMENTS)
            if kind < 0.05:
                status, dep, provider, model = "refused", None, None, None
            elif kind < 0.2:
                status = "cached"
            else:
                status = rng.choice(["ok"] * 6 + ["partial"]) if attempt == attempts else "error"
            if kind > 0.995:  # a row under another project or agent than its request's first
                agent, project, agent_type = rng.choice(agents)
            cost = rng.choice([0, rng.randint(1, 90_000), rng.randint(1, 4 * 10**12)])
            prompt, completion = rng.randint(0, 9000), rng.randint(0, 3000)
            read, written = rng.randint(0, prompt // 2), rng.randint(0, prompt // 3)
            rows.append(dict(
                request_id=request_id, attempt=attempt, ts=ts, agent_id=agent,
                agent_type=agent_type, project_id=project, model_group=group,
                deployment_id=dep, provider=provider, model=model, status=status,
                error_class="Timeout" if status == "error" else None, error_message=None,
                prompt_tokens=prompt, completion_tokens=completion,
                cache_read_tokens=read, cached_tokens=read,  # its name before 0015
                cache_write_tokens=written, cache_write_1h_tokens=rng.randint(0, written),
                reasoning_tokens=rng.randint(0, completion),
                cost_micros=0 if status in ("error", "refused") else cost,
                saved_micros=rng.randint(1, 50_000) if status == "cached" else 0,
                latency_ms=None, stream=False, metadata=None, session_id=session,
                end_user=None, requested_model=None, dialect="chat",
                rates=None))
            # Fallbacks run seconds later; now and then hours later, past midnight.
            ts += timedelta(seconds=rng.choice([0.5, 3, 20, 4 * 3600]))
    return rows


ROWS = generate(100_000)
# usage_events rows a trigger may read per row a COPY inserts: a few per row (its request's
# rows, once per statement of the trigger) when linear; the whole table when quadratic.
MAX_READS_PER_ROW = 50


def load(engine: Engine, rows: list[dict[str, Any]], statements: int = 4,
         columns: tuple[str, ...] = AT_HEAD) -> list[float]:
    """Bulk insert (executemany on SQLite, COPY on PostgreSQL) in several statements; a
    request's last row goes in a later statement than its first ones now and then.

    PostgreSQL: returns, per COPY, the rows of usage_events its trigger read per row inserted
    (see trigger_reads): a linear trigger reads a few, a quadratic one the whole table."""
    rng = random.Random(7)
    batches: list[list[dict[str, Any]]] = [[] for _ in range(statements)]
    for i, row in enumerate(rows):
        late = row["attempt"] > 1 and rng.random() < 0.1
        batches[min(statements - 1, i * statements // len(rows) + late)].append(row)
    reads = []
    for batch in batches:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if engine.dialect.name == "sqlite":
                insert = UsageInsert(engine, columns)
                cur.executemany(insert.sql, insert.params(batch))
            else:
                with trigger_reads(raw) as read:
                    copy_rows(cur, batch, columns)
                reads.append(read() / len(batch))
            raw.commit()
        finally:
            raw.close()
    return reads


def copy_rows(cur: Any, rows: list[dict[str, Any]], columns: tuple[str, ...] = AT_HEAD) -> None:
    """One COPY statement (so one run of the PostgreSQL statement trigger)."""
    with cur.copy(f"COPY usage_events ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(row[c] for c in columns))


def write_before_0013(engine: Engine, rows: list[dict[str, Any]]) -> None:
    raw = engine.raw_connection()
    try:
        copy_rows(raw.cursor(), rows, COLUMNS)
        raw.commit()
    finally:
        raw.close()


@contextmanager
def trigger_reads(raw: Any) -> Iterator[Callable[[], int]]:
    """Count the usage_events rows read by the statements run inside the block, triggers'
    included, from their executed plans (auto_explain, nested statements, actual rows x
    loops, rows a filter removed too). Not a timing: the count is the work itself."""
    plans: list[dict[str, Any]] = []

    def collect(diag: Any) -> None:
        message = diag.message_primary or ""
        if "plan:" in message:
            plans.append(json.loads(message.split("plan:", 1)[1])["Plan"])

    cur = raw.cursor()
    for sql in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_nested_statements = on",
                "SET auto_explain.log_analyze = on", "SET auto_explain.log_timing = off",
                "SET auto_explain.log_format = json", "SET client_min_messages = log"):
        cur.execute(sql)
    raw.driver_connection.add_notice_handler(collect)
    try:
        yield lambda: sum(_reads(plan) for plan in plans)
    finally:
        raw.driver_connection.remove_notice_handler(collect)
        cur.execute("SET client_min_messages = notice")
        cur.execute("SET auto_explain.log_min_duration = -1")


def _reads(node: dict[str, Any]) -> int:
    own = 0
    if node.get("Relation Name") == "usage_events" and "Scan" in node["Node Type"]:
        per_loop = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                    + node.get("Rows Removed by Index Recheck", 0))
        own = round(per_loop * node["Actual Loops"])
    return own + sum(_reads(child) for child in node.get("Plans", []))


# --- the expected answer: plain SQL over usage_events ------------------------------------------

KEY_SQL = {"project": "project_id", "agent": "agent_id", "agent-type": "agent_type",
           "model": "model", "provider": "provider", "model-group": "model_group",
           "deployment": "deployment_id", "session": "session_id"}
DAY_SQL = {"sqlite": "substr(ts, 1, 10)", "postgresql": "to_char(ts, 'YYYY-MM-DD')"}
MEASURES_SQL = """
    COUNT(DISTINCT request_id),
    SUM(CASE WHEN status IN ('ok', 'error', 'partial') THEN 1 ELSE 0 END),
    SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
    SUM(CASE WHEN status = 'cached' THEN 1 ELSE 0 END),
    SUM(CASE WHEN status = 'refused' THEN 1 ELSE 0 END),
    SUM(prompt_tokens), SUM(completion_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),
    SUM(cache_write_1h_tokens), SUM(reasoning_tokens), SUM(cost_micros), SUM(saved_micros)"""


def expected(engine: Engine, by: str | None, **filters: Any) -> dict[str, tuple[int, ...]]:
    """key -> (requests, attempts, errors, cached, refused, prompt, completion, cache reads,
    cache writes, 1h writes, reasoning, cost, saved)."""
    where, params = ["1 = 1"], {}
    for name, sql in (("project", "project_id = :project"), ("agent", "agent_id = :agent"),
                      ("since", "ts >= :since"), ("until", "ts < :until"),
                      ("session", "session_id = :session")):
        if filters.get(name) is not None:
            where.append(sql)
            params[name] = filters[name]
    key = ("'TOTAL'" if by is None else DAY_SQL[engine.dialect.name] if by == "day"
           else KEY_SQL[by])
    group = "" if by is None else f" GROUP BY {key}"
    sql = (f"SELECT {key}, {MEASURES_SQL} FROM usage_events "
           f"WHERE {' AND '.join(where)}{group}")
    with engine.connect() as conn:
        rows = conn.execute(text(sql).bindparams(**params)).all()
    return {"-" if r[0] is None else str(r[0]): tuple(int(v or 0) for v in r[1:]) for r in rows
            if r[1]}


def got(row: ReportRow) -> tuple[int, ...]:
    return (row.requests, row.attempts, row.errors, row.cached, row.refused, row.prompt_tokens,
            row.completion_tokens, row.cache_read_tokens, row.cache_write_tokens,
            row.cache_write_1h_tokens, row.reasoning_tokens, row.cost_micros, row.saved_micros)


FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    # Not on midnight: whole days from the rollup, the edges from usage_events.
    "project+since/until": {"project": "p03", "since": START + timedelta(days=3, hours=5.5),
                            "until": START + timedelta(days=31, seconds=1)},
    "agent+until": {"agent": "a007", "until": START + timedelta(days=20, hours=23)},
    "days on midnight": {"since": START + timedelta(days=12), "until": START + timedelta(days=16)},
    "project+since": {"project": "p07", "since": START + timedelta(days=25, hours=13)},
    "within one day": {"since": START + timedelta(days=9, hours=1),
                       "until": START + timedelta(days=9, hours=22)},
    "session": {"session": "a011-s3"},
    "session+project+since": {"session": "a042-s5", "project": "p06",
                              "since": START + timedelta(days=7, hours=2.25)},
}


def check_all(engine: Engine) -> list[str]:
    """Every --by and the totals under every filter; the mismatches, described."""
    wrong = []
    for name, filters in FILTERS.items():
        want_total = expected(engine, None, **filters).get("TOTAL", (0,) * 13)
        if got(usage_totals(engine, **filters)) != want_total:
            wrong.append(f"TOTAL [{name}]: {got(usage_totals(engine, **filters))} != {want_total}")
        for by in GROUP_BY_VALUES:
            report = usage_report(engine, by=by, **filters)  # type: ignore[arg-type]
            have = {r.key: got(r) for r in report}
            want = expected(engine, by, **filters)
            if have != want or len(report) != len(want):
                diff = {k: (have.get(k), want.get(k)) for k in set(have) | set(want)
                        if have.get(k) != want.get(k)}
                wrong.append(f"--by {by} [{name}]: {len(diff)} keys differ, e.g. "
                             f"{sorted(diff.items(), key=str)[:2]}")
    return wrong


# --- tests ----------------------------------------------------------------------------------------


def test_generated_ledger_has_the_hard_cases() -> None:
    assert len(ROWS) >= 100_000
    assert {r["status"] for r in ROWS} == {"ok", "error", "partial", "cached", "refused"}
    by_request: dict[str, set[tuple[str, str, str]]] = {}
    for r in ROWS:
        by_request.setdefault(r["request_id"], set()).add(
            (r["ts"].date().isoformat(), r["project_id"], r["agent_id"]))
    spans = [len(v) for v in by_request.values()]
    assert sum(n > 1 for n in spans) > 100  # split requests: several days, projects or agents
    assert max(spans) > 1 and sum(n == 1 for n in spans) > 0.95 * len(spans)
    assert any(r["model"] is None for r in ROWS) and any(r["agent_type"] is None for r in ROWS)
    assert sum(r["cost_micros"] for r in ROWS) > 2**53


def test_every_report_matches_plain_sql(migrated_ledger_url: str) -> None:
    engine = make_engine(migrated_ledger_url)
    try:
        reads = load(engine, ROWS)
        # Each COPY's trigger read a few rows per row it inserted, not the whole table.
        assert all(r < MAX_READS_PER_ROW for r in reads), reads
        with engine.connect() as conn:
            cells = conn.execute(text("SELECT COUNT(*) FROM usage_rollup")).scalar_one()
            split = conn.execute(text("SELECT COUNT(*) FROM usage_split_requests")).scalar_one()
        assert 0 < cells < len(ROWS) / 2  # the rollup is much smaller than the ledger
        assert split > 100
        assert check_all(engine) == []
        # Non-empty answers: a filter that matched nothing would compare nothing.
        assert all(usage_totals(engine, **f).requests > 0 for f in FILTERS.values())
    finally:
        engine.dispose()


def test_rows_written_one_request_at_a_time_and_before_0003(ledger_url: str) -> None:
    """Rows in the ledger before migration 0003 are rolled up by it; later rows by the trigger,
    one small transaction per request as the gateway writes them."""
    rows = generate(3000, seed=5)
    before, after = rows[:1800], rows[1800:]
    upgrade(ledger_url, "0002")
    engine = make_engine(ledger_url)
    try:
        load(engine, before, statements=1, columns=COLUMNS)
        upgrade(ledger_url)
        store = LedgerStore(ledger_url, engine=engine)  # the gateway's own ledger write
        for request_id in dict.fromkeys(r["request_id"] for r in after):
            store.write_sync([r for r in after if r["request_id"] == request_id])
        assert check_all(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_copy_after_small_writes_on_a_small_table_stays_linear(ledger_url: str) -> None:
    """What went quadratic: the session's trigger plans were made while the table was small and
    analyzed (a new ledger's first writes), then a bulk COPY ran on the same connection."""
    upgrade(ledger_url)
    rows = generate(4000, seed=3)
    engine = make_engine(ledger_url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        copy_rows(cur, rows[:5])
        raw.commit()
        cur.execute("ANALYZE usage_events")  # as autovacuum does to a new ledger
        raw.commit()
        copy_rows(cur, rows[5:10])  # the trigger's statements planned on a one-page table
        raw.commit()
        with trigger_reads(raw) as read:
            copy_rows(cur, rows[10:])
        raw.commit()
        assert read() / len(rows[10:]) < MAX_READS_PER_ROW
        assert check_all(engine) == []
    finally:
        raw.close()
        engine.dispose()


def _rollup_state(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        rollup = conn.execute(text("SELECT * FROM usage_rollup ORDER BY project_id, agent_id, "
                                   "day, agent_type, model_group, deployment_id, provider, "
                                   "model, null_keys")).all()
        split = conn.execute(text("SELECT request_id FROM usage_split_requests "
                                  "ORDER BY request_id")).all()
    return rollup, split


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_the_rollup_is_the_one_0003s_trigger_wrote(ledger_url: str, tmp_path: Any) -> None:
    """Migration 0007 changes how the trigger works, not what it writes: the same rows, bulk
    (several COPYs, requests cut across them) then one request per statement, give the same
    usage_rollup and usage_split_requests at 0006 and at head."""
    rows = generate(20_000, seed=9)
    bulk, single = rows[:19_000], rows[19_000:]
    with fresh_database("postgresql", tmp_path) as old_url:
        states = []
        for url, revision in ((old_url, "0006"), (ledger_url, "head")):
            upgrade(url, revision)
            engine = make_engine(url)
            try:
                load(engine, bulk, columns=AT_HEAD if revision == "head" else COLUMNS)
                store = LedgerStore(url, engine=engine)
                for request_id in dict.fromkeys(r["request_id"] for r in single):
                    one = [r for r in single if r["request_id"] == request_id]
                    if revision == "head":
                        store.write_sync(one)
                    else:  # the store writes 0013's and 0015's columns: one COPY too
                        write_before_0013(engine, one)
                states.append(_rollup_state(engine))
            finally:
                engine.dispose()
    old, new = states
    assert len(old[0]) > 1000 and len(old[1]) > 10  # a real rollup, split requests included
    # 0015's sums of every kind are columns after 0006's: those are the same.
    assert [tuple(r[:len(old[0][0])]) for r in new[0]] == [tuple(r) for r in old[0]]
    assert new[1] == old[1]


def test_empty_ledger(ledger_engine: Engine) -> None:
    assert got(usage_totals(ledger_engine)) == (0,) * 13
    assert all(usage_report(ledger_engine, by=by) == [] for by in GROUP_BY_VALUES)  # type: ignore[arg-type]
