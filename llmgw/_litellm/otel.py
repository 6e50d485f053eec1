"""LiteLLM's OpenTelemetry integration (`llmgw.observe.tracing`): the logger that puts a span
per attempt under the span its request's metadata names, and its settings. Importing this
module imports LiteLLM (offline settings first) and OpenTelemetry (extra `otel`)."""

from __future__ import annotations

from llmgw._litellm import import_litellm

import_litellm()
from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig  # noqa: E402

__all__ = ["OpenTelemetry", "OpenTelemetryConfig"]
