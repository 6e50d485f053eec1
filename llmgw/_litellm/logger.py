"""LiteLLM's callback base class (`CustomLogger`): what the Router calls per attempt (failure
and success events) and before each pick of a deployment (`async_filter_deployments`).
Importing this module imports LiteLLM (offline settings first)."""

from __future__ import annotations

from llmgw._litellm import import_litellm

import_litellm()
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

__all__ = ["CustomLogger"]
