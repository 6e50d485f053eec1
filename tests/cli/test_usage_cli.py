"""`llmgw usage report` and `llmgw db` through typer's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, insert, text
from typer.testing import CliRunner, Result

from llmgw.cli import app
from llmgw.errors import ConfigError
from llmgw.ledger.engine import DEFAULT_LEDGER_URL, make_engine, resolve_ledger_url
from llmgw.ledger.migrate import current, head
from llmgw.ledger.models import UsageEvent
from llmgw.ledger.timespec import TimeSpecError, parse_duration, parse_time, utcnow

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ledger URL or config file from the developer's environment."""
    monkeypatch.delenv("LLMGW_LEDGER_URL", raising=False)
    monkeypatch.delenv("LLMGW_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def _event(request_id: str, attempt: int, project: str, status: str, cost: int,
           ts: datetime, **kw: object) -> dict[str, object]:
    return dict(request_id=request_id, attempt=attempt, ts=ts, agent_id=kw.get("agent", "dev-1"),
                agent_type=kw.get("agent_type"), project_id=project, model_group="fast",
                deployment_id="sim-openai", provider="openai", model="gpt-4o-mini",
                status=status, prompt_tokens=kw.get("prompt", 100),
                completion_tokens=kw.get("completion", 20), cache_read_tokens=kw.get("read", 60),
                cache_write_tokens=kw.get("written", 30), cache_write_1h_tokens=kw.get("hour", 10),
                reasoning_tokens=kw.get("reasoning", 5),
                cost_micros=cost, saved_micros=kw.get("saved", 0), stream=False,
                session_id=kw.get("session"))


@pytest.fixture
def ledger(ledger_engine: Engine, migrated_ledger_url: str) -> str:
    """A migrated ledger with a few known rows; returns its URL."""
    now = utcnow()
    rows = [
        _event("r1", 1, "apollo", "error", 0, now - timedelta(hours=1), session="run-a"),
        _event("r1", 2, "apollo", "ok", 1_234_567, now - timedelta(hours=1), session="run-a"),
        _event("r2", 1, "apollo", "cached", 0, now - timedelta(minutes=5), saved=1_234_567,
               session="run-a"),
        _event("r3", 1, "zeus", "ok", 5, now - timedelta(days=10), agent="qa-1", session="run-b"),
        _event("r4", 1, "zeus", "refused", 0, now - timedelta(days=10), agent="qa-1"),
    ]
    with ledger_engine.begin() as conn:
        conn.execute(insert(UsageEvent.__table__), rows)
    return migrated_ledger_url


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_json(ledger: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["key"] for d in data] == ["apollo", "zeus"]
    apollo = data[0]
    assert apollo == {
        "key": "apollo", "requests": 2, "attempts": 2, "errors": 1, "cached": 1, "refused": 0,
        "prompt_tokens": 300, "completion_tokens": 60, "cache_read_tokens": 180,
        "cache_write_tokens": 90, "cache_write_1h_tokens": 30, "reasoning_tokens": 15,
        "cost_micros": 1_234_567,
        "cost_usd": "1.234567", "saved_micros": 1_234_567, "saved_usd": "1.234567",
    }
    assert data[1]["cost_usd"] == "0.000005" and data[1]["refused"] == 1


def test_csv_with_filters(ledger: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger, "--format", "csv", "--by", "agent",
                    "--since", "7d")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("key,requests,attempts,errors,cached,refused,prompt_tokens,"
                               "completion_tokens,cache_read_tokens,cache_write_tokens,"
                               "cache_write_1h_tokens,reasoning_tokens,cost_micros")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in rows] == [("dev-1", "2", "1.234567")]


def test_table_has_a_total(ledger: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger, "--by", "agent-type")
    assert result.exit_code == 0, result.output
    assert "Usage by agent-type" in result.stdout
    lines = result.stdout.splitlines()
    total = next(line for line in lines if line.strip().startswith("TOTAL"))
    assert total.split() == ["TOTAL", "4", "3", "1", "1", "1", "500", "100", "300", "150", "50",
                             "25", "1.234572", "1.234567"]
    assert all(word in result.stdout for word in ("cache", "reads", "writes", "1h", "reason"))
    assert any(line.strip().startswith("-") and "1.234572" in line for line in lines)


def test_table_narrow_terminal_never_truncates_amounts(ledger: str) -> None:
    result = CliRunner(env={"COLUMNS": "40"}).invoke(
        app, ["usage", "report", "--ledger-url", ledger])
    assert result.exit_code == 0, result.output
    assert "1.234572" in result.stdout and "…" not in result.stdout


def test_empty_report(ledger: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger, "--project", "nobody")
    assert result.exit_code == 0 and "no usage recorded" in result.stdout
    result = invoke("usage", "report", "--ledger-url", ledger, "--project", "nobody",
                    "--format", "json")
    assert json.loads(result.stdout) == []


def test_url_from_env(ledger: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGW_LEDGER_URL", ledger)
    result = invoke("usage", "report", "--format", "json", "--project", "zeus")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["key"] == "zeus"


@pytest.mark.parametrize(("args", "message"), [
    (["--by", "colour"], "Unknown --by 'colour'. Use one of: project, agent"),
    (["--since", "yesterdayish"], "Cannot read the time 'yesterdayish'"),
    (["--until", "2026-13-01"], "Cannot read the time '2026-13-01'"),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "is not before --until"),
    (["--format", "xml"], "Unknown --format 'xml'"),
    (["--since", "99999999d"], "longer than 100 years"),
    (["--since", "99999999999999999999999w"], "longer than 100 years"),
    (["--until", "36501d"], "longer than 100 years"),
    (["--since", "0001-01-01T00:00+01:00"], "out of range"),
    (["--until", "9999-12-31T23:59-05:00"], "out of range"),
])
def test_bad_arguments_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("usage", "report", "--ledger-url", f"sqlite:///{tmp_path}/x.db", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_unmigrated_ledger_exits_1(ledger_url: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger_url)
    assert result.exit_code == 1
    assert "no schema" in result.stderr and "llmgw db upgrade" in result.stderr
    assert "Traceback" not in result.output


def test_missing_sqlite_file_exits_1_and_creates_nothing(tmp_path: Path) -> None:
    result = invoke("usage", "report")  # default sqlite:///llmgw.db in the (empty) cwd
    assert result.exit_code == 1
    assert "No ledger database at llmgw.db" in result.stderr
    assert not (tmp_path / "llmgw.db").exists()


def test_unreachable_database_exits_1_without_password(tmp_path: Path) -> None:
    url = f"postgresql://llmgw:hunter2@/ledger?host={tmp_path}"
    result = invoke("usage", "report", "--ledger-url", url)
    assert result.exit_code == 1
    assert "Cannot connect to the ledger" in result.stderr and "hunter2" not in result.output


def test_db_commands(ledger_url: str) -> None:
    result = invoke("db", "current", "--ledger-url", ledger_url)
    assert result.exit_code == 0 and "no schema" in result.stdout
    result = invoke("db", "upgrade", "--ledger-url", ledger_url)
    assert result.exit_code == 0, result.output
    assert f"empty -> {head()}" in result.stdout and current(ledger_url) == head()
    assert f"{head()} (head)" in invoke("db", "current", "--ledger-url", ledger_url).stdout
    # Downgrading can delete data: it asks first.
    result = runner.invoke(app, ["db", "downgrade", "base", "--ledger-url", ledger_url], input="n\n")
    assert result.exit_code == 1 and current(ledger_url) == head()
    result = invoke("db", "downgrade", "base", "--yes", "--ledger-url", ledger_url)
    assert result.exit_code == 0, result.output
    assert current(ledger_url) is None


def test_help_lists_the_groups() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "usage" in result.stdout and "db" in result.stdout
    result = invoke("usage", "report", "--help")
    assert result.exit_code == 0 and "agent-type" in result.stdout


# --- where the ledger URL comes from --------------------------------------------------------


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_ledger_url(None) == DEFAULT_LEDGER_URL  # no env, no config file in cwd
    config = SimpleNamespace(llmgw=SimpleNamespace(ledger=SimpleNamespace(url="sqlite:///cfg.db")))
    monkeypatch.setattr("llmgw.config.loading.load_config", lambda *a, **k: config)
    assert resolve_ledger_url(None) == "sqlite:///cfg.db"
    monkeypatch.setenv("LLMGW_LEDGER_URL", "sqlite:///env.db")
    assert resolve_ledger_url(None) == "sqlite:///env.db"
    assert resolve_ledger_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_malformed_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "model_list.yaml").write_text("model_list: [\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        resolve_ledger_url(None)
    result = invoke("usage", "report")
    assert result.exit_code == 1 and "model_list.yaml" in result.stderr
    assert "Traceback" not in result.output


def test_explicit_missing_config_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("LLMGW_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError):
        resolve_ledger_url(None)


# --- time arguments ---------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 15, 30, 0)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", NOW - timedelta(minutes=30)),
    ("24h", NOW - timedelta(hours=24)),
    ("7d", NOW - timedelta(days=7)),
    ("2w", NOW - timedelta(weeks=2)),
    ("45s", NOW - timedelta(seconds=45)),
    ("2026-11-01", datetime(2026, 11, 1)),
    ("2026-11-01T12:00", datetime(2026, 11, 1, 12)),
    ("2026-11-01 12:00:30", datetime(2026, 11, 1, 12, 0, 30)),
    ("2026-11-01T12:00Z", datetime(2026, 11, 1, 12)),
    ("2026-11-01T12:00+02:00", datetime(2026, 11, 1, 10)),
    ("today", datetime(2026, 11, 23)),
    ("yesterday", datetime(2026, 11, 22)),
    ("now", NOW),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "7", "d7", "7 days", "20261101", "2026-11-31", "tomorrow",
                                  "36501d", "5215w", "9" * 30 + "s"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(TimeSpecError):
        parse_time(text, now=NOW)


def test_durations_up_to_a_century_are_read_longer_ones_are_not() -> None:
    assert parse_time("36500d", now=NOW) == NOW - timedelta(days=36500)
    assert parse_duration("36500d") == timedelta(days=36500)
    assert parse_duration("99999999d") is None  # `db reconcile --older-than` says so in one line


def _plain_sql(ledger: str, where: str = "1 = 1", **params: object) -> dict[str, tuple[int, ...]]:
    engine = make_engine(ledger)
    try:
        with engine.connect() as conn:
            return {r[0] or "-": tuple(int(v) for v in r[1:]) for r in conn.execute(text(
                "SELECT session_id, COUNT(DISTINCT request_id), SUM(cost_micros), "
                "SUM(saved_micros), SUM(prompt_tokens) FROM usage_events WHERE " + where
                + " GROUP BY session_id"), params)}
    finally:
        engine.dispose()


def test_by_session_json_and_csv_equal_plain_sql(ledger: str) -> None:
    want = _plain_sql(ledger)
    assert set(want) == {"run-a", "run-b", "-"}
    result = invoke("usage", "report", "--ledger-url", ledger, "--by", "session", "--format",
                    "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {d["key"]: (d["requests"], d["cost_micros"], d["saved_micros"], d["prompt_tokens"])
            for d in data} == want
    assert [d["key"] for d in data][0] == "run-a"  # by cost, highest first
    result = invoke("usage", "report", "--ledger-url", ledger, "--by", "session", "--format",
                    "csv", "--project", "apollo")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["key"]: (int(r["requests"]), int(r["cost_micros"])) for r in rows} == {
        k: (v[0], v[1]) for k, v in _plain_sql(ledger, "project_id = :p", p="apollo").items()}


def test_session_filter_and_table(ledger: str) -> None:
    result = invoke("usage", "report", "--ledger-url", ledger, "--by", "agent", "--session",
                    "run-a", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["key"], row["requests"], row["cost_micros"], row["cached"]) == (
        "dev-1", 2, 1_234_567, 1)
    result = invoke("usage", "report", "--ledger-url", ledger, "--by", "session", "--session",
                    "run-b")
    assert result.exit_code == 0, result.output
    assert "Usage by session session run-b" in result.stdout
    assert "run-b" in result.stdout and "0.000005" in result.stdout
    assert "run-a" not in result.stdout
    result = invoke("usage", "report", "--ledger-url", ledger, "--session", "nobody")
    assert result.exit_code == 0 and "no usage recorded" in result.stdout
