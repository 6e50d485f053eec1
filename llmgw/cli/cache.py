"""`llmgw cache`: what the answer cache saved (from the ledger) and clearing it (Redis)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import func, select

from llmgw.budgets.pricing import micros_to_usd
from llmgw.cli._common import EXIT_USAGE, LEDGER_URL_HELP, console, errors_as_exit, fail
from llmgw.ledger.engine import make_engine, resolve_ledger_url
from llmgw.ledger.migrate import ensure_current
from llmgw.ledger.models import UsageEvent

if TYPE_CHECKING:  # the cache modules load only for the commands that use them
    from llmgw.cache import Cache, CacheStats

app = typer.Typer(help="The answer cache: hits, savings, clearing.", no_args_is_help=True)
Config = Annotated[str | None, typer.Option("--config", help="Config file (default: "
                                            "LLMGW_CONFIG, then ./model_list.yaml).")]


def _backend(config: str | None) -> tuple[Cache | None, str]:
    """The configured cache backend (None when off) and `llmgw.cache.scope`."""
    from llmgw.cache.backends import make_cache
    from llmgw.config.loading import load_config

    cfg = load_config(config)
    cache = make_cache(cfg.llmgw.cache, cfg.router_settings.router_kwargs().get("redis_url"))
    return cache, cfg.llmgw.cache.scope


def _say(text: str) -> None:
    """A line that may hold a project id: printed as it is (`a[b]` is no style, `:b:` no
    emoji)."""
    console.print(text, highlight=False, markup=False, emoji=False)


def _project_scope(project: str) -> str:
    """The cache scope of one project, encoded as the gateway encodes it in keys."""
    from llmgw.cache import scope_of

    return scope_of("project", project_id=project, agent_type=None)


@app.command()
def stats(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    config: Config = None,
    ledger_url: Annotated[str | None, typer.Option("--ledger-url", help=LEDGER_URL_HELP)] = None,
) -> None:
    """Hits and money saved (from the ledger, all processes), plus the backend's own counts."""
    t = UsageEvent.__table__.c
    with errors_as_exit():
        url = resolve_ledger_url(ledger_url)
        ensure_current(url)
        engine = make_engine(url)
        try:
            stmt = select(func.count(), func.coalesce(func.sum(t.saved_micros), 0)).where(
                t.status == "cached")
            if project:
                stmt = stmt.where(t.project_id == project)
            with engine.connect() as conn:
                hits, saved = conn.execute(stmt).one()
        finally:
            engine.dispose()
        cache, kind = _backend(config)
        # Entries are per project only when the cache is scoped by project.
        scope = _project_scope(project) if project and kind == "project" else None
        backend = asyncio.run(_stats(cache, scope)) if cache is not None else None
    data = {"hits": hits, "saved_micros": int(saved), "saved_usd": str(micros_to_usd(int(saved))),
            "backend": backend.model_dump() if backend else None}
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    of = f" for project {project}" if project else ""
    _say(f"Cache hits{of}: {hits:,}, saving ${data['saved_usd']}")
    if backend is None:
        console.print("Cache backend: none (llmgw.cache.backend)")
    elif backend.backend == "memory":
        console.print("Cache backend: memory, inside each gateway process (use Redis to share "
                      "it and to manage it from here)")
    else:
        whose = (f" of project {project}" if scope else
                 f" (all projects: llmgw.cache.scope is {kind})" if project else "")
        _say(f"Cache backend: {backend.backend}, {backend.entries:,} entries{whose}, "
             f"{backend.hits:,} hits / {backend.misses:,} misses in all processes")


async def _stats(cache: Cache, scope: str | None) -> CacheStats:
    try:
        return await cache.stats(scope)
    finally:
        await cache.aclose()


@app.command()
def clear(
    project: Annotated[str | None, typer.Option(help="Only this project's answers.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every cached answer.")] = False,
    config: Config = None,
) -> None:
    """Delete cached answers (Redis backend; a memory cache lives inside its process)."""
    if not project and not all_:
        fail("Say what to clear: --project P or --all.", code=EXIT_USAGE)
    with errors_as_exit():
        cache, kind = _backend(config)
        if cache is None or cache.name == "memory":
            fail("The cache here is not shared (backend memory or none): it lives inside each "
                 "gateway process and goes with it.",
                 hint="Use llmgw.cache.backend: redis to share and manage it.")
        if project and kind != "project":
            asyncio.run(cache.aclose())
            fail(f"llmgw.cache.scope is {kind}: cached answers are not kept per project.",
                 hint="Clear them all with --all.")
        deleted = asyncio.run(_clear(cache, _project_scope(project) if project else None))
    _say(f"Deleted {deleted:,} cached answer(s)" + (f" of project {project}." if project else "."))


async def _clear(cache: Cache, scope: str | None) -> int:
    try:
        return await cache.clear(scope)
    finally:
        await cache.aclose()
