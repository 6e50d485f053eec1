"""PostgreSQL function bodies by name and version, read from this package's SQL folders.

Each version is its own file (`<name>.v<version>.sql`) and never changes once a revision
installs it: a revision names the version it installs, so replaying history installs exactly
what it did then. Two folders, package data (no __init__.py):

- `sql/`: the versions the baseline and every later revision install;
- `legacy/sql/`: versions only the pre-baseline chain (`legacy/`) installed. `install` and
  `load` never read them; the old chain uses `legacy_install` / `legacy_load`, which read both.
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

_NAME = re.compile(r"[a-z][a-z0-9_]*")
CURRENT = ("sql",)
WITH_LEGACY = ("sql", "legacy/sql")


def path_name(name: str, version: int) -> str:
    """The file name of `name` at `version`, e.g. usage_events_rollup.v3.sql."""
    if not _NAME.fullmatch(name) or isinstance(version, bool) or not isinstance(version, int) \
            or version < 1:
        raise ValueError(f"bad SQL file name or version: {name!r}, {version!r}; "
                         "use a lower_snake_case name and a version >= 1")
    return f"{name}.v{version}.sql"


def folder(relative: str) -> Traversable:
    """One of this package's SQL folders ("sql" or "legacy/sql")."""
    found = files(__package__ or "llmgw.ledger.migrations")
    for part in relative.split("/"):
        found = found.joinpath(part)
    return found


def load(name: str, version: int, *, folders: tuple[str, ...] = CURRENT) -> str:
    """The text of `sql/<name>.v<version>.sql`; FileNotFoundError names the file if missing."""
    file_name = path_name(name, version)
    for relative in folders:
        resource = folder(relative).joinpath(file_name)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    raise FileNotFoundError(f"llmgw/ledger/migrations/sql/{file_name} is missing: "
                            "reinstall llmgw, or add the file next to its other versions")


def install(bind: Any, *versions: tuple[str, int], folders: tuple[str, ...] = CURRENT) -> None:
    """Run each `(name, version)` file on a migration's connection; SQLite has no functions.
    `exec_driver_sql`: the text goes to the server as written (no bind parsing)."""
    if bind.dialect.name == "postgresql":
        for name, version in versions:
            bind.exec_driver_sql(load(name, version, folders=folders))


def legacy_load(name: str, version: int) -> str:
    """`load` for the pre-baseline chain: `sql/`, then `legacy/sql/`."""
    return load(name, version, folders=WITH_LEGACY)


def legacy_install(bind: Any, *versions: tuple[str, int]) -> None:
    """`install` for the pre-baseline chain: `sql/`, then `legacy/sql/`."""
    install(bind, *versions, folders=WITH_LEGACY)


def drop(bind: Any, *names: str) -> None:
    """Drop functions by name (each name is one function: no argument list needed)."""
    if bind.dialect.name == "postgresql":
        for name in names:
            bind.exec_driver_sql(f"DROP FUNCTION {name}")
