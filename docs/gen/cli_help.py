"""Print the help of `llmgw` and of every command and subcommand as Markdown, for docs/cli.md.

Walks the real typer/click tree, so a new command or a changed option shows up in the page
(and `cog --check docs/cli.md` fails until it is regenerated). Run it in a fresh process:
the width and colour settings below must be in place before typer is imported."""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.update(TYPER_USE_RICH="0", NO_COLOR="1", COLUMNS="100", TERMINAL_WIDTH="100")

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from llmgw.cli import app  # noqa: E402


def commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `command`, itself first, in the CLI's own order. Typer
    vendors click, so a group is whatever has subcommands."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            found += commands(sub, (*path, name))
    return found


def main() -> None:
    runner = CliRunner()
    for path in commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], prog_name="llmgw",
                               env={"COLUMNS": "100", "NO_COLOR": "1"})
        if result.exit_code != 0:
            sys.exit(f"llmgw {' '.join(path)} --help exited {result.exit_code}: {result.output}")
        title = " ".join(("llmgw", *path))
        print(f"### `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")


if __name__ == "__main__":
    main()
