"""`llmgw budgets`: set limits (stored in the ledger database), list them, show spend."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypedDict

import typer
from rich import box
from rich.table import Table

from llmgw.budgets.pricing import micros_to_usd, to_micros
from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail, print_wide
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.migrate import ensure_current

app = typer.Typer(help="Budgets: limits per project, agent, agent type, agent run (session), "
                       "globally, per request.",
                  no_args_is_help=True)

LedgerUrl = Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)]
Format = Annotated[str, typer.Option("--format", help="table or json.")]
MAX_ID_CHARS = 200  # the ledger's id columns (String(200))


def _amount(flag: str, value: str | None) -> int | None:
    """Dollars as typed by a person -> micro-dollars; anything odd is refused, not guessed."""
    from llmgw.config.models import MAX_BUDGET_USD

    if value is None:
        return None
    try:
        amount = Decimal(value.strip().removeprefix("$"))
    except InvalidOperation:
        fail(f"{flag} must be a dollar amount like 50 or 12.50, got {value!r}.", code=EXIT_USAGE)
    if not amount.is_finite() or amount < 0:
        fail(f"{flag} must be zero or more dollars, got {value!r}.", code=EXIT_USAGE)
    if amount > MAX_BUDGET_USD:
        fail(f"{flag} must be at most ${MAX_BUDGET_USD:,}, got {value!r}.",
             hint="For no limit, leave it unset.", code=EXIT_USAGE)
    if amount != amount.quantize(Decimal("0.000001")):
        fail(f"{flag} has more than 6 decimals ({value!r}); the ledger counts micro-dollars.",
             code=EXIT_USAGE)
    return to_micros(amount)


def _scope_id(flag: str, value: str) -> str:
    """An id as the ledger can store it on every database."""
    if not value.strip():
        fail(f"{flag} needs a non-empty id.", code=EXIT_USAGE)
    if len(value) > MAX_ID_CHARS or any(ord(c) < 32 for c in value):
        fail(f"{flag} must be at most {MAX_ID_CHARS} characters without control characters, "
             f"got {value[:40]!r}{'...' if len(value) > 40 else ''}.", code=EXIT_USAGE)
    return value


def _policy_and_store(ledger_url: str | None) -> tuple[Any, Any, Any]:
    from llmgw.budgets.rules import BudgetPolicy
    from llmgw.config.loading import config_path, load_config
    from llmgw.config.models import BudgetSettings
    from llmgw.ledger.budgets import BudgetStore

    url = resolve_ledger_url(ledger_url)
    ensure_current(url)
    settings = load_config().llmgw.budgets if config_path().is_file() else BudgetSettings()
    engine = make_engine(url)
    return BudgetPolicy(settings), BudgetStore(engine), engine


@app.command("set")
def set_(
    project: Annotated[str | None, typer.Option(help="A project id.")] = None,
    agent: Annotated[str | None, typer.Option(help="An agent id.")] = None,
    agent_type: Annotated[str | None, typer.Option(help="An agent type.")] = None,
    session: Annotated[str | None, typer.Option(
        help="An agent run's session id, or '*' for every run (with --total-usd).")] = None,
    global_: Annotated[bool, typer.Option("--global", help="All spend together.")] = False,
    per_request: Annotated[str | None, typer.Option(
        help="Cap on one request's worst-case cost, in USD.")] = None,
    daily: Annotated[str | None, typer.Option(help="Daily limit in USD.")] = None,
    monthly: Annotated[str | None, typer.Option(help="Monthly limit in USD.")] = None,
    total_usd: Annotated[str | None, typer.Option(
        help="A run's cap for its whole life in USD (with --session); it never resets.")] = None,
    warn: Annotated[float, typer.Option(help="Warn ratio, 0 < warn <= 1.")] = 0.8,
    yes: Annotated[bool, typer.Option(
        "--yes", help="Confirm a $0 limit: it refuses every request it covers.")] = False,
    ledger_url: LedgerUrl = None,
) -> None:
    """Set a limit; it overrides the config file's and reaches running gateways within 5 s.

    Examples: `llmgw budgets set --project checkout --daily 50 --monthly 1000 --warn 0.8`,
    `llmgw budgets set --per-request 1.00`, `llmgw budgets set --global --monthly 5000`,
    `llmgw budgets set --session '*' --total-usd 5`."""
    from llmgw.budgets.rules import ANY, SESSION, TOTAL, Rule
    from llmgw.ledger.store import utcnow

    targets = [(s, v) for s, v in (("project", project), ("agent", agent),
                                   ("agent_type", agent_type), (SESSION, session)) if v is not None]
    if global_:
        targets.append(("global", ANY))
    cap = _amount("--per-request", per_request)
    if cap is not None:
        if targets or daily or monthly:
            fail("--per-request stands alone: it caps every request.", code=EXIT_USAGE)
        targets = [("request", ANY)]
    if len(targets) != 1:
        fail("Name exactly one of --project, --agent, --agent-type, --session, --global, "
             "--per-request.", code=EXIT_USAGE)
    run_cap = _amount("--total-usd", total_usd)
    is_run = targets[0][0] == SESSION
    if is_run != (run_cap is not None) or (is_run and (daily or monthly)):
        fail("--total-usd goes with --session (a run's cap), and a run's cap is --total-usd: "
             "runs have no daily or monthly windows.", code=EXIT_USAGE)
    if not 0 < warn <= 1:
        fail(f"--warn must be above 0 and at most 1, got {warn}.", code=EXIT_USAGE)
    [(scope, scope_id)] = targets
    if scope not in ("global", "request"):
        scope_id = _scope_id(f"--{scope.replace('_', '-')}", scope_id)
    limits = ([("request", cap)] if cap is not None else
              [(TOTAL, run_cap)] if run_cap is not None else
              [(p, m) for p, m in (("day", _amount("--daily", daily)),
                                   ("month", _amount("--monthly", monthly))) if m is not None])
    if not limits:
        fail("Give --daily and/or --monthly (in USD).", code=EXIT_USAGE)
    if not yes and any(micros == 0 for _, micros in limits):
        of = "" if scope in ("global", "request") else f" of {scope} {scope_id!r}"
        fail(f"A $0 limit refuses every request{of}.", hint="Add --yes if that is what you want.",
             code=EXIT_USAGE)
    with errors_as_exit():
        _, store, engine = _policy_and_store(ledger_url)
        try:
            for period, micros in limits:
                store.set_rule(Rule(scope, scope_id, period, micros, warn), utcnow())
        finally:
            engine.dispose()
    for period, micros in limits:
        console.print(f"{scope} {scope_id} {period}: ${micros_to_usd(micros)} "
                      f"(warn at {warn:.0%})", highlight=False)


@app.command("list")
def list_(output: Format = "table", ledger_url: LedgerUrl = None) -> None:
    """Every limit: from the database (set with `budgets set`) and from the config file."""
    with errors_as_exit():
        policy, store, engine = _policy_and_store(ledger_url)
        try:
            rules = store.rules()
        finally:
            engine.dispose()
    rows = [{"scope": r.scope, "id": r.scope_id, "period": r.period,
             "limit_usd": str(micros_to_usd(r.limit_micros)), "warn": r.warn_ratio,
             "source": "database"} for r in rules]
    for scope, sid, cfg in policy.config_limits():
        for period, usd in (("day", cfg.daily_usd), ("month", cfg.monthly_usd)):
            if usd is not None:
                rows.append({"scope": scope, "id": sid, "period": period,
                             "limit_usd": str(micros_to_usd(to_micros(usd))),
                             "warn": cfg.warn_at or policy.settings.warn_at, "source": "config"})
    for sid, run in policy.session_limits():
        rows.append({"scope": "session", "id": sid, "period": "total",
                     "limit_usd": str(micros_to_usd(to_micros(run.total_usd))),
                     "warn": run.warn_at or policy.settings.warn_at, "source": "config"})
    if policy.settings.per_request_usd is not None:
        rows.append({"scope": "request", "id": "*", "period": "request",
                     "limit_usd": str(micros_to_usd(to_micros(policy.settings.per_request_usd))),
                     "warn": policy.settings.warn_at, "source": "config"})
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("No budgets: set one with `llmgw budgets set` or under llmgw.budgets.")
        return
    table = Table(title="Budgets (database rules override the config file)", box=box.SIMPLE_HEAD,
                  title_justify="left")
    for h in ("scope", "id", "period", "limit USD", "warn", "source"):
        table.add_column(h, justify="right" if h in ("limit USD", "warn") else "left",
                         no_wrap=True)
    for r in rows:
        table.add_row(r["scope"], r["id"], r["period"], r["limit_usd"], f"{r['warn']:.0%}",
                      r["source"])
    print_wide(table)


class _StatusRow(TypedDict):
    """One budget's current window as `--format json` prints it."""
    scope: str
    id: str
    period: str
    spent_usd: str
    reserved_usd: str
    limit_usd: str
    used: float
    resets_at: str | None
    over_warn: bool


@app.command()
def status(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    session: Annotated[str | None, typer.Option(
        help="Only this agent run's cap (runs are left out otherwise: there are many).")] = None,
    output: Format = "table",
    ledger_url: LedgerUrl = None,
) -> None:
    """Spend, open holds, limit, % used and reset time of each budget's current window; with
    --session, that run's cap (its whole life: it never resets)."""
    from llmgw.budgets.rules import statuses
    from llmgw.ledger.store import utcnow

    with errors_as_exit():
        policy, store, engine = _policy_and_store(ledger_url)
        try:
            now = utcnow()
            items = statuses(policy, store.rules(), store.all_counters(), now, session=session)
        finally:
            engine.dispose()
    if project is not None:
        items = [s for s in items if s.scope == "project" and s.scope_id == project]
    if session is not None:
        items = [s for s in items if s.scope == "session" and s.scope_id == session]
    rows: list[_StatusRow] = [{"scope": s.scope, "id": s.scope_id, "period": s.period,
             "spent_usd": str(micros_to_usd(s.spent_micros)),
             "reserved_usd": str(micros_to_usd(s.reserved_micros)),
             "limit_usd": str(micros_to_usd(s.limit_micros)),
             "used": round(s.used_ratio, 4),
             "resets_at": s.resets_at.isoformat() + "Z" if s.resets_at else None,
             "over_warn": s.used_ratio >= s.warn_ratio} for s in items]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        if session is not None:
            console.print(f"No cap applies to session {session}: set one under "
                          "llmgw.budgets.sessions or with `llmgw budgets set --session`.")
            return
        console.print("No budgets apply" + (f" to project {project}." if project else "."))
        return
    table = Table(title="Budget status (current windows, UTC)", box=box.SIMPLE_HEAD,
                  title_justify="left")
    for h in ("scope", "id", "period", "spent USD", "reserved USD", "limit USD", "used",
              "resets at"):
        table.add_column(h, justify="left" if h in ("scope", "id", "period") else "right",
                         no_wrap=True)
    for r in rows:
        used = f"{r['used']:.1%}"
        table.add_row(r["scope"], r["id"], r["period"], r["spent_usd"], r["reserved_usd"],
                      r["limit_usd"], f"[red]{used}[/]" if r["over_warn"] else used,
                      (r["resets_at"] or ("never" if r["period"] == "total" else "-")
                       ).replace("T", " ").removesuffix("Z"))
    print_wide(table)
