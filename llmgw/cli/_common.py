"""What every command group shares: consoles and one-line errors instead of tracebacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console, RenderableType
from rich.markup import escape

from llmgw.errors import InvalidRequest, LLMGatewayError

# Exit codes: 1 = the command could not do its work, 2 = the arguments are wrong.
EXIT_FAILURE = 1
EXIT_USAGE = 2

LEDGER_URL_HELP = (
    "Ledger database URL. Default: env LLMGW_LEDGER_URL, then llmgw.ledger.url in the config "
    "file, then sqlite:///llmgw.db."
)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, *, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one red line (message + hint) on stderr and exit with `code`."""
    text = f"{message} {hint}" if hint else message
    err_console.print(f"[bold red]Error:[/] {escape(text)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def errors_as_exit() -> Iterator[None]:
    """Turn llmgw's errors into a one-line message; bad input exits 2, the rest 1."""
    try:
        yield
    except LLMGatewayError as exc:
        code = EXIT_USAGE if isinstance(exc, InvalidRequest) else EXIT_FAILURE
        fail(exc.message, hint=exc.hint, code=code)


def print_wide(renderable: RenderableType) -> None:
    """Print a table at the width it needs, even past the terminal's (or a pipe's 80):
    a truncated name or amount is a wrong one."""
    needed = console.measure(renderable, options=console.options.update_width(10_000)).maximum
    target = console if needed <= console.width else Console(width=needed, file=console.file)
    target.print(renderable)
