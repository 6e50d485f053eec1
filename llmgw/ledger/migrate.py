"""Schema migrations, run through Alembic's API (no alembic.ini needed).

Alembic is imported inside the functions: `llmgw --help` should not pay for its import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

import llmgw
from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine, safe_url, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

UPGRADE_HINT = "Run `llmgw db upgrade`."


def migrations_dir() -> Path:
    """The `migrations/` folder: next to the package (checkout, editable) or `llmgw_migrations`."""
    source_tree = Path(llmgw.__file__).resolve().parents[1] / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    try:
        import llmgw_migrations  # shipped in wheels
    except ImportError:
        raise LedgerError(
            "The ledger migrations are not installed (no migrations/ folder or llmgw_migrations).",
            hint="Reinstall llmgw.",
        ) from None
    return Path(llmgw_migrations.__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """A programmatic Alembic config; env.py uses `attributes["connection"]` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this llmgw ships."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "migrations/versions is empty"
    return revision


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the ledger at `url` up to `revision`."""
    from alembic import command

    with _connection(url, begin=True) as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(url: str | Engine, revision: str) -> None:
    """Migrate the ledger at `url` down to `revision` ("base" drops everything)."""
    from alembic import command

    with _connection(url, begin=True) as conn:
        command.downgrade(alembic_config(conn), revision)


def current(url: str | Engine) -> str | None:
    """The ledger's revision, or None if it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    path = sqlite_path(_url_of(url))
    if path is not None and not path.exists():
        return None  # connecting would create an empty file
    with _connection(url, begin=False) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_current(url: str | Engine) -> None:
    """Raise LedgerError unless the ledger exists and is at the head revision."""
    where = safe_url(_url_of(url))
    path = sqlite_path(_url_of(url))
    if path is not None and not path.exists():
        raise LedgerError(f"No ledger database at {path}.", hint="Run `llmgw db upgrade` to create it.")
    found, wanted = current(url), head()
    if found == wanted:
        return
    if found is None:
        raise LedgerError(f"The ledger at {where} has no schema yet.", hint=UPGRADE_HINT)
    if not _is_known(found):
        raise LedgerError(
            f"The ledger at {where} is at revision {found!r}, which this llmgw does not know.",
            hint="It was migrated by a newer llmgw: upgrade llmgw.",
        )
    raise LedgerError(
        f"The ledger at {where} is at revision {found!r}; this llmgw needs {wanted!r}.",
        hint=UPGRADE_HINT,
    )


def _url_of(target: str | Engine) -> str | URL:
    return target.url if isinstance(target, Engine) else target


def _is_known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        return False
    return True


@contextmanager
def _connection(url: str | Engine, *, begin: bool) -> Iterator[Connection]:
    """A connection to the ledger; driver errors become LedgerError without the password."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.connect() as conn:
            if begin:
                with conn.begin():
                    yield conn
            else:
                yield conn
    except DBAPIError as exc:
        raise ledger_error(exc, engine) from None
    finally:
        if engine is not url:
            engine.dispose()


def ledger_error(exc: DBAPIError, engine: Engine) -> LedgerError:
    """Translate a driver error into a one-line LedgerError that names the database."""
    where = engine.url.render_as_string(hide_password=True)
    detail = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    password = engine.url.password
    if password:
        detail = detail.replace(str(password), "***")
    if exc.connection_invalidated or _is_connect_failure(exc):
        return LedgerError(
            f"Cannot connect to the ledger at {where}: {detail}",
            hint="Check --ledger-url / LLMGW_LEDGER_URL and that the database server is running.",
        )
    return LedgerError(f"Ledger database error at {where}: {detail}")


def _is_connect_failure(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(s in text for s in ("connection", "could not connect", "unable to open database"))
