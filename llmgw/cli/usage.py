"""`llmgw usage`: cost and usage reports from the ledger."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.report import GROUP_BY_VALUES, ReportRow, usage_report, usage_totals
from llmgw.ledger.timespec import FORMS, parse_time

app = typer.Typer(help="Usage and cost reports from the ledger.", no_args_is_help=True)

FORMATS = ("table", "json", "csv")
# Column order of json/csv output; table columns follow the same order.
FIELDS = ("key", "requests", "attempts", "errors", "cached", "refused", "prompt_tokens",
          "completion_tokens", "cost_micros", "cost_usd", "saved_micros", "saved_usd")


def _choices(values: tuple[str, ...]) -> Any:
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


@app.command()
def report(
    by: Annotated[str, typer.Option(
        help=f"Group by: {', '.join(GROUP_BY_VALUES)}.", autocompletion=_choices(GROUP_BY_VALUES),
    )] = "project",
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    since: Annotated[str | None, typer.Option(help=f"Start (inclusive): {FORMS}.")] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive), same forms as --since.")] = None,
    output: Annotated[str, typer.Option(
        "--format", help="table, json or csv.", autocompletion=_choices(FORMATS),
    )] = "table",
    ledger_url: Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)] = None,
) -> None:
    """Requests, attempts, tokens and cost, grouped by project, agent, model, day, ..."""
    if by not in GROUP_BY_VALUES:
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
            filters = dict(project=project, agent=agent, since=start, until=end)
            rows = usage_report(engine, by=by, **filters)  # type: ignore[arg-type]
            total = usage_totals(engine, **filters) if output == "table" else None
        finally:
            engine.dispose()
    if output == "json":
        typer.echo(json.dumps([row_dict(r) for r in rows], indent=2))
    elif output == "csv":
        typer.echo(rows_csv(rows), nl=False)
    else:
        assert total is not None
        _print_table(rows, total, by=by, start=start, end=end, project=project, agent=agent)


def row_dict(row: ReportRow) -> dict[str, Any]:
    """A row for scripts: integers as integers, dollars as exact 6-decimal strings."""
    data = row.model_dump()
    data["cost_usd"] = format(row.cost_usd, "f")
    data["saved_usd"] = format(row.saved_usd, "f")
    return {name: data[name] for name in FIELDS}


def rows_csv(rows: list[ReportRow]) -> str:
    """CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row_dict(r) for r in rows)
    return buffer.getvalue()


def _print_table(rows: list[ReportRow], total: ReportRow, *, by: str, start: datetime | None,
                 end: datetime | None, project: str | None, agent: str | None) -> None:
    scope = [f"project {project}" if project else "", f"agent {agent}" if agent else "",
             f"since {start:%Y-%m-%d %H:%M}" if start else "",
             f"until {end:%Y-%m-%d %H:%M}" if end else ""]
    title = " ".join(["Usage by", by] + [s for s in scope if s]) + (" (UTC)" if start or end else "")
    if not rows:
        console.print(f"{title}: no usage recorded.", highlight=False)
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column(by, overflow="fold", min_width=10)
    for header in ("requests", "attempts", "errors", "cached", "refused", "prompt\ntokens",
                   "compl.\ntokens", "cost\nUSD", "saved\nUSD"):
        # Numbers never wrap or shrink: a truncated amount would be a wrong amount.
        table.add_column(header, justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(*_cells(row), end_section=i == len(rows) - 1)
    table.add_row(*_cells(total), style="bold")
    # Rich shrinks columns to fit the terminal; rather let a narrow terminal wrap the lines.
    needed = console.measure(table, options=console.options.update_width(10_000)).minimum
    if needed <= console.width:
        console.print(table)
    else:
        Console(file=console.file, width=needed).print(table)


def _cells(row: ReportRow) -> list[str]:
    counts = (row.requests, row.attempts, row.errors, row.cached, row.refused,
              row.prompt_tokens, row.completion_tokens)
    return [row.key, *(f"{n:,}" for n in counts), format(row.cost_usd, "f"),
            format(row.saved_usd, "f")]
