"""`llmgw sim`: run provider simulators on loopback until Ctrl-C / SIGTERM (no LiteLLM)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from llmgw.cli._common import EXIT_USAGE, console, err_console, fail, print_wide

if TYPE_CHECKING:
    from llmgw.sim.faults import FaultPlan, ToolCall
    from llmgw.sim.registry import SimProvider
    from llmgw.sim.server import SimServer

# Printed (and flushed) once every simulator listens and the snippet is out: scripts and
# tests wait for this line rather than for time to pass.
READY_MARKER = "llmgw sim: ready"

# A group (for `app.add_typer`) whose callback takes positional names: groups stop parsing
# options at the first positional unless told otherwise.
app = typer.Typer(help="Run provider simulators for offline development and tests.",
                  invoke_without_command=True, subcommand_metavar="",
                  context_settings={"allow_interspersed_args": True})


@app.callback()
def sim(
    providers: Annotated[list[str] | None, typer.Argument(
        metavar="PROVIDER", help="Simulators to start: openai, anthropic, gemini, cohere, "
                                 "ollama, ruvllm (default: every one available).",
        show_default=False)] = None,
    port: Annotated[list[str] | None, typer.Option(
        "--port", metavar="NAME=PORT", help="Fixed port for one simulator (default: a free "
                                            "port). Repeatable.")] = None,
    fault: Annotated[list[str] | None, typer.Option(
        "--fault", metavar="SPEC", help="Fault for every simulator, e.g. 429:retry_after=2,"
                                        "times=1 or latency:delay_s=0.2. Repeatable.")] = None,
    fault_for: Annotated[list[str] | None, typer.Option(
        "--fault-for", metavar="NAME=SPEC", help="Fault for one simulator, e.g. "
                                                 "openai=503:times=2; checked before --fault. "
                                                 "Repeatable.")] = None,
    tool_call: Annotated[list[str] | None, typer.Option(
        "--tool-call", metavar="NAME=JSON", help="Scripted agent loop: a request offering tool NAME "
                                                 "gets a call with these arguments, a turn holding "
                                                 "its result gets text quoting it, e.g. "
                                                 "'Bash={\"command\":\"ls\"}'. Repeatable; the "
                                                 "first offered one is called. OpenAI's Responses API "
                                                 "too (functions inside namespace tools count).")] = None,
    redact_thinking: Annotated[bool, typer.Option(
        "--redact-thinking", help="Thinking requests get a redacted_thinking block (Anthropic).")] = False,
    reasoning_tokens: Annotated[int | None, typer.Option(
        "--reasoning-tokens", metavar="N", min=0, help="Output tokens reported as reasoning, counted "
                                                       "inside the output tokens (OpenAI; default: "
                                                       "the reasoning text's words).",
        show_default=False)] = None,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", metavar="FILE", help="YAML fault plan for every simulator (faults, answer, usage, "
                                       "cache writes, tool_loop, thinking); the options above add to "
                                       "it, their faults and tool calls checked first.",
        dir_okay=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed for probabilistic faults and jitter (default: the plan's, else 0).",
        show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="Key the simulators require (default: any key is accepted).")] = None,
    snippet_file: Annotated[Path | None, typer.Option(
        "--snippet-file", help="Write the model_list.yaml snippet here instead of printing it.",
        dir_okay=False)] = None,
) -> None:
    """Start simulators, print their addresses and a ready model_list.yaml, serve until stopped."""
    from llmgw.sim import registry

    chosen = _choose(providers or [])
    names = [p.name for p in chosen]
    ports = _pairs(port or [], "--port", names, _port_number)
    specific = _pairs(fault_for or [], "--fault-for", names, str, many=True)
    base = _load_plan(plan_file)
    loop = _tool_calls(tool_call or [])
    plans = {name: _plan([*specific.get(name, []), *(fault or [])], base, loop, seed, redact_thinking,
                         reasoning_tokens)
             for name in names}

    stop = threading.Event()
    with _stop_on_signals(stop):
        running = _start(chosen, plans, ports, api_key)
        try:
            base_urls = {name: server.base_url for name, server in running.items()}
            _print_table(chosen, base_urls, plans)
            text = registry.snippet(base_urls, api_key=api_key)
            if snippet_file is None:
                typer.echo(text, nl=False)
            else:
                _write_atomically(snippet_file, text)
                console.print(f"Wrote the model_list.yaml snippet to {escape(str(snippet_file))}",
                              highlight=False, soft_wrap=True)
            console.print(f"{READY_MARKER} ({_count(running)}). Stop with Ctrl-C or SIGTERM.",
                          highlight=False, soft_wrap=True)
            sys.stdout.flush()
            while not stop.wait(1.0):
                pass
        finally:
            for server in running.values():
                server.stop()
    console.print(f"Stopped {_count(running)}.", highlight=False)


def _count(running: dict[str, Any]) -> str:
    return f"{len(running)} simulator{'' if len(running) == 1 else 's'}"


def _choose(names: list[str]) -> list[SimProvider]:
    from llmgw.sim import registry

    if not names:
        chosen = registry.available()
        for p in registry.PROVIDERS.values():
            if p not in chosen:
                err_console.print(f"[yellow]Skipping {p.name}:[/] its simulator is not "
                                  "available yet.", highlight=False)
        if not chosen:
            fail("No simulator is available.")
        return chosen
    chosen = []
    for name in names:
        try:
            provider = registry.get(name)
        except KeyError as exc:
            fail(f"{exc.args[0]}.", code=EXIT_USAGE)
        if provider not in chosen:
            chosen.append(provider)
    for provider in chosen:
        try:
            provider.load()
        except registry.SimUnavailable as exc:
            fail(f"Cannot start {provider.name}: {exc}.",
                 hint="Start the other simulators, or update llmgw.")
    return chosen


def _port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("out of range")
    return value


def _pairs(items: list[str], option: str, names: list[str], convert: Any,
           many: bool = False) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` options for the chosen simulators; exit 2 on a bad one."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or not value.strip():
            fail(f"{option} {item!r}: expected NAME=VALUE.", code=EXIT_USAGE)
        if name not in names:
            fail(f"{option} {item!r}: {name!r} is not one of the simulators to start "
                 f"({', '.join(names)}).", code=EXIT_USAGE)
        try:
            converted = convert(value.strip())
        except ValueError:
            fail(f"{option} {item!r}: {value!r} is not a valid value.", code=EXIT_USAGE)
        if many:
            out.setdefault(name, []).append(converted)
        else:
            out[name] = converted
    return out


def _problems(exc: Any) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors())


def _load_plan(path: Path | None) -> FaultPlan:
    from pydantic import ValidationError

    from llmgw.sim.faults import FaultPlan

    if path is None:
        return FaultPlan()
    try:
        return FaultPlan.load(path)
    except OSError as exc:
        fail(f"--plan {path}: cannot read it: {exc.strerror or exc}.", code=EXIT_USAGE)
    except ValidationError as exc:
        fail(f"--plan {path}: {_problems(exc)}.", code=EXIT_USAGE)
    except ValueError as exc:  # bad YAML, a bad fault or tool-call string
        reason = " ".join(str(exc).split())
        where = "--plan" if str(path) in reason else f"--plan {path}"  # say the path once
        fail(f"{where}: {reason}.", code=EXIT_USAGE)


def _tool_calls(specs: list[str]) -> list[ToolCall]:
    from llmgw.sim.faults import ToolCall

    try:
        return [ToolCall.parse(spec) for spec in specs]
    except ValueError as exc:
        fail(f"Bad --tool-call: {exc}.", hint='Example: --tool-call \'Bash={"command":"ls"}\'',
             code=EXIT_USAGE)


def _plan(specs: list[str], base: FaultPlan, tool_calls: list[ToolCall], seed: int | None,
          redact_thinking: bool, reasoning_tokens: int | None = None) -> FaultPlan:
    """The command line's faults and tool calls, then the plan file's, over the file's plan."""
    from pydantic import ValidationError

    from llmgw.sim.faults import FaultPlan

    try:
        faults = FaultPlan.parse(specs).faults
    except ValidationError as exc:
        fail(f"Bad fault spec in {specs}: {_problems(exc)}.", code=EXIT_USAGE)
    except ValueError as exc:
        fail(f"Bad fault spec: {exc}.", hint="Example: --fault 429:retry_after=2,times=1",
             code=EXIT_USAGE)
    update: dict[str, Any] = {"faults": [*faults, *base.faults],
                              "tool_loop": [*tool_calls, *base.tool_loop]}
    if seed is not None:
        update["seed"] = seed
    if redact_thinking:
        update["redact_thinking"] = True
    if reasoning_tokens is not None:
        update["reasoning_tokens"] = reasoning_tokens
    return base.model_copy(update=update)


def _start(chosen: list[SimProvider], plans: dict[str, FaultPlan], ports: dict[str, int],
           api_key: str | None) -> dict[str, SimServer]:
    running: dict[str, SimServer] = {}
    for provider in chosen:
        port = ports.get(provider.name, 0)
        try:
            server = provider.load()(plans[provider.name], api_key=api_key, port=port)
            running[provider.name] = server.start()
        except (OSError, RuntimeError) as exc:
            for started in running.values():
                started.stop()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            fail(f"Cannot start the {provider.name} simulator on port {port}: {reason}.",
                 hint="Choose another --port or leave it out.")
    return running


def _print_table(chosen: list[SimProvider], base_urls: dict[str, str],
                 plans: dict[str, FaultPlan]) -> None:
    table = Table(title="Simulators", title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("provider", "base URL", "api_base", "model", "faults"):
        table.add_column(header, no_wrap=True)
    for p in chosen:
        plan = plans[p.name]
        faults = ", ".join([*(f.kind if f.kind != "http_error" else str(f.status) for f in plan.faults),
                            *(f"tool:{c.name or '*'}" for c in plan.tool_loop)])
        table.add_row(p.name, base_urls[p.name], p.api_base(base_urls[p.name]), p.model,
                      faults or "-")
    print_wide(table)


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for the file never see half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"Cannot write {path}: {exc.strerror or exc}.")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (a clean exit 0) instead of raising mid-shutdown."""
    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
