"""LiteLLM providers that llmgw adds: ``ruvector/<auto|fast|quality|balanced>`` (ruvLLM).

`register()` must run before a `litellm.Router` whose model_list names them is built.
Importing this package is cheap; LiteLLM is imported only by `register()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmgw.providers.ruvector import RuVectorLLM

__all__ = ["register"]


def register() -> RuVectorLLM:
    """Register every llmgw provider with LiteLLM (idempotent); returns the ruvector handler."""
    from llmgw.providers import ruvector

    return ruvector.register()
