"""A gateway in its own OS process: `python -m tests.budgets.worker CONFIG.json N AGENT [MARKER]`.

Runs N concurrent requests and prints one JSON line {"ok": [...costs], "refused": n, "other": n}.
With N = 0 it sends one request and waits for it forever (for the crash tests): with MARKER,
the request's settle is held once the provider has answered (the gateway's own ledger call,
wrapped here), and MARKER is written then."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from llmgw._litellm import set_offline_env

set_offline_env()


def hold_settles(gw: Any, marker: Path) -> None:
    """Every settle the gateway starts waits forever, after writing `marker`: the process
    is between the provider's answer and the ledger's settle."""
    settle_op, start = gw.budget_store.settle_op, gw.ledger.start
    settles: set[int] = set()

    def held_settle_op(*args: Any, **kwargs: Any) -> Any:
        op = settle_op(*args, **kwargs)
        settles.add(id(op))
        return op

    async def never_settled() -> None:
        await asyncio.to_thread(marker.write_text, "answered, not settled")
        await asyncio.Event().wait()

    def held_start(op: Any, **kwargs: Any) -> Any:
        if id(op) in settles:
            return asyncio.ensure_future(never_settled())
        return start(op, **kwargs)

    gw.budget_store.settle_op = held_settle_op
    gw.ledger.start = held_start


async def main(path: str, count: int, agent: str, marker: str | None = None) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.errors import BudgetExceeded
    from llmgw.gateway import LLMGateway

    config = json.loads(await asyncio.to_thread(Path(path).read_text))
    gw = LLMGateway(config_from_dict(config))
    if marker is not None:
        hold_settles(gw, Path(marker))
    ask = [{"role": "user", "content": "Estimate the migration effort."}]
    if count == 0:
        print("ready", flush=True)
        await gw.complete(agent, "proj-a", ask, model_group="solo", max_tokens=100)
        return
    results = await asyncio.gather(*(gw.complete(agent, "proj-a", ask, model_group="solo",
                                                 max_tokens=100) for _ in range(count)),
                                   return_exceptions=True)
    print(json.dumps({
        "ok": [r.cost_micros for r in results if not isinstance(r, BaseException)],
        "refused": sum(isinstance(r, BudgetExceeded) for r in results),
        "other": [repr(r) for r in results
                  if isinstance(r, BaseException) and not isinstance(r, BudgetExceeded)],
    }), flush=True)
    gw.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:5]))
