"""The `llmgw` command line.

Keep `llmgw --help` fast: no module imported here may import litellm, llmgw.gateway or
llmgw.routing.router at import time (commands that call a model import them inside the command).
A new command group is one line below: `app.add_typer(<module>.app, name="<group>")`.
"""

from __future__ import annotations

import typer

from llmgw.cli import (
    budgets,
    cache,
    chat,
    db,
    demo,
    explain,
    health,
    keys,
    local,
    mcp,
    models,
    serve,
    sim,
    usage,
)

app = typer.Typer(
    name="llmgw",
    help="llmgw: budgets, cache and a cost ledger for fleets of agents, over LiteLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold API keys
)

app.add_typer(usage.app, name="usage")
usage.app.command("explain")(explain.explain)
app.add_typer(db.app, name="db")
app.add_typer(budgets.app, name="budgets")
app.add_typer(models.app, name="models")
app.add_typer(demo.app, name="demo")
app.add_typer(sim.app, name="sim")
app.add_typer(health.app, name="health")
app.add_typer(chat.app, name="chat")
app.add_typer(cache.app, name="cache")
app.add_typer(local.app, name="local")
app.add_typer(keys.app, name="keys")
app.add_typer(serve.app, name="serve")
app.add_typer(mcp.app, name="mcp")


def main() -> None:
    """Console-script entry point."""
    from llmgw.heap import claim_process

    claim_process()  # our own process: llmgw.heap may freeze LiteLLM's start-up heap
    app()
