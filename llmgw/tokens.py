"""Prompt tokens for budget reservations, by LiteLLM's tokenizer, each message counted once.

Agents resend their whole history on every turn; tokenizing all of it each time cost more
than the Router itself for long conversations. LiteLLM counts a plain-text conversation as
the sum of its messages' counts less a fixed reply-priming overhead per extra message, so
each message's count is remembered and only new turns are tokenized. Anything but plain
text (tools, images, names) is counted by LiteLLM in full, as before.
"""

from __future__ import annotations

from typing import Any

from llmgw._litellm import import_litellm

_PLAIN = frozenset({"role", "content"})
_PROBE = ({"role": "user", "content": "ab cd"}, {"role": "assistant", "content": "ef"})


class PromptTokenCounter:
    """`litellm.token_counter(model, messages)`, with per-message counts remembered."""

    def __init__(self, max_entries: int = 8192) -> None:
        self._counter = import_litellm().token_counter
        self._max = max_entries
        self._per_message: dict[tuple[str, str, str], int] = {}
        self._overhead: dict[str, int] = {}

    def count(self, model: str, messages: list[dict[str, Any]]) -> int:
        if len(messages) < 2 or not all(m.keys() <= _PLAIN and isinstance(m.get("content"), str)
                                        for m in messages):
            return int(self._counter(model=model, messages=messages))
        memo = self._per_message
        total = 0
        for m in messages:
            key = (model, m["role"], m["content"])
            n = memo.get(key)
            if n is None:
                if len(memo) >= self._max:  # oldest first: dicts keep insertion order
                    del memo[next(iter(memo))]
                n = memo[key] = int(self._counter(model=model, messages=[m]))
            total += n
        return total - self._overhead_of(model) * (len(messages) - 1)

    def _overhead_of(self, model: str) -> int:
        overhead = self._overhead.get(model)
        if overhead is None:
            a, b = _PROBE
            overhead = self._overhead[model] = int(
                self._counter(model=model, messages=[a]) + self._counter(model=model, messages=[b])
                - self._counter(model=model, messages=[a, b]))
        return overhead
