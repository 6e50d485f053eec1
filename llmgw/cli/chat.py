"""`llmgw chat`: one prompt through the gateway, as an agent of a project."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from llmgw.cli._common import console, errors_as_exit

app = typer.Typer(help="Ask one question through the gateway.", invoke_without_command=True)


@app.callback()
def chat(
    prompt: Annotated[str, typer.Argument(help="The question.")],
    agent: Annotated[str, typer.Option(help="Agent id (recorded in the ledger).")] = "cli",
    project: Annotated[str, typer.Option(help="Project id (recorded in the ledger).")] = "cli",
    agent_type: Annotated[str | None, typer.Option(help="Agent type, e.g. qa-engineer.")] = None,
    model_group: Annotated[str | None, typer.Option(help="Model group, overrides the type.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on the answer's tokens.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it comes.")] = False,
    config: Annotated[str | None, typer.Option(help="Config file (default: LLMGW_CONFIG, "
                                               "then ./model_list.yaml).")] = None,
) -> None:
    """Print the answer, then one line: model, tokens, cost, request id."""
    with errors_as_exit():
        asyncio.run(_chat(prompt, agent, project, agent_type, model_group, system, max_tokens,
                          stream, config))


async def _chat(prompt: str, agent: str, project: str, agent_type: str | None,
                model_group: str | None, system: str | None, max_tokens: int | None,
                stream: bool, config: str | None) -> None:
    from llmgw.gateway import LLMGateway  # imports LiteLLM: only when a question is asked
    from llmgw.types import ContentDelta, StreamDone, StreamError

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    kwargs: dict[str, Any] = {"agent_type": agent_type, "model_group": model_group}
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    gw = LLMGateway(config)
    try:
        if not stream:
            done = await gw.complete(agent, project, messages, **kwargs)
            console.print(done.content or "", markup=False, highlight=False)
        else:
            done = None
            async for event in gw.stream(agent, project, messages, **kwargs):
                if isinstance(event, ContentDelta):
                    console.print(event.text, end="", markup=False, highlight=False)
                elif isinstance(event, StreamDone):
                    done = event.completion
                elif isinstance(event, StreamError):
                    console.print()
                    console.print(f"[red]stream broke: {event.error_class}: {event.message}[/]")
                    done = event.partial
            console.print()
        assert done is not None
        console.print(f"[dim]{done.model} via {done.deployment} ({done.model_group}) · "
                      f"{done.usage.prompt_tokens}+{done.usage.completion_tokens} tokens · "
                      f"${done.cost_micros / 1e6:.6f} · {done.latency_ms:.0f} ms · "
                      f"request {done.request_id}[/]", highlight=False, soft_wrap=True)
    finally:
        await gw.aclose()
