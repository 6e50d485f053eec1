"""`llmgw usage explain REQUEST_ID`: each attempt's arithmetic, from every token kind through
the rate its row was priced at to the micro-dollars (no LiteLLM)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.explain import explain as explain_request
from llmgw.ledger.migrate import ensure_current


def explain(
    request_id: Annotated[str, typer.Argument(help="The request id (x-llmgw-request-id).")],
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    ledger_url: Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)] = None,
) -> None:
    """What one request cost, attempt by attempt: tokens x rate = micro-dollars."""
    if output not in ("table", "json"):
        fail(f"Unknown --format {output!r}.", hint="Use table or json.", code=EXIT_USAGE)
    with errors_as_exit():
        engine = make_engine(resolve_ledger_url(ledger_url))
        try:
            ensure_current(engine)
            attempts = explain_request(engine, request_id)
        finally:
            engine.dispose()
    if not attempts:
        fail(f"No request {request_id!r} in the ledger.",
             hint="Take the id from an answer's x-llmgw-request-id, or `llmgw usage report`.")
    if output == "json":
        typer.echo(json.dumps([{
            "attempt": a.attempt, "status": a.status, "deployment": a.deployment,
            "model": a.model, "recorded_micros": a.recorded_micros,
            "computed_micros": a.computed_micros,
            "lines": [{"kind": ln.kind, "tokens": ln.tokens,
                       "usd_per_token": None if ln.usd_per_token is None
                       else format(ln.usd_per_token.normalize(), "f"),
                       "micros": None if ln.micros is None else format(ln.micros.normalize(), "f")}
                      for ln in a.lines]} for a in attempts], indent=2))
        return
    for a in attempts:
        table = Table(title=f"attempt {a.attempt}: {a.status} on {a.deployment or '-'} "
                            f"({a.model or '-'})", title_justify="left", box=box.SIMPLE_HEAD)
        for header in ("tokens", "kind", "$ per Mtok", "micro-dollars"):
            table.add_column(header, justify="left" if header == "kind" else "right")
        for ln in a.lines:
            if not ln.tokens:
                continue
            table.add_row(f"{ln.tokens:,}", ln.kind.replace("_", " "),
                          "-" if ln.usd_per_token is None
                          else f"{(ln.usd_per_token * 1_000_000).normalize():f}",
                          "-" if ln.micros is None else f"{ln.micros.normalize():f}")
        if a.computed_micros is None:
            table.add_row("", "total", "", f"{a.recorded_micros} (rates not recorded)")
        else:
            agree = "" if a.computed_micros == a.recorded_micros else (
                f"  (the row holds {a.recorded_micros})")
            table.add_row("", "total, rounded once", "", f"{a.computed_micros}{agree}")
        console.print(table)
