"""Engines for the ledger database (SQLite or PostgreSQL) and where its URL comes from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from llmgw.errors import ConfigError, LedgerError

DEFAULT_LEDGER_URL = "sqlite:///llmgw.db"
ENV_LEDGER_URL = "LLMGW_LEDGER_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
URL_HINT = "Use sqlite:///path/to/llmgw.db or postgresql+psycopg://user:password@host:5432/db."


def parse_url(url: str | URL) -> URL:
    """Parse a ledger URL; bare `postgresql://` and `postgres://` get the psycopg (v3) driver."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        # The text may hold a password, so it is not echoed back.
        raise LedgerError("The ledger URL is not a valid database URL.", hint=URL_HINT) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"Unsupported ledger database {parsed.get_backend_name()!r}.", hint=URL_HINT
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as text with its password masked, for messages and logs."""
    try:
        return parse_url(url).render_as_string(hide_password=True)
    except LedgerError:
        return "<invalid URL>"


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a file-backed SQLite URL, else None (in-memory or not SQLite)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str | URL, *, pool_size: int = 5, max_overflow: int = 10,
                echo: bool = False) -> Engine:
    """An engine tuned for the ledger: WAL SQLite or a pre-pinged PostgreSQL pool."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # Servers and proxies drop idle connections; recycle before they do.
        pool_recycle=1800,
        # A connection the server or a proxy dropped is replaced at checkout. The request
        # path's calls use `pg_async`'s pool; this one serves the CLI and reads in threads.
        pool_pre_ping=True,
        # Fail fast on an unreachable server instead of the OS default of minutes.
        connect_args={"connect_timeout": 10},
    )


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo)
    file_backed = path is not None

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # a DB-API connection: untyped
        cur = dbapi_conn.cursor()
        try:
            if file_backed:
                # WAL lets readers (reports) run while a gateway writes.
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            # A batch's savepoints journal the pages they change; past 64 KiB SQLite moves
            # that journal to a temporary file on disk, which made a usage row dearer.
            cur.execute("PRAGMA temp_store=MEMORY")
        finally:
            cur.close()

    return engine


def resolve_ledger_url(cli_value: str | None = None) -> str:
    """The ledger URL: `--ledger-url` > env LLMGW_LEDGER_URL > config `llmgw.ledger.url` > default."""
    if cli_value:
        return cli_value
    env_value = os.environ.get(ENV_LEDGER_URL)
    if env_value:
        return env_value
    configured = _url_from_config()
    return configured or DEFAULT_LEDGER_URL


def _url_from_config() -> str | None:
    # Imported lazily and optionally: the CLI must work before/without llmgw.config.loading.
    try:
        from llmgw.config.loading import load_config
    except ImportError as exc:
        if exc.name == "llmgw.config.loading":  # no such module or no load_config in it
            return None
        raise  # llmgw.config.loading exists but is broken: say so
    try:
        config = load_config()
    except FileNotFoundError:
        return None
    except ConfigError as exc:
        # Only "the default config file does not exist" means "use the default URL": a bad
        # file, or a missing file that LLMGW_CONFIG names explicitly, must surface.
        missing = exc.key is None and exc.path is not None and not Path(exc.path).exists()
        if missing and not os.environ.get("LLMGW_CONFIG"):
            return None
        raise
    if config is None:
        return None
    llmgw_section = getattr(config, "llmgw", None)
    ledger = getattr(llmgw_section, "ledger", None)
    url = getattr(ledger, "url", None)
    return str(url) if url else None
