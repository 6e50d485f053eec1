"""`llmgw models`: groups, deployments, every rate and where it comes from, and fallbacks, from
the config and LiteLLM's bundled price map (without importing LiteLLM)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, TypedDict

import typer
from rich import box
from rich.table import Table

from llmgw.budgets.rates import CONFIG, INPUT, rates_of
from llmgw.cli._common import EXIT_USAGE, errors_as_exit, fail, print_wide
from llmgw.config.loading import load_config

app = typer.Typer(help="The model groups and deployments of the config.", invoke_without_command=True)


class _Row(TypedDict):
    """One deployment as `--format json` prints it."""
    group: str
    deployment: str
    provider: str
    model: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    rates: dict[str, dict[str, str]]  # token kind -> {usd_per_mtok, source}
    fallbacks: list[str]
    agent_types: list[str]
    default: bool


def _per_million(price: Decimal) -> str:
    """Dollars per million tokens, exact, with at least two decimals (0.075 stays 0.075)."""
    text = format((price * 1_000_000).normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


@app.callback()
def models(
    config: Annotated[str | None, typer.Option("--config", help="Config file (default: env "
                                               "LLMGW_CONFIG, then ./model_list.yaml).")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List model groups with their deployments, prices per million tokens and fallbacks."""
    if output not in ("table", "json"):
        fail(f"Unknown --format {output!r}.", hint="Use table or json.", code=EXIT_USAGE)
    with errors_as_exit():
        cfg = load_config(config)
    agent_types = cfg.llmgw.agent_type_groups()
    rows: list[_Row] = [{
        "group": d.model_name, "deployment": d.id, "provider": d.provider,
        "model": d.litellm_params.model,
        "input_usd_per_mtok": _per_million(d.input_price),
        "output_usd_per_mtok": _per_million(d.output_price),
        "rates": {kind: {"usd_per_mtok": _per_million(rate.usd_per_token), "source": rate.source}
                  for kind, rate in rates_of(d).items()},
        "fallbacks": cfg.fallback_chain(d.model_name)[1:],
        "agent_types": sorted(t for t, g in agent_types.items() if g == d.model_name),
        "default": d.model_name == cfg.llmgw.default_group,
    } for d in cfg.model_list]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Model groups in {cfg.source}", title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("group", "deployment", "model", "in $/Mtok", "out $/Mtok", "cache read",
                   "cache write", "write 1h", "falls back to", "agent types"):
        table.add_column(header, justify="right" if "$" in header else "left", no_wrap=True)
    last = None
    for r in rows:
        first = r["group"] != last
        last = r["group"]
        name = f"{r['group']} (default)" if r["default"] else r["group"]
        table.add_row(name if first else "", r["deployment"], r["model"],
                      r["input_usd_per_mtok"], r["output_usd_per_mtok"],
                      *(_marked(r["rates"][k]) for k in ("cache_read", "cache_write",
                                                         "cache_write_1h")),
                      " > ".join(r["fallbacks"]) if first else "",
                      ", ".join(r["agent_types"]) if first else "", end_section=False)
    print_wide(table)
    typer.echo("Rates without a mark are the config's; * LiteLLM's price map for the model; "
               "= the input rate (neither names one).")


def _marked(rate: dict[str, str]) -> str:
    mark = "" if rate["source"] == CONFIG else "=" if rate["source"] == INPUT else "*"
    return f"{rate['usd_per_mtok']}{mark}"
