"""`llmgw demo`: a scripted multi-agent workload on the simulators, then the usage reports."""

from __future__ import annotations

from typing import Annotated

import typer

from llmgw.cli._common import errors_as_exit

app = typer.Typer(help="Run the demo workload.", invoke_without_command=True)


@app.callback()
def demo(
    config: Annotated[str | None, typer.Option("--config", help="Config whose groups, agent "
                                               "types and prices the demo uses.")] = None,
    workdir: Annotated[str, typer.Option(help="Where the demo's own ledger lives.")] = ".cache/demo",
) -> None:
    """Agents of six types in two projects, a simulated Anthropic outage, then reports."""
    from llmgw.demo import run_demo  # imports LiteLLM: only when the demo runs

    with errors_as_exit():
        run_demo(config_path=config, workdir=workdir)
