"""A gateway in its own OS process: `python -m tests.scale.worker CONFIG.json AGENT_TYPE N`.

Sends N requests one after another and prints one JSON line per completion:
{"deployment": ..., "attempts": [[deployment, status], ...]}."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from llmgw._litellm import set_offline_env

set_offline_env()


async def main(path: str, agent_type: str, count: int) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway

    config = json.loads(await asyncio.to_thread(Path(path).read_text))
    gw = LLMGateway(config_from_dict(config))
    ask = [{"role": "user", "content": "Review the service boundaries."}]
    for i in range(count):
        done = await gw.complete(f"agent-{agent_type}", "proj-scale", ask, agent_type=agent_type,
                                 metadata={"n": i})
        print(json.dumps({"deployment": done.deployment,
                          "attempts": [[a.deployment, a.status] for a in done.attempts]}),
              flush=True)
    await gw.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
