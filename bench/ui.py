"""`/ui` at scale: how long each dashboard page takes on a large ledger, end to end.

Loads bench/report.py's generated ledger (many projects, agents, groups, every status,
fallback chains), its 90 days ending now, into a fresh SQLite file and/or PostgreSQL database,
starts a real uvicorn server with the app on it (deployments never called), signs in with an
admin key and a project key, and times GET of each page over loopback HTTP: cold (first
request) and warm (median of the next runs). The health page probes providers and is left
out. Target: every page <= 300 ms warm.

    .venv/bin/python bench/ui.py [--rows 1000000] [--db sqlite,postgresql] [--warm-runs 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Not bench/ itself: its http.py would shadow the standard library's `http`.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import httpx

from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from llmgw.ledger.migrate import upgrade
from llmgw.ledger.timespec import utcnow
from llmgw.server.app import create_app
from llmgw.server.settings import ServerSettings
from tests.server.conftest import port_of, start_server, stop_server
from tests.support import sim_config

TARGET_S = 0.3


def _report_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    # The same workload, its 90 days ending now (the dashboard shows the last 30).
    module.START = utcnow() - timedelta(days=module.DAYS)
    return module


def pages(project: str) -> list[tuple[str, str]]:
    """(session, path) pairs to time."""
    out = []
    for who, scope in (("admin", ""), ("admin", f"project={project}"), ("project", "")):
        amp = f"&{scope}" if scope else ""
        q = f"?{scope}" if scope else ""
        out += [(who, f"/ui/spend{q}"), (who, f"/ui/spend?stack=agent-type{amp}"),
                (who, f"/ui/usage?by=agent{amp}"), (who, f"/ui/usage?by=deployment&since=7d{amp}"),
                (who, f"/ui/usage?by=model&sort=requests&dir=asc{amp}"),
                (who, f"/ui/usage.csv?by=agent{amp}"), (who, f"/ui/budgets{q}"),
                (who, f"/ui/requests{q}")]
    return out


def run(backend: str, n_rows: int, warm_runs: int, tmp: Path, bench: Any) -> bool:
    url = bench.fresh_url(backend, tmp)
    upgrade(url)
    t0 = time.perf_counter()
    bench.load(url, bench.Generator().rows(n_rows))
    print(f"\n{backend}: generated and loaded {n_rows:,} rows in "
          f"{time.perf_counter() - t0:.1f} s")
    engine = make_engine(url)
    keys = ApiKeyStore(engine)
    project = "proj-007"
    config = sim_config("http://127.0.0.1:9", "http://127.0.0.1:9", url)
    server = start_server(create_app(config, ServerSettings()))
    base = f"http://127.0.0.1:{port_of(server)}"
    clients = {}
    try:
        for who, secret in (("admin", keys.create(project_id=None, admin=True).secret),
                            ("project", keys.create(project_id=project).secret)):
            client = httpx.Client(base_url=base, timeout=120)
            assert client.post("/ui/login", data={"key": secret}).status_code == 303
            clients[who] = client
        with engine.connect() as conn:
            story = conn.exec_driver_sql(
                "SELECT request_id FROM usage_events WHERE project_id = 'proj-007' "
                "ORDER BY id DESC LIMIT 1").scalar()
        todo = pages(project) + [("project", f"/ui/requests/{story}"),
                                 ("admin", "/ui/requests?id=nope")]
        print(f"{'session':8} {'page':52} {'cold ms':>8} {'warm ms':>8}")
        worst = 0.0
        for who, path in todo:
            client = clients[who]

            def get(client: httpx.Client = client, path: str = path) -> float:
                t = time.perf_counter()
                response = client.get(path)
                assert response.status_code in (200, 404), (path, response.status_code)
                return time.perf_counter() - t

            cold = get()
            warm = statistics.median(get() for _ in range(warm_runs))
            worst = max(worst, warm)
            print(f"{who:8} {path[:52]:52} {cold * 1000:8.1f} {warm * 1000:8.1f}")
        ok = worst <= TARGET_S
        print(f"worst warm: {worst * 1000:.1f} ms -> target <= {TARGET_S * 1000:.0f} ms: "
              f"{'met' if ok else 'NOT met'}")
        return ok
    finally:
        for client in clients.values():
            client.close()
        stop_server(server)
        engine.dispose()
        if backend == "postgresql":
            from tests.fixtures.databases import drop_postgres_database

            drop_postgres_database(url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--warm-runs", type=int, default=5)
    args = ap.parse_args()
    from llmgw._litellm import set_offline_env

    set_offline_env()
    bench = _report_bench()
    results = {}
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-ui-") as tmp:
        try:
            for backend in args.db.split(","):
                results[backend] = run(backend, args.rows, args.warm_runs, Path(tmp), bench)
        finally:
            from tests.fixtures.databases import stop_postgres_server

            stop_postgres_server()
    print("\n" + "  ".join(f"{b}: {'met' if ok else 'NOT met'}" for b, ok in results.items()))


if __name__ == "__main__":
    main()
