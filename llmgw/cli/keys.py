"""`llmgw keys`: API keys of `llmgw serve` (create, list, rotate, revoke). Keys are stored as
hashes: `create` and `rotate` show a key once, as the last line of stdout, so scripts can
capture it. `list` shows each key's limits and this minute's use (from the shared Redis of
the config's router_settings, when it has one) and marks keys near their expiry."""

from __future__ import annotations

import asyncio
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
ConfigPath = Annotated[str | None, typer.Option("--config", help=(
    "Config file for llmgw.key_limits and the shared Redis (default: LLMGW_CONFIG or "
    "./model_list.yaml; none: the keys' own limits, no use shown)."))]


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
    rpm: Annotated[int | None, typer.Option(min=1, help=(
        "Requests per minute (default: llmgw.key_limits of the agent type, else none)."))] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help=(
        "Tokens per minute: prompt estimate + max tokens, counted on admission."))] = None,
    max_parallel: Annotated[int | None, typer.Option("--max-parallel", min=1, help=(
        "Requests in flight at once."))] = None,
    ledger_url: LedgerUrl = None,
) -> None:
    """Issue a key and print it once (the last line of stdout).

    Examples: `llmgw keys create --project checkout --agent dev-1 --agent-type software-engineer`,
    `llmgw keys create --project checkout --any-agent --expires 30d --rpm 60 --max-parallel 4`,
    `llmgw keys create --admin`."""
    if admin and (project or agent or agent_type or any_agent
                  or any(v is not None for v in (rpm, tpm, max_parallel))):
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
                                  name=name, admin=admin, expires_in=lifetime, rpm=rpm, tpm=tpm,
                                  max_parallel=max_parallel)
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
    config: ConfigPath = None,
    ledger_url: LedgerUrl = None,
) -> None:
    """Every key with its scope, state, limits and this minute's use; never a secret. Keys
    that expire within 7 days are marked."""
    if output not in ("table", "json"):
        fail(f"Unknown --format {output!r}.", hint="Use table or json.", code=EXIT_USAGE)
    with errors_as_exit():
        store = _store(ledger_url)
        try:
            keys = store.list(project_id=project)
        finally:
            store.engine.dispose()
        views = _views(keys, config)
    if output == "json":
        typer.echo(json.dumps(views, indent=2))
        return
    if not keys:
        console.print("No API keys.", highlight=False)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("id", "prefix", "project", "agent", "agent type", "name", "created",
                   "expires", "revoked", "last used", "rpm", "tpm", "parallel",
                   "use (req/tok/in flight)"):
        table.add_column(header, overflow="fold")
    for k, v in zip(keys, views, strict=True):
        agent = "(admin)" if k.admin else k.agent_id or "(any)"
        expires = _when(k.expires_at) + (" (expiring soon)" if v["expiring_soon"] else "")
        if k.rotated_to is not None:
            expires += f" (rotated to {k.rotated_to})"
        use = v["use"]
        table.add_row(str(k.id), k.prefix + "...", k.project_id or "*", agent,
                      k.agent_type or "", k.name or "", _when(k.created_at), expires,
                      _when(k.revoked_at), _when(k.last_used_at),
                      *(_limit(v["limits"][n]) for n in ("rpm", "tpm", "max_parallel")),
                      f"{use['requests']}/{use['tokens']}/{use['in_flight']}" if use else "")
    print_wide(table)


@app.command()
def rotate(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `llmgw keys list`).")],
    overlap: Annotated[str, typer.Option(help=(
        "How long the old key keeps working, e.g. 1h, 30m, 1d."))] = "1h",
    ledger_url: LedgerUrl = None,
) -> None:
    """Issue a key's successor (same project, agent, agent type, name and limits; its limits'
    counters shared) and print it once (the last line of stdout); the old key keeps working
    until the overlap ends, then gets a 401."""
    lasting = parse_duration(overlap)
    if lasting is None or lasting.total_seconds() < 0:
        fail(f"--overlap must be a duration like 1h, 30m or 1d, got {overlap!r}.",
             code=EXIT_USAGE)
    with errors_as_exit():
        store = _store(ledger_url)
        try:
            issued, old = store.rotate(key_id, overlap=lasting)
        finally:
            store.engine.dispose()
    new = issued.info
    console.print(f"Key {new.id} ({new.prefix}...) succeeds key {old.id} ({old.prefix}...), "
                  f"which works until {old.expires_at:%Y-%m-%d %H:%M:%S} UTC. The new key is "
                  "shown only once:", highlight=False, soft_wrap=True)
    typer.echo(issued.secret)


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


def _views(keys: list[Any], config_file: str | None) -> list[dict[str, Any]]:
    """Each key as `list --format json` shows it: its info, effective limits, this minute's
    use (None without a shared Redis: each server's memory is its own) and expiry mark."""
    from llmgw.config.loading import config_path, load_config
    from llmgw.config.models import Config
    from llmgw.ledger.timespec import utcnow
    from llmgw.server.key_limits import KeyLimiter

    cfg: Config | None = None
    if config_file is not None or config_path().is_file():
        cfg = load_config(config_file)
    limiter = (KeyLimiter(cfg, cfg.router_settings.shared_state_url()) if cfg is not None
               else None)
    use: dict[int, Any] = {}
    callable_keys = [k for k in keys if not k.admin]
    if limiter is not None and limiter.shared and callable_keys:
        async def read() -> dict[int, Any]:
            try:
                return await limiter.usage(callable_keys)
            finally:
                await limiter.aclose()
        use = asyncio.run(read())
    from llmgw.ledger.api_keys import expiring_soon

    now = utcnow()
    views = []
    for k in keys:
        if limiter is not None:
            lim = limiter.limits_of(k)
            limits = {"rpm": lim.rpm, "tpm": lim.tpm, "max_parallel": lim.max_parallel}
        else:
            limits = {"rpm": k.rpm, "tpm": k.tpm, "max_parallel": k.max_parallel}
        u = use.get(k.id)
        views.append({**k.model_dump(mode="json"), "limits": limits,
                      "use": None if u is None else {"requests": u.requests, "tokens": u.tokens,
                                                     "in_flight": u.in_flight},
                      "expiring_soon": expiring_soon(k, now)})
    return views


def _limit(value: int | None) -> str:
    return str(value) if value is not None else "-"


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else ""
