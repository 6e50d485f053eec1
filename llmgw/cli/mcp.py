"""`llmgw mcp`: the gateway as an MCP server on stdin/stdout (for an MCP client to spawn).

Identity comes from the environment: `LLMGW_API_KEY` (a key from `llmgw keys create`), or
`LLMGW_PROJECT` + `LLMGW_AGENT` (+ `LLMGW_AGENT_TYPE`) for a trusted local process. stdout
carries the protocol only; errors go to stderr with a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Annotated

import typer

from llmgw.cli._common import errors_as_exit

SIGTERM_GRACE_S = 10.0  # from SIGTERM to exit: calls in flight are cancelled, then settled

app = typer.Typer(help="Serve the gateway as an MCP server on stdio.",
                  invoke_without_command=True)


@app.callback()
def mcp(
    config: Annotated[str | None, typer.Option(help="Config file (default: LLMGW_CONFIG, "
                                               "then ./model_list.yaml).")] = None,
) -> None:
    """Serve MCP tools (chat_completion, list_models, get_usage, estimate_cost, count_tokens)
    on stdin/stdout until the client closes stdin."""
    with errors_as_exit():
        try:
            asyncio.run(_serve(config))
        except asyncio.CancelledError:  # SIGTERM: stopped and settled
            pass


async def _serve(config: str | None) -> None:
    from llmgw.config.loading import load_config
    from llmgw.server.mcp.identity import ENV_API_KEY, Identity, identity_from_env

    cfg = load_config(config)
    identity: Identity | None = None
    if not os.environ.get(ENV_API_KEY):  # no key store needed: fail before LiteLLM loads
        identity = await identity_from_env()

    from llmgw.gateway import LLMGateway  # imports LiteLLM: only when serving
    from llmgw.server.mcp.app import serve_stdio
    from llmgw.server.mcp.identity import key_authenticator

    gw = LLMGateway(cfg)
    try:
        if identity is None:
            identity = await identity_from_env(
                authenticate=lambda: key_authenticator(gw.ledger.engine))
    except BaseException:
        await gw.aclose()
        raise
    _cancel_on_sigterm()
    await serve_stdio(gw, identity)


def _cancel_on_sigterm() -> None:
    """SIGTERM (an MCP client's shutdown escalation, a supervisor's stop) cancels the server
    like a closed stdin does, even while stdin is open: requests in flight are cancelled
    through their lifecycle and settled before exit. Should settling outlast
    SIGTERM_GRACE_S, the process exits anyway (1) and says what to run."""
    import signal

    task = asyncio.current_task()
    if task is None:
        return

    def stop() -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)  # once is enough
        watchdog = threading.Timer(SIGTERM_GRACE_S, _give_up)
        watchdog.daemon = True
        watchdog.start()
        task.cancel()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)


def _give_up() -> None:
    sys.stderr.write(f"llmgw mcp: requests still unsettled {SIGTERM_GRACE_S:g}s after SIGTERM; "
                     "exiting. `llmgw db reconcile` settles their holds.\n")
    sys.stderr.flush()
    os._exit(1)


if __name__ == "__main__":  # `python -m llmgw.cli.mcp` until the group is registered
    app()
