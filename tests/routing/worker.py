"""A gateway in its own OS process, for the routing tests:
`python -m tests.routing.worker CONFIG.json GROUP COUNT CONCURRENCY [stream]`.

Sends COUNT requests to GROUP, CONCURRENCY at a time, and prints one JSON line per request:
{"deployment", "attempts": [[deployment, status], ...], "routing"} or {"error", "retry_after"}."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from llmgw._litellm import set_offline_env

set_offline_env()


async def main(path: str, group: str, count: int, concurrency: int, stream: bool) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.errors import LLMGatewayError
    from llmgw.gateway import LLMGateway

    text = await asyncio.to_thread(Path(path).read_text)
    gw = LLMGateway(config_from_dict(json.loads(text)))
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        ask = [{"role": "user", "content": f"Request {i}: review the service boundaries."}]
        async with gate:
            try:
                if stream:
                    done = None
                    async for event in gw.stream("agent-w", "proj-routing", ask, model_group=group,
                                                 max_tokens=16):
                        done = getattr(event, "completion", None) or done
                    line = {"stream": True}
                else:
                    done = await gw.complete("agent-w", "proj-routing", ask, model_group=group,
                                             max_tokens=16)
                    line = {"deployment": done.deployment,
                            "attempts": [[a.deployment, a.status] for a in done.attempts]}
            except LLMGatewayError as exc:
                line = {"error": type(exc).__name__, "retry_after": getattr(exc, "retry_after", None),
                        "attempts": [[a.deployment, a.status] for a in getattr(exc, "attempts", [])]}
        print(json.dumps(line), flush=True)

    await asyncio.gather(*(one(i) for i in range(count)))
    await gw.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                     len(sys.argv) > 5 and sys.argv[5] == "stream"))
