"""usage_report against an independent Python computation over the same generated ledger rows."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.models import UsageEvent
from llmgw.ledger.report import (
    GROUP_BY_VALUES,
    ReportRow,
    micros_to_usd,
    usage_report,
    usage_totals,
)
from tests.fixtures.databases import BACKENDS, fresh_database

Row = dict[str, Any]

PROJECTS = ["alpha", "beta", "gamma", "delta"]
AGENTS = {f"agent-{i}": t for i, t in enumerate(
    ["software-engineer", "qa-engineer", None, "product-owner", "software-engineer", None,
     "devops-engineer", "qa-engineer"])}
# (model_group, deployment_id, provider, model)
DEPLOYMENTS = [
    ("high-reasoning", "claude-primary", "anthropic", "claude-sonnet-4-5"),
    ("high-reasoning", "gpt4-backup", "openai", "gpt-4-turbo"),
    ("fast-response", "gemini-flash", "gemini", "gemini-2.0-flash"),
    ("fast-response", "ollama-local", "ollama", "qwen2.5-coder"),
    ("cost-optimized", "ruv-auto", "ruvector", "auto"),
]
START = datetime(2026, 10, 20)
SPAN = timedelta(days=22)  # crosses the October / November boundary
BOUNDARY = datetime(2026, 11, 1)


def generate_rows(seed: int = 20261123, requests: int = 2000) -> list[Row]:
    """Varied ledger rows: all statuses, fallback chains, NULL keys, month boundary."""
    rng = random.Random(seed)
    rows: list[Row] = []

    sessions: dict[str, str | None] = {}

    def add(req: str, attempt: int, ts: datetime, agent: str, project: str,
            dep: tuple[str, str | None, str | None, str | None], status: str, **kw: Any) -> None:
        # A request's rows share its session (an agent run of a few), or have none.
        if req not in sessions:
            sessions[req] = (None if rng.random() < 0.2
                             else f"{agent}-run-{rng.randrange(6)}")
        rows.append(dict(
            session_id=sessions[req],
            request_id=req, attempt=attempt, ts=ts, agent_id=agent, agent_type=AGENTS[agent],
            project_id=project, model_group=dep[0], deployment_id=dep[1], provider=dep[2],
            model=dep[3], status=status, error_class=kw.get("error_class"),
            error_message=None, prompt_tokens=kw.get("prompt", 0),
            completion_tokens=kw.get("completion", 0),
            cache_read_tokens=kw.get("read", 0), cache_write_tokens=kw.get("written", 0),
            cache_write_1h_tokens=kw.get("written_1h", 0), reasoning_tokens=kw.get("reasoning", 0),
            cost_micros=kw.get("cost", 0), saved_micros=kw.get("saved", 0),
            latency_ms=rng.uniform(5, 900), stream=rng.random() < 0.2,
            metadata_={"n": attempt} if rng.random() < 0.1 else None,
        ))

    for n in range(requests):
        req = f"req-{n:05d}"
        project, agent = rng.choice(PROJECTS), rng.choice(list(AGENTS))
        ts = START + timedelta(microseconds=rng.randrange(int(SPAN.total_seconds() * 1e6)))
        group = rng.choice(DEPLOYMENTS)[0]
        group_deps = [d for d in DEPLOYMENTS if d[0] == group]
        kind = rng.choices(["refused", "cached", "call"], weights=[1, 2, 7])[0]
        if kind == "refused":
            add(req, 1, ts, agent, project, (group_deps[0][0], None, None, None), "refused",
                prompt=rng.randint(1, 4000))
            continue
        if kind == "cached":
            add(req, 1, ts, agent, project, rng.choice(group_deps), "cached",
                saved=rng.randint(1, 80_000))
            continue
        attempts = rng.choice([1, 1, 1, 1, 2, 2, 3])
        for attempt in range(1, attempts + 1):
            dep = rng.choice(DEPLOYMENTS if attempt > 1 else group_deps)  # fallbacks may leave the group
            last = attempt == attempts
            status = rng.choice(["ok"] * 8 + ["error", "partial"]) if last else "error"
            prompt = rng.randint(1, 8000)
            completion = 0 if status == "error" else rng.randint(1, 2000)
            # Occasionally huge: sums must stay exact beyond 2**31 and 2**53 micro-dollars.
            cost = 0 if status == "error" else rng.choice(
                [rng.randint(1, 50_000), rng.randint(1, 50_000), rng.randint(1, 3_000_000_000)])
            written = rng.randint(0, prompt // 4)
            add(req, attempt, ts, agent, project, dep, status, prompt=prompt,
                completion=completion, cost=cost, read=rng.randint(0, prompt // 2),
                written=written, written_1h=rng.randint(0, written),
                reasoning=rng.randint(0, completion),
                error_class="RateLimited" if status == "error" else None)
            # Gaps up to 2 h, so some requests straddle midnight (and thus two days).
            ts += timedelta(seconds=rng.uniform(0.1, 7200), microseconds=rng.randrange(10**6))
    # Rows exactly on the edges used by the since/until filters below.
    for i, ts in enumerate([BOUNDARY - timedelta(microseconds=1), BOUNDARY,
                            BOUNDARY + timedelta(days=3)]):
        add(f"edge-{i}", 1, ts, "agent-2", "alpha", DEPLOYMENTS[0], "ok",
            prompt=10, completion=5, cost=4 * 10**15)
    return rows


ROWS = generate_rows()

KEYS: dict[str, Callable[[Row], str]] = {
    "project": lambda r: r["project_id"],
    "agent": lambda r: r["agent_id"],
    "agent-type": lambda r: r["agent_type"] or "-",
    "model": lambda r: r["model"] or "-",
    "provider": lambda r: r["provider"] or "-",
    "day": lambda r: f"{r['ts'].year:04d}-{r['ts'].month:02d}-{r['ts'].day:02d}",
    "model-group": lambda r: r["model_group"],
    "deployment": lambda r: r["deployment_id"] or "-",
    "session": lambda r: r["session_id"] or "-",
}

FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "project": {"project": "alpha"},
    "agent": {"agent": "agent-2"},
    "since-until": {"since": datetime(2026, 10, 28, 6), "until": datetime(2026, 11, 4, 18)},
    # since is inclusive, until exclusive: the edge rows sit exactly on these instants.
    "edges": {"since": BOUNDARY, "until": BOUNDARY + timedelta(days=3)},
    "aware-since": {"since": datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
    "combined": {"project": "beta", "agent": "agent-5", "since": datetime(2026, 10, 25)},
    "nothing": {"project": "no-such-project"},
    # Sessions come from usage_events alone, never the rollup: edges and whole days alike.
    "session": {"session": "agent-3-run-2"},
    "session+project+since": {"session": "agent-1-run-4", "project": "gamma",
                              "since": datetime(2026, 10, 27, 13, 30)},
}


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _selected(project: str | None = None, agent: str | None = None,
              since: datetime | None = None, until: datetime | None = None,
              session: str | None = None) -> list[Row]:
    return [r for r in ROWS
            if (project is None or r["project_id"] == project)
            and (session is None or r["session_id"] == session)
            and (agent is None or r["agent_id"] == agent)
            and (since is None or r["ts"] >= _naive(since))
            and (until is None or r["ts"] < _naive(until))]


def _aggregate(key: str, rows: list[Row]) -> dict[str, Any]:
    statuses = [r["status"] for r in rows]
    return {
        "key": key,
        "requests": len({r["request_id"] for r in rows}),
        "attempts": sum(s in ("ok", "error", "partial") for s in statuses),
        "errors": statuses.count("error"),
        "cached": statuses.count("cached"),
        "refused": statuses.count("refused"),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        **{kind: sum(r[kind] for r in rows) for kind in
           ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")},
        "cost_micros": sum(r["cost_micros"] for r in rows),
        "saved_micros": sum(r["saved_micros"] for r in rows),
    }


def expected_report(by: str, **filters: Any) -> list[dict[str, Any]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in _selected(**filters):
        groups[KEYS[by](row)].append(row)
    out = [_aggregate(key, rows) for key, rows in groups.items()]
    if by == "day":
        return sorted(out, key=lambda a: a["key"])
    return sorted(out, key=lambda a: (-a["cost_micros"], a["key"]))


def _plain(row: ReportRow) -> dict[str, Any]:
    return row.model_dump(exclude={"cost_usd", "saved_usd"})


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated ledger per backend holding ROWS (seeded once: the tests only read)."""
    with fresh_database(request.param, tmp_path_factory.mktemp("report")) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(insert(UsageEvent.__table__), ROWS)
            yield engine
        finally:
            engine.dispose()


def test_generated_data_covers_the_cases() -> None:
    assert len(ROWS) > 2500
    assert {r["status"] for r in ROWS} == {"ok", "error", "cached", "refused", "partial"}
    assert any(r["agent_type"] is None for r in ROWS)
    assert {r["ts"].month for r in ROWS} == {10, 11}
    by_request: dict[str, set[str]] = defaultdict(set)
    for r in ROWS:
        by_request[r["request_id"]].add(KEYS["day"](r))
    assert any(len(days) > 1 for days in by_request.values()), "no request spans midnight"
    assert sum(r["cost_micros"] for r in ROWS) > 2**53


@pytest.mark.parametrize("filter_name", FILTERS)
@pytest.mark.parametrize("by", GROUP_BY_VALUES)
def test_report_matches_python(seeded: Engine, by: str, filter_name: str) -> None:
    filters = FILTERS[filter_name]
    got = [_plain(r) for r in usage_report(seeded, by=by, **filters)]  # type: ignore[arg-type]
    assert got == expected_report(by, **filters)
    if filter_name != "nothing":
        assert got, "a filter that should match rows matched none"


@pytest.mark.parametrize("filter_name", FILTERS)
def test_totals_to_the_micro_dollar(seeded: Engine, filter_name: str) -> None:
    filters = FILTERS[filter_name]
    total = usage_totals(seeded, **filters)
    want = _aggregate("TOTAL", _selected(**filters))
    assert _plain(total) == want
    assert total.cost_usd == Decimal(want["cost_micros"]) / Decimal(10**6)
    by_project = usage_report(seeded, by="project", **filters)
    assert sum(r.cost_micros for r in by_project) == total.cost_micros
    assert sum((r.cost_usd for r in by_project), Decimal(0)) == total.cost_usd


def test_day_keys_around_midnight(seeded: Engine) -> None:
    rows = usage_report(seeded, by="day", since=BOUNDARY - timedelta(microseconds=1),
                        until=BOUNDARY + timedelta(microseconds=1), project="alpha")
    assert {r.key for r in rows} >= {"2026-10-31", "2026-11-01"}


def test_unknown_group_by_is_rejected(seeded: Engine) -> None:
    with pytest.raises(ValueError, match="unknown group-by"):
        usage_report(seeded, by="colour")  # type: ignore[arg-type]


@pytest.mark.parametrize(("micros", "text"), [
    (0, "0.000000"), (1, "0.000001"), (1_234_567, "1.234567"), (10**6, "1.000000"),
    (7_000_000_000_000, "7000000.000000"), (2**63 - 1, "9223372036854.775807"),
])
def test_cost_usd_is_exact(micros: int, text: str) -> None:
    row = ReportRow(key="k", cost_micros=micros, saved_micros=micros)
    assert format(row.cost_usd, "f") == text == format(micros_to_usd(micros), "f")
    assert row.model_dump(mode="json")["cost_usd"] == text
