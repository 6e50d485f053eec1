"""`llmgw db`: migrate the ledger schema (Alembic underneath)."""

from __future__ import annotations

from typing import Annotated

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
