"""PostgreSQL function bodies by name and version, read from the package's `sql/` folder.

Each version is its own file (`<name>.v<version>.sql`) and never changes once a migration
loads it: a migration names the version it installs, so replaying history installs exactly
what it did then. The folder is package data, not a package (no __init__.py).
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def path_name(name: str, version: int) -> str:
    """The file name of `name` at `version`, e.g. usage_events_rollup.v2.sql."""
    if not _NAME.fullmatch(name) or isinstance(version, bool) or not isinstance(version, int) \
            or version < 1:
        raise ValueError(f"bad SQL file name or version: {name!r}, {version!r}; "
                         "use a lower_snake_case name and a version >= 1")
    return f"{name}.v{version}.sql"


def load(name: str, version: int) -> str:
    """The text of `sql/<name>.v<version>.sql`; FileNotFoundError names the file if missing."""
    resource = files("llmgw.ledger").joinpath("sql", path_name(name, version))
    if not resource.is_file():
        raise FileNotFoundError(f"llmgw/ledger/sql/{path_name(name, version)} is missing: "
                                "reinstall llmgw, or add the file next to its other versions")
    return resource.read_text(encoding="utf-8")


def install(bind: Any, *versions: tuple[str, int]) -> None:
    """Run each `(name, version)` file on a migration's connection; SQLite has no functions.
    `exec_driver_sql`: the text goes to the server as written (no bind parsing)."""
    if bind.dialect.name == "postgresql":
        for name, version in versions:
            bind.exec_driver_sql(load(name, version))


def drop(bind: Any, *names: str) -> None:
    """Drop functions by name (each name is one function: no argument list needed)."""
    if bind.dialect.name == "postgresql":
        for name in names:
            bind.exec_driver_sql(f"DROP FUNCTION {name}")
