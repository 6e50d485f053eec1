"""A usage report as people and scripts read it: a rich table (exact dollars, numbers never
truncated), JSON rows, CSV. The same rendering for `llmgw usage report`, the demo and the
HTTP front."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from llmgw.ledger.report import ReportRow

# Column order of json/csv output; table columns follow the same order.
FIELDS = ("key", "requests", "attempts", "errors", "cached", "refused", "prompt_tokens",
          "completion_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
          "reasoning_tokens", "cost_micros", "cost_usd", "saved_micros", "saved_usd")


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


def print_table(console: Console, rows: list[ReportRow], total: ReportRow, *, by: str,
                start: datetime | None = None, end: datetime | None = None,
                project: str | None = None, agent: str | None = None,
                session: str | None = None) -> None:
    """The report as a table with a TOTAL line, on `console` (wider than it when needed)."""
    scope = [f"project {project}" if project else "", f"agent {agent}" if agent else "",
             f"session {session}" if session else "",
             f"since {start:%Y-%m-%d %H:%M}" if start else "",
             f"until {end:%Y-%m-%d %H:%M}" if end else ""]
    title = " ".join(["Usage by", by] + [s for s in scope if s]) + (" (UTC)" if start or end else "")
    if not rows:
        console.print(f"{title}: no usage recorded.", highlight=False)
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column(by, overflow="fold", min_width=10)
    # Cache reads and writes are inside the prompt tokens, 1h writes inside the writes,
    # reasoning inside the completion tokens.
    for header in ("requests", "attempts", "errors", "cached", "refused", "prompt\ntokens",
                   "compl.\ntokens", "cache\nreads", "cache\nwrites", "of which\n1h",
                   "reason-\ning", "cost\nUSD", "saved\nUSD"):
        # Numbers never wrap or shrink: a truncated amount would be a wrong amount.
        table.add_column(header, justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(*_cells(row), end_section=i == len(rows) - 1)
    table.add_row(*_cells(total), style="bold")
    # Rich shrinks columns to fit the terminal; rather let a narrow terminal wrap the lines.
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    if needed <= console.width:
        console.print(table)
    else:
        Console(file=console.file, width=needed).print(table)


def _cells(row: ReportRow) -> list[str]:
    counts = (row.requests, row.attempts, row.errors, row.cached, row.refused,
              row.prompt_tokens, row.completion_tokens, row.cache_read_tokens,
              row.cache_write_tokens, row.cache_write_1h_tokens, row.reasoning_tokens)
    return [row.key, *(f"{n:,}" for n in counts), format(row.cost_usd, "f"),
            format(row.saved_usd, "f")]
