"""`llmgw keys`: API keys of `llmgw serve` (create, list, revoke). Keys are stored as hashes:
`create` shows a key once, as the last line of stdout, so scripts can capture it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail, print_wide
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.timespec import parse_duration

app = typer.Typer(help="API keys for `llmgw serve`: each binds a project (and an agent).",
                  no_args_is_help=True)

LedgerUrl = Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)]


def _store(ledger_url: str | None) -> Any:
    from llmgw.ledger.api_keys import ApiKeyStore

    url = resolve_ledger_url(ledger_url)
    ensure_current(url)
    return ApiKeyStore(make_engine(url))


@app.command()
def create(
    project: Annotated[str | None, typer.Option(help="The project the key acts for.")] = None,
    agent: Annotated[str | None, typer.Option(help="The agent the key acts as.")] = None,
    agent_type: Annotated[str | None, typer.Option(help="The agent's type (routes its "
                                                        "requests to the type's group).")] = None,
    any_agent: Annotated[bool, typer.Option("--any-agent", help=(
        "The request names the agent (OpenAI `user` or header X-LLMGW-Agent).")) ] = False,
    admin: Annotated[bool, typer.Option("--admin", help=(
        "Reads usage across projects and nothing else."))] = False,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h, 2w.")] = None,
    ledger_url: LedgerUrl = None,
) -> None:
    """Issue a key and print it once (the last line of stdout).

    Examples: `llmgw keys create --project checkout --agent dev-1 --agent-type software-engineer`,
    `llmgw keys create --project checkout --any-agent --expires 30d`, `llmgw keys create --admin`."""
    if admin and (project or agent or agent_type or any_agent):
        fail("--admin stands alone: an admin key reads usage across projects.", code=EXIT_USAGE)
    if not admin:
        if not project:
            fail("Pass --project P (with --agent A or --any-agent), or --admin.", code=EXIT_USAGE)
        if bool(agent) == any_agent:
            fail("Pass exactly one of --agent A and --any-agent.", code=EXIT_USAGE)
        if agent_type and not agent:
            fail("--agent-type goes with --agent.", code=EXIT_USAGE)
    lifetime = None
    if expires is not None:
        lifetime = parse_duration(expires)
        if lifetime is None or lifetime.total_seconds() <= 0:
            fail(f"--expires must be a duration like 30d, 12h or 2w, got {expires!r}.",
                 code=EXIT_USAGE)
    with errors_as_exit():
        store = _store(ledger_url)
        try:
            issued = store.create(project_id=project, agent_id=agent, agent_type=agent_type,
                                  name=name, admin=admin, expires_in=lifetime)
        finally:
            store.engine.dispose()
    info = issued.info
    who = ("admin (usage of every project)" if info.admin else
           f"project {info.project_id}, " + (f"agent {info.agent_id}" if info.agent_id
                                             else "any agent (named per request)"))
    expiry = f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    console.print(f"Key {info.id} ({info.prefix}...): {who}{expiry}. It is shown only once:",
                  highlight=False, soft_wrap=True)
    typer.echo(issued.secret)


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    ledger_url: LedgerUrl = None,
) -> None:
    """Every key with its scope and state; never a secret."""
    if output not in ("table", "json"):
        fail(f"Unknown --format {output!r}.", hint="Use table or json.", code=EXIT_USAGE)
    with errors_as_exit():
        store = _store(ledger_url)
        try:
            keys = store.list(project_id=project)
        finally:
            store.engine.dispose()
    if output == "json":
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    if not keys:
        console.print("No API keys.", highlight=False)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("id", "prefix", "project", "agent", "agent type", "name", "created",
                   "expires", "revoked", "last used"):
        table.add_column(header, overflow="fold")
    for k in keys:
        agent = "(admin)" if k.admin else k.agent_id or "(any)"
        table.add_row(str(k.id), k.prefix + "...", k.project_id or "*", agent,
                      k.agent_type or "", k.name or "", _when(k.created_at),
                      _when(k.expires_at), _when(k.revoked_at), _when(k.last_used_at))
    print_wide(table)


@app.command()
def revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `llmgw keys list`).")],
    ledger_url: LedgerUrl = None,
) -> None:
    """Revoke a key: its next request gets a 401 (running servers: within their key cache's
    few seconds)."""
    with errors_as_exit():
        store = _store(ledger_url)
        try:
            info = store.revoke(key_id)
        finally:
            store.engine.dispose()
    if info is None:
        fail(f"No API key with id {key_id}.", hint="See `llmgw keys list`.")
    console.print(f"Key {info.id} ({info.prefix}...) revoked at "
                  f"{info.revoked_at:%Y-%m-%d %H:%M:%S} UTC.", highlight=False)


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else ""
