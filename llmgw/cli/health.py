"""`llmgw health`: probe every deployment of the config (imports LiteLLM only when run)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from llmgw.cli._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    console,
    err_console,
    errors_as_exit,
    fail,
    print_wide,
)
from llmgw.config.loading import load_config

if TYPE_CHECKING:
    from llmgw.observe.health import DeploymentHealth

FORMATS = ("table", "json")

app = typer.Typer(help="Probe every deployment of the config.", invoke_without_command=True)


@app.callback()
def health(
    config: Annotated[str | None, typer.Option("--config", help="Config file (default: env "
                                               "LLMGW_CONFIG, then ./model_list.yaml).")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    timeout: Annotated[float, typer.Option(help="Seconds each probe may take.")] = 5.0,
) -> None:
    """Up or down, latency, limits and current use, cooldown and error of each deployment;
    exit 1 if any is down."""
    if output not in FORMATS:
        fail(f"Unknown --format {output!r}.", hint="Use table or json.", code=EXIT_USAGE)
    if not timeout > 0:
        fail(f"--timeout must be positive, got {timeout:g}.", code=EXIT_USAGE)
    with errors_as_exit():
        cfg = load_config(config)
    # Heavy imports only now: `llmgw --help` must not pay for LiteLLM.
    from llmgw.observe.health import probe
    from llmgw.redact import Redactor, install_log_filter

    redactor = Redactor(cfg.secret_values())
    install_log_filter(redactor)
    router, router_ok = _router(cfg, redactor)
    if output == "table":
        with err_console.status(f"Probing {len(cfg.model_list)} deployments..."):
            results = asyncio.run(probe(cfg, router, timeout=timeout, redactor=redactor))
        _print_table(results, cfg.source)
    else:
        results = asyncio.run(probe(cfg, router, timeout=timeout, redactor=redactor))
        typer.echo(json.dumps([r.model_dump() for r in results], indent=2))
    if not router_ok or any(r.status == "down" for r in results):
        raise typer.Exit(EXIT_FAILURE)


def _router(cfg: Any, redactor: Any) -> tuple[Any, bool]:
    """The Router the gateway would build, for its cooldown state; None if it cannot be built
    (then the probes still run: which endpoints answer is what one wants to know then)."""
    try:
        from llmgw.routing.router import build_router

        return build_router(cfg, redactor), True
    except Exception as exc:
        text = (redactor.scrub(str(exc)) or type(exc).__name__).strip().splitlines()[0]
        err_console.print(f"[yellow]Warning:[/] LiteLLM's Router cannot be built from this config, "
                          f"so the gateway cannot start: {escape(text)}", soft_wrap=True,
                          highlight=False)
        return None, False


def _cooldown(r: DeploymentHealth) -> str:
    if not r.cooling_down:
        return "-"
    why = " (key refused)" if r.cooldown_status in (401, 403) else (
        f" (HTTP {r.cooldown_status})" if r.cooldown_status else "")
    left = f", {r.cooldown_remaining_s:,.0f} s left" if r.cooldown_remaining_s is not None else ""
    return f"[yellow]cooling down{why}{left}[/]"


def _limits(r: DeploymentHealth) -> str:
    parts = [f"{r.rpm:,} rpm" if r.rpm is not None else "",
             f"{r.tpm:,} tpm" if r.tpm is not None else "",
             f"{r.max_parallel_requests:,} parallel" if r.max_parallel_requests is not None
             else ""]
    return " · ".join(p for p in parts if p) or "-"


def _use(r: DeploymentHealth) -> str:
    return (f"{r.requests_this_minute:,} req · {r.tokens_this_minute:,} tok this min · "
            f"{r.in_flight:,} in flight")


def _print_table(results: list[DeploymentHealth], source: str) -> None:
    table = Table(title=f"Health of the deployments in {source}", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for header in ("deployment", "group", "provider", "status", "latency", "limits", "use",
                   "cooldown", "error"):
        table.add_column(header, justify="right" if header == "latency" else "left",
                         no_wrap=header != "error", overflow="fold")
    for r in results:
        status = "[green]up[/]" if r.status == "up" else "[bold red]down[/]"
        latency = f"{r.latency_ms:,.1f} ms" if r.latency_ms is not None else "-"
        table.add_row(escape(r.deployment_id), escape(r.group), escape(r.provider), status,
                      latency, _limits(r), _use(r), _cooldown(r),
                      escape(r.error or ""))
    print_wide(table)
    up = sum(r.status == "up" for r in results)
    console.print(f"{up} of {len(results)} deployments up.", highlight=False)
