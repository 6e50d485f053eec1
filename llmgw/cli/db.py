"""`llmgw db`: migrate the ledger schema (Alembic underneath)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from llmgw.cli._common import LEDGER_URL_HELP, console, errors_as_exit, fail
from llmgw.ledger.engine import resolve_ledger_url, safe_url
from llmgw.ledger.migrate import current as current_revision
from llmgw.ledger.migrate import downgrade as run_downgrade
from llmgw.ledger.migrate import head
from llmgw.ledger.migrate import upgrade as run_upgrade

app = typer.Typer(help="Create and migrate the ledger database.", no_args_is_help=True)

LedgerUrl = Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)]


@app.command()
def upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    ledger_url: LedgerUrl = None,
) -> None:
    """Create the ledger tables or migrate them to the newest schema."""
    with errors_as_exit():
        url = resolve_ledger_url(ledger_url)
        before = current_revision(url)
        run_upgrade(url, revision)
        after = current_revision(url)
    console.print(f"Ledger {safe_url(url)}: {before or 'empty'} -> {after}", highlight=False)


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help='Target revision; "base" drops every table.')],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ledger_url: LedgerUrl = None,
) -> None:
    """Migrate the ledger back to an older schema (this can delete recorded usage)."""
    with errors_as_exit():
        url = resolve_ledger_url(ledger_url)
        before = current_revision(url)
        if not yes and not typer.confirm(
            f"Downgrade {safe_url(url)} from {before} to {revision}? Data may be lost."
        ):
            fail("Aborted; nothing changed.")
        run_downgrade(url, revision)
        after = current_revision(url)
    console.print(f"Ledger {safe_url(url)}: {before or 'empty'} -> {after or 'empty'}",
                  highlight=False)


@app.command()
def current(ledger_url: LedgerUrl = None) -> None:
    """Show the ledger's schema revision and whether it is the newest."""
    with errors_as_exit():
        url = resolve_ledger_url(ledger_url)
        found, newest = current_revision(url), head()
    if found is None:
        console.print(f"{safe_url(url)}: no schema. Run `llmgw db upgrade`.", highlight=False)
    elif found == newest:
        console.print(f"{found} (head)", highlight=False)
    else:
        console.print(f"{found} (head is {newest}: run `llmgw db upgrade`)", highlight=False)


@app.command()
def reconcile(
    older_than: Annotated[str, typer.Option(
        help="Settle open holds at least this old (30s, 15m, 2h, 0 for all).")] = "15m",
    force: Annotated[bool, typer.Option(
        "--force", help="Allow --older-than below the longest a request can run: requests "
                        "still in flight are booked at their worst case until they settle.")
    ] = False,
    ledger_url: LedgerUrl = None,
) -> None:
    """Settle budget holds that a stopped gateway left open, at their reserved amount, so no
    spend is lost. Safe to run again: a settled hold is never counted twice."""
    from llmgw.ledger.budgets import BudgetStore
    from llmgw.ledger.engine import make_engine
    from llmgw.ledger.migrate import ensure_current
    from llmgw.ledger.timespec import parse_duration, utcnow

    try:
        age = parse_duration(older_than)
    except OverflowError:
        age = None
    if age is None:
        fail(f"--older-than must look like 30s, 15m, 2h or 0, got {older_than!r}.", code=2)
    with errors_as_exit():
        if not force:
            longest = longest_request_s()
            if age.total_seconds() < longest:
                fail(f"--older-than {older_than} is shorter than a request may still be "
                     f"running ({longest:g}s: the router's timeout plus its stream timeout), "
                     "so holds of requests in flight would be booked at their worst case.",
                     hint=f"Use --older-than {math.ceil(longest)}s or more, or --force.",
                     code=2)
        url = resolve_ledger_url(ledger_url)
        ensure_current(url)
        engine = make_engine(url)
        try:
            done = BudgetStore(engine).reconcile(now=utcnow(), older_than=age)
        finally:
            engine.dispose()
    console.print(f"Reconciled {len(done)} open reservation(s) on {safe_url(url)}.",
                  highlight=False)


def longest_request_s() -> float:
    """How long a request may run before LiteLLM gives up on it: the `timeout` the Router
    gets (router_settings, else `llmgw.request_timeout_s`, which the gateway passes as the
    Router's default) plus `stream_timeout`, the longest of the Router's and any deployment's.
    Without a config file, the defaults."""
    from llmgw.config.loading import config_path, load_config
    from llmgw.config.models import GatewaySettings

    default = float(GatewaySettings.model_fields["request_timeout_s"].default)
    if not config_path().is_file():
        return default
    config = load_config()
    router = config.router_settings.router_kwargs()
    timeouts: list[float | None] = [_seconds(router.get("timeout"), "router_settings.timeout")
                or config.llmgw.request_timeout_s]
    streams = [_seconds(router.get("stream_timeout"), "router_settings.stream_timeout")]
    for i, deployment in enumerate(config.model_list):
        params = deployment.litellm_params.model_dump()
        timeouts.append(_seconds(params.get("timeout"), f"model_list[{i}].timeout"))
        streams.append(_seconds(params.get("stream_timeout"), f"model_list[{i}].stream_timeout"))
    return max(t for t in timeouts if t) + max((t for t in streams if t), default=0.0)


def _seconds(value: Any, where: str) -> float | None:  # a config value as written
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        fail(f"{where} must be a number of seconds, got {value!r}.",
             hint="Fix the config file, or pass --force.", code=2)
    return seconds if math.isfinite(seconds) and seconds > 0 else None
