"""LiteLLM's Router classes: `litellm.Router` as shipped, llmgw's `LeanRouter` (the same minus
per-call work that changes nothing a user sees), and the Router's general settings type.
LiteLLM is imported at the first call, not with this module."""

from __future__ import annotations

from typing import Any

from llmgw._litellm import import_litellm

_lean_router: type | None = None


def router_class(lean: bool = True) -> type:
    """The Router class llmgw builds: `LeanRouter` (`lean`), else `litellm.Router`."""
    if lean:
        return lean_router_class()
    shipped: type = import_litellm().Router
    return shipped


def general_settings_class() -> Any:
    """`litellm.types.router.RouterGeneralSettings` (the Router's `router_general_settings`)."""
    import_litellm()
    from litellm.types.router import RouterGeneralSettings

    return RouterGeneralSettings


def lean_router_class() -> type:
    """`litellm.Router` minus per-call work that changes nothing a user sees.

    After every answer LiteLLM's Router prices the serving deployment's model info (a deep copy
    of a large price entry, twice per call) only to find, for a deployment with no rpm/tpm
    limit, that it has no usage to count. This Router asks that question once per deployment
    (LiteLLM's own test, `_increment_deployment_usage`'s) and skips the call when the answer
    is no; a deployment with a limit is counted exactly as LiteLLM counts it. A deployment
    replaced in the model list is asked again."""
    global _lean_router
    if _lean_router is not None:
        return _lean_router
    litellm = import_litellm()
    from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import (
        deployment_has_io_token_limits,
    )

    class LeanRouter(litellm.Router):  # type: ignore[name-defined]  # a module attribute mypy cannot see
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # deployment id, group -> (its model-list entry when asked, the answer); valid for
            # one model list of one size
            self._usage_tracked: dict[tuple[str, str], tuple[Any, bool]] = {}
            self._usage_list: tuple[int, int] = (0, -1)
            super().__init__(*args, **kwargs)

        def tracks_usage(self, deployment_id: str, model_group: str) -> bool:
            """Whether LiteLLM counts this deployment's rpm/tpm use (it has a limit). Asked
            again when its model-list entry is replaced or the list changes size (a deployment
            of the same model may have brought a model-wide limit)."""
            index = self.model_id_to_deployment_index_map.get(deployment_id)
            if index is None:
                return True  # unknown here: LiteLLM's own code decides
            entry = self.model_list[index]
            state = (id(self.model_list), len(self.model_list))
            if state != self._usage_list:
                self._usage_tracked, self._usage_list = {}, state
            known = self._usage_tracked.get((deployment_id, model_group))
            if known is not None and known[0] is entry:
                return known[1]
            deployment = self.get_deployment(model_id=deployment_id)
            info = self.get_router_model_info(deployment=deployment,
                                              received_model_name=model_group)
            limits = (deployment.get("tpm"), deployment.get("rpm"),
                      deployment.litellm_params.tpm, deployment.litellm_params.rpm,
                      info.get("tpm"), info.get("rpm"))
            tracked = any(limit is not None for limit in limits) or bool(
                deployment_has_io_token_limits(deployment.model_dump()))
            self._usage_tracked[(deployment_id, model_group)] = (entry, tracked)
            return tracked

        async def _increment_deployment_usage(self, *, deployment_id: str, model_group: str,
                                              **kwargs: Any) -> str | None:
            if not self.tracks_usage(deployment_id, model_group):
                return None
            return await super()._increment_deployment_usage(
                deployment_id=deployment_id, model_group=model_group, **kwargs)

    _lean_router = LeanRouter
    return LeanRouter


def hide_router_debug_in_errors() -> None:
    """Keep LiteLLM's Router debug appendix (deployments, settings) out of its error texts."""
    litellm = import_litellm()
    if hasattr(litellm, "expose_router_debug_in_errors"):  # not in every release
        setattr(litellm, "expose_router_debug_in_errors", False)  # noqa: B010  (mypy: a ModuleType)
