"""`llmgw serve`: the OpenAI- and Anthropic-compatible HTTP front (FastAPI on uvicorn), one
gateway per worker process. With several workers on PostgreSQL (and Redis), budgets stay
exact across them (docs/deployment.md)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from llmgw.cli._common import EXIT_USAGE, errors_as_exit, fail

app = typer.Typer(help="Serve the gateway over HTTP (OpenAI and Anthropic APIs).")


@app.callback(invoke_without_command=True)
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the "
                                           "network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (one gateway each).")] = 1,
    config: Annotated[Path | None, typer.Option(help="model_list.yaml (default: env "
                                                     "LLMGW_CONFIG, then ./model_list.yaml).")
                      ] = None,
    grace: Annotated[float | None, typer.Option(help="Seconds in-flight requests get to "
                                                     "finish on SIGTERM (default 20).")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Request body limit (default "
                                                             "4 MiB); larger gets a 413.")
                              ] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow browser calls from this "
                                                               "origin (repeatable); default: "
                                                               "CORS off.")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help=(
        "Accept this Host header (repeatable; `name` any port, `name:port`, `*` any host); "
        "127.0.0.1, localhost and [::1] always are. Default on 0.0.0.0: any host, with a "
        "warning."))] = None,
    allowed_origin: Annotated[list[str] | None, typer.Option(help=(
        "Accept browser requests from this Origin (repeatable; `https://name[:port]`, "
        "`scheme://name:*`); loopback and same-origin pages always are, and so is every "
        "--cors-origin."))] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = True,
) -> None:
    """Serve POST /v1/chat/completions, POST /v1/messages, GET /v1/models, GET /v1/usage,
    POST /v1/estimate, /healthz, /readyz and /metrics. Callers need a key from
    `llmgw keys create`."""
    if workers < 1:
        fail("--workers must be at least 1.", code=EXIT_USAGE)
    from llmgw.config.loading import config_path, load_config
    from llmgw.ledger.migrate import ensure_current
    from llmgw.server.settings import ServerSettings

    with errors_as_exit():
        settings = ServerSettings.from_env(
            grace_s=grace, max_body_bytes=max_body_bytes,
            cors_origins=tuple(cors_origin) if cors_origin else None, bind_host=host,
            allowed_hosts=tuple(allowed_host) if allowed_host else None,
            allowed_origins=tuple(allowed_origin) if allowed_origin else None)
        path = config_path(config).resolve()
        cfg = load_config(path)
        ensure_current(cfg.llmgw.ledger.url)  # fail here, not in every worker's start-up
    if workers > 1 and cfg.llmgw.ledger.url.startswith("sqlite"):
        typer.echo("Note: several workers share a SQLite ledger through its file lock; "
                   "PostgreSQL scales further.", err=True)
    from llmgw.server.hosts import exposure_warning

    warning = exposure_warning(settings.bind_host, settings.allowed_hosts)
    if warning:  # exposed to the network and accepting any Host: the operator must hear it
        typer.secho(warning, err=True, fg=typer.colors.RED, bold=True)
    # The workers build their app from the environment (`app_from_env`).
    os.environ["LLMGW_CONFIG"] = str(path)
    os.environ.update(settings.to_env())
    # Dashboard sessions are signed: every worker must sign with the same secret.
    os.environ.setdefault("LLMGW_UI_SECRET", secrets.token_urlsafe(32))
    import uvicorn

    grace = settings.grace_s  # uvicorn annotates this int, then waits with asyncio.wait_for
    uvicorn.run("llmgw.server.app:app_from_env", factory=True, host=host, port=port,
                # httptools when installed (`uvicorn[standard]`), else h11; the app checks the
                # header size itself (llmgw.server.limits) whichever parses.
                workers=workers, lifespan="on", http="auto",
                h11_max_incomplete_event_size=settings.max_header_bytes,
                timeout_graceful_shutdown=grace,  # type: ignore[arg-type]  # a wait_for timeout: floats do
                access_log=access_log,
                proxy_headers=False, server_header=False)
