"""A request's cost, attempt by attempt: every token kind, through the rate its row was priced
at, to the micro-dollars (`llmgw usage explain`, the request story in `/ui`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from llmgw.budgets.pricing import to_micros
from llmgw.ledger.models import UsageEvent


@dataclass(frozen=True, slots=True)
class Line:
    kind: str  # input, cache_read, cache_write (5m), cache_write_1h, output
    tokens: int
    usd_per_token: Decimal | None
    micros: Decimal | None  # exact, before the one rounding of the attempt


@dataclass(frozen=True, slots=True)
class AttemptCost:
    attempt: int
    status: str
    deployment: str | None
    model: str | None
    lines: list[Line]
    computed_micros: int | None  # the lines' sum, rounded once; None without rates
    recorded_micros: int  # what the row holds (LiteLLM's pricing)


def split_tokens(row: dict[str, Any]) -> dict[str, int]:
    """A row's tokens by the kind each is billed as (prompt tokens include cache reads and
    writes; completion tokens include reasoning, billed as output)."""
    read = int(row.get("cache_read_tokens") or 0)
    written = int(row.get("cache_write_tokens") or 0)
    hour = int(row.get("cache_write_1h_tokens") or 0)
    return {"input": max(int(row.get("prompt_tokens") or 0) - read - written, 0),
            "cache_read": read, "cache_write": written - hour, "cache_write_1h": hour,
            "output": int(row.get("completion_tokens") or 0)}


def explain_rows(rows: list[dict[str, Any]]) -> list[AttemptCost]:
    out = []
    for row in rows:
        rates = row.get("rates") or None
        lines = []
        for kind, tokens in split_tokens(row).items():
            rate = Decimal(rates[kind]) if rates and rates.get(kind) is not None else None
            lines.append(Line(kind, tokens, rate, None if rate is None else tokens * rate
                              * 1_000_000))
        computed = (to_micros(sum((ln.micros or Decimal(0)) for ln in lines) / 1_000_000)
                    if rates else None)
        out.append(AttemptCost(int(row["attempt"]), row["status"], row.get("deployment_id"),
                               row.get("model"), lines, computed, int(row["cost_micros"] or 0)))
    return out


def explain(engine: Engine, request_id: str) -> list[AttemptCost]:
    """Every attempt of a request with its arithmetic; [] for an unknown request."""
    table = UsageEvent.__table__
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(table).where(table.c.request_id == request_id).order_by(table.c.attempt))]
    return explain_rows(rows)
