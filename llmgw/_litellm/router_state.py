"""What LiteLLM's Router keeps about its deployments' use, read from its cache (in memory, or
the shared Redis): requests and tokens counted this minute (deployments with rpm/tpm), and
requests in flight (its max_parallel_requests slots). Their key formats are LiteLLM's.
LiteLLM is imported at the first call, not with this module."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmgw._litellm import import_litellm


def current_minute() -> str:
    """The minute LiteLLM's usage keys name now (UTC, `HH-MM`)."""
    import_litellm()
    from litellm.utils import get_utc_datetime

    return str(get_utc_datetime().strftime("%H-%M"))


def usage_keys(deployments: Iterable[tuple[str, str]], minute: str) -> list[str]:
    """The Router cache's rpm and tpm keys, in that order, of each (deployment id, model)."""
    import_litellm()
    from litellm.types.router import RouterCacheEnum

    keys: list[str] = []
    for dep_id, model in deployments:
        ids = {"id": dep_id, "model": model, "current_minute": minute}
        keys += [RouterCacheEnum.RPM.value.format(**ids), RouterCacheEnum.TPM.value.format(**ids)]
    return keys


def in_flight(router: Any, deployment_id: str) -> int:
    """Requests the Router has in flight on a deployment (its per-process max_parallel_requests
    slot), 0 when it keeps none."""
    cache = getattr(router, "cache", None)
    if cache is None:
        return 0
    slot = cache.get_cache(key=f"{deployment_id}_max_parallel_requests_client", local_only=True)
    return int(getattr(slot, "in_flight", 0) or 0)
