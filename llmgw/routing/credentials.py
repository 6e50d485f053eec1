"""Deployments whose credentials are known to be bad, so that no request routes around them.

Two ways to know: the key's `os.environ/NAME` variable was not set when the Router was built
(LiteLLM would send the provider's default variable instead, another key, or nothing), or
LiteLLM's Router is cooling the deployment down after the provider refused its key (401).

Our rule: an auth failure is never hidden. While one deployment of a group is known bad,
every request routed to that group is refused with AuthenticationFailed naming it, even
when a sibling could answer: a sibling's answer would hide the bad key until it came up
again, and requests would fail or pass at random. A 403 is not cooled down by LiteLLM, so
each request that reaches a forbidding deployment raises it on its own.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmgw._litellm import cooldown_statuses
from llmgw.config.models import Config, Deployment

log = logging.getLogger("llmgw.routing.router")

_AUTH_STATUSES = (401, 403)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request to a group is not sent: which deployment, and the reason in words."""

    deployment: Deployment
    reason: str


class CredentialGuard:
    """What one Router's requests must not route around (see the module docstring)."""

    def __init__(self, config: Config, router: Any) -> None:
        self._router = weakref.ref(router)
        self._groups = {group: tuple(d.id for d in deps)
                        for group, deps in config.groups().items()}
        self._deployments = {d.id: d for d in config.model_list}
        self.unset = unset_key_variables(config.model_list)
        # group -> the first of its deployments whose key variable is unset
        self._unset_in = {group: self._deployments[i] for group, ids in self._groups.items()
                          for i in reversed(ids) if i in self.unset}

    def warn_unset(self) -> None:
        """One warning per deployment whose key variable is not set."""
        for dep_id, var in self.unset.items():
            group = self._deployments[dep_id].model_name
            log.warning("Deployment %s (group %s): its api_key names the environment variable "
                        "%s, which is not set. Requests routed to group %s raise "
                        "AuthenticationFailed until it is set and the gateway restarted.",
                        dep_id, group, var, group)

    async def refusal(self, group: str, healthy: Sequence[dict[str, Any]]) -> Refusal | None:
        """Why a request routed to `group` must not be sent, or None. `healthy` is what the
        Router may still pick from; a deployment missing there may be cooling down."""
        dep = self._unset_in.get(group)
        if dep is not None:
            return Refusal(dep, f"environment variable {self.unset[dep.id]} is not set "
                                f"(the api_key of deployment {dep.id}); the request was not sent")
        ids = self._groups.get(group)
        if not ids or len(healthy) >= len(ids):  # the usual case: nothing is cooling down
            return None
        left = {(d.get("model_info") or {}).get("id") for d in healthy}
        gone = [i for i in ids if i not in left]
        router = self._router()
        if not gone or router is None:
            return None
        for dep_id, entry in (await cooldown_statuses(router, gone)).items():
            if entry.status in _AUTH_STATUSES:
                return Refusal(self._deployments[dep_id], (
                    f"deployment {dep_id} is cooling down after its provider refused the key "
                    f"(HTTP {entry.status}); the request was not sent. It is tried again in "
                    f"{entry.remaining_s:.0f} s"))
        return None


def unset_key_variables(deployments: Iterable[Deployment]) -> dict[str, str]:
    """Deployment id -> the name of its api_key's environment variable, where that is unset."""
    return {d.id: var for d in deployments
            if (var := d.api_key_env()) is not None and not os.environ.get(var)}
