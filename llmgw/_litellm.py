"""The one place llmgw imports LiteLLM: lazily, offline, once per process.

`import litellm` takes seconds and, without these settings, tries the internet at every
import (price map, Anthropic beta headers, Hugging Face tokenizers). CLI commands that do
not call a model must never reach this module.
"""

from __future__ import annotations

import os
from types import ModuleType

_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "HF_HUB_OFFLINE": "1",
    "LITELLM_TELEMETRY": "False",
}

_module: ModuleType | None = None


def set_offline_env() -> None:
    """Set LiteLLM's offline switches unless the user chose otherwise."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def import_litellm() -> ModuleType:
    """Import litellm with the offline settings applied first; cached after the first call."""
    global _module
    if _module is None:
        set_offline_env()
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        _module = litellm
    return _module
