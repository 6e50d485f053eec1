"""PostgreSQL function bodies by name and version, read from the package's `sql/` folder.

Each version is its own file (`<name>.v<version>.sql`) and never changes once a migration
loads it: a migration names the version it installs, so replaying history installs exactly
what it did then. The folder is package data, not a package (no __init__.py).
"""

from __future__ import annotations

import re
from importlib.resources import files

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
