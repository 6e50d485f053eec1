"""A gateway in its own OS process: `python -m tests.budgets.worker CONFIG.json N AGENT`.

Runs N concurrent requests and prints one JSON line {"ok": [...costs], "refused": n, "other": n}.
With N = 0 it sends one request and waits for it forever (for the crash test)."""

from __future__ import annotations

import asyncio
import json
import sys

from llmgw._litellm import set_offline_env

set_offline_env()


async def main(path: str, count: int, agent: str) -> None:
    from llmgw.config import config_from_dict
    from llmgw.errors import BudgetExceeded
    from llmgw.gateway import LLMGateway

    with open(path) as f:
        gw = LLMGateway(config_from_dict(json.load(f)))
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
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
