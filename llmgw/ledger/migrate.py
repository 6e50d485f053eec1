"""Schema migrations, run through Alembic's API (no alembic.ini needed).

Alembic is imported inside the functions: `llmgw --help` should not pay for its import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from llmgw.errors import LedgerError
from llmgw.ledger.engine import make_engine, safe_url, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

UPGRADE_HINT = "Run `llmgw db upgrade`."

# Two lineages share one env.py (see migrations/README.md): `versions/` starts at the baseline,
# one revision that creates 0017's schema; `legacy/` is the history 0001..0017 it squashed.
# The baseline has id 0017 too: a ledger at 0017 is on both, whichever way it got there.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LEGACY = MIGRATIONS / "legacy"
BASELINE = "0017"
_NAMED = ("head", "heads", "base")  # Alembic's names: always the baseline's lineage


def migrations_dir() -> Path:
    """The Alembic folder: env.py, script.py.mako, versions/, legacy/, sql/."""
    return MIGRATIONS


def alembic_config(connection: Connection | None = None, *, legacy: bool = False) -> Config:
    """A programmatic Alembic config; env.py uses `attributes["connection"]` when given.
    `legacy`: the pre-baseline chain (`legacy/`) instead of `versions/`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")  # a path with spaces stays one path
    if legacy:
        config.set_main_option("version_locations", str(LEGACY))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this llmgw ships."""
    revision = _scripts(legacy=False).get_current_head()
    assert revision is not None, "llmgw/ledger/migrations/versions is empty"
    return revision


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the ledger at `url` up to `revision`. A ledger made before the baseline climbs
    the old chain to 0017 first; a pre-baseline `revision` (00NN < 0017) stays on that chain."""
    from alembic import command

    with _connection(url, begin=True) as conn:
        if _legacy_only(revision):
            command.upgrade(alembic_config(conn, legacy=True), revision)
            return
        if _legacy_only(_revision_of(conn)):
            command.upgrade(alembic_config(conn, legacy=True), BASELINE)
        command.upgrade(alembic_config(conn), revision)


def downgrade(url: str | Engine, revision: str) -> None:
    """Migrate the ledger at `url` down to `revision` ("base" drops everything). Below 0017
    it steps down to the baseline, then down the old chain."""
    from alembic import command

    with _connection(url, begin=True) as conn:
        on_legacy = _legacy_only(_revision_of(conn))
        if _legacy_only(revision) and not on_legacy:
            command.downgrade(alembic_config(conn), BASELINE)
            on_legacy = True
        command.downgrade(alembic_config(conn, legacy=on_legacy), revision)


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
    return _known(revision, legacy=False) or _known(revision, legacy=True)


def _legacy_only(revision: str | None) -> bool:
    """A revision of the pre-baseline chain below 0017 (the two share 0017 only)."""
    return revision is not None and revision not in _NAMED and not _known(revision, legacy=False) \
        and _known(revision, legacy=True)


def _known(revision: str, *, legacy: bool) -> bool:
    from alembic.util import CommandError

    try:
        return _scripts(legacy=legacy).get_revision(revision) is not None
    except CommandError:
        return False


@cache
def _scripts(*, legacy: bool) -> ScriptDirectory:
    """A lineage's revisions (read once: they are package files)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(legacy=legacy))


def _revision_of(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


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
