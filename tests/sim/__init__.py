"""Tests of the provider simulators; shared strictness helpers live here."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def assert_no_extra(value: Any, where: str = "$") -> None:
    """Fail if any pydantic model inside ``value`` kept fields its class does not know."""
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"unknown fields at {where}: {sorted(extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_no_extra(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra(item, f"{where}.{key}")


def strict(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` as ``model`` and require every key to be a known field."""
    parsed = model.model_validate(data)
    assert_no_extra(parsed)
    return parsed


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data) pairs."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def sse_json(text: str) -> list[tuple[str | None, Any]]:
    """SSE events with JSON data decoded (``[DONE]`` kept as a string)."""
    return [(name, data if data == "[DONE]" else json.loads(data)) for name, data in sse_events(text)]
