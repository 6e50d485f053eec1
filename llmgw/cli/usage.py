"""`llmgw usage`: cost and usage reports from the ledger."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.report import GROUP_BY_VALUES, is_group_by, usage_report, usage_totals
from llmgw.ledger.report_output import print_table, row_dict, rows_csv
from llmgw.ledger.timespec import FORMS, parse_time

app = typer.Typer(help="Usage and cost reports from the ledger.", no_args_is_help=True)

FORMATS = ("table", "json", "csv")


def _choices(values: tuple[str, ...]) -> Any:
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


@app.command()
def report(
    by: Annotated[str, typer.Option(
        help=f"Group by: {', '.join(GROUP_BY_VALUES)}.", autocompletion=_choices(GROUP_BY_VALUES),
    )] = "project",
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    session: Annotated[str | None, typer.Option(
        help="Only this session (an agent run: X-LLMGW-Session, Claude Code's session).")] = None,
    since: Annotated[str | None, typer.Option(help=f"Start (inclusive): {FORMS}.")] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive), same forms as --since.")] = None,
    output: Annotated[str, typer.Option(
        "--format", help="table, json or csv.", autocompletion=_choices(FORMATS),
    )] = "table",
    ledger_url: Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)] = None,
) -> None:
    """Requests, attempts, tokens and cost, grouped by project, agent, model, day, session, ..."""
    if not is_group_by(by):
        fail(f"Unknown --by {by!r}.", hint=f"Use one of: {', '.join(GROUP_BY_VALUES)}.",
             code=EXIT_USAGE)
    if output not in FORMATS:
        fail(f"Unknown --format {output!r}.", hint="Use table, json or csv.", code=EXIT_USAGE)
    with errors_as_exit():
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
        if start is not None and end is not None and start >= end:
            fail(f"--since ({start:%Y-%m-%d %H:%M}) is not before --until ({end:%Y-%m-%d %H:%M}).",
                 hint="Swap them or widen the range.", code=EXIT_USAGE)
        engine = make_engine(resolve_ledger_url(ledger_url))
        try:
            ensure_current(engine)
            rows = usage_report(engine, by=by, project=project, agent=agent, since=start,
                                until=end, session=session)
            total = (usage_totals(engine, project=project, agent=agent, since=start, until=end,
                                  session=session)
                     if output == "table" else None)
        finally:
            engine.dispose()
    if output == "json":
        typer.echo(json.dumps([row_dict(r) for r in rows], indent=2))
    elif output == "csv":
        typer.echo(rows_csv(rows), nl=False)
    else:
        assert total is not None
        print_table(console, rows, total, by=by, start=start, end=end, project=project,
                    agent=agent, session=session)
