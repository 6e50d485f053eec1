"""Prompt tokens for budget reservations, by LiteLLM's tokenizer, each message counted once.

Agents resend their whole history on every turn; tokenizing all of it each time cost more
than the Router itself for long conversations. LiteLLM counts a plain-text conversation as
the sum of its messages' counts less a fixed reply-priming overhead per extra message, so
each message's count is remembered and only new turns are tokenized. A new turn's count is
its role's base (the count of that role with empty content) plus its content counted by
LiteLLM's own text-count function for the model: `token_counter` looks the tokenizer up
again on every call, which cost more than the counting itself. That function's name is private
(litellm is pinned), so on first use per model the sum is checked against `token_counter`
on sample turns; if it differs, or the name is gone, that model's turns go through
`token_counter`. Anything but plain text (tools and their definitions, images, names) is
counted by LiteLLM in full.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llmgw._litellm import import_litellm, text_count_function
from llmgw.errors import InvalidRequest

_PLAIN = frozenset({"role", "content"})
_PROBE = ({"role": "user", "content": "ab cd"}, {"role": "assistant", "content": "ef"})
_SAMPLES = ({"role": "user", "content": "Check: ünïcode ✓, 12345 and `x = f(y)`.\n\nDone."},
            {"role": "system", "content": "  spaced   words  "})


class PromptTokenCounter:
    """`litellm.token_counter(model, messages)`, with per-message counts remembered."""

    def __init__(self, max_entries: int = 8192) -> None:
        self._counter = import_litellm().token_counter
        self._max = max_entries
        # Oldest out first in O(1): a dict's first key after many deletions at its front is
        # found by skipping them, a cost that grows once the memo is full.
        self._per_message: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._overhead: dict[str, int] = {}
        self._text: dict[str, Callable[[str], int] | None] = {}  # None: use token_counter
        self._base: dict[tuple[str, str], int] = {}

    def count(self, model: str, messages: list[dict[str, Any]], *, tools: Any = None,
              tool_choice: Any = None) -> int:
        if tools or tool_choice or not messages or not all(
                m.keys() <= _PLAIN and isinstance(m.get("content"), str) for m in messages):
            try:
                # An image counts at LiteLLM's default size: never fetch a caller's URL.
                return int(self._counter(model=model, messages=messages, tools=tools or None,
                                         tool_choice=tool_choice,
                                         use_default_image_token_count=True))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise InvalidRequest(
                    f"The messages or tools could not be read: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                    hint="Send OpenAI-shaped messages (content a string or a list of "
                         "{'type': 'text'|'image_url', ...} parts) and function tools.") from None
        memo = self._per_message
        total = 0
        for m in messages:
            key = (model, m["role"], m["content"])
            n = memo.get(key)
            if n is None:
                if len(memo) >= self._max:
                    memo.popitem(last=False)
                n = memo[key] = self._count_one(model, m)
            total += n
        return total - self._overhead_of(model) * (len(messages) - 1)

    def _count_one(self, model: str, message: dict[str, Any]) -> int:
        text = self._text[model] if model in self._text else self._text_function(model)
        if text is None:
            return int(self._counter(model=model, messages=[message]))
        return self._base_of(model, message["role"]) + text(message["content"])

    def _base_of(self, model: str, role: str) -> int:
        base = self._base.get((model, role))
        if base is None:
            base = self._base[(model, role)] = int(
                self._counter(model=model, messages=[{"role": role, "content": ""}]))
        return base

    def _text_function(self, model: str) -> Callable[[str], int] | None:
        """LiteLLM's text count for `model`, if base + it counts the samples as LiteLLM does."""
        text = litellm_text_counter(model)
        if text is not None and any(
                self._base_of(model, m["role"]) + text(m["content"])
                != int(self._counter(model=model, messages=[m])) for m in _SAMPLES):
            text = None
        self._text[model] = text
        return text

    def _overhead_of(self, model: str) -> int:
        overhead = self._overhead.get(model)
        if overhead is None:
            a, b = _PROBE
            overhead = self._overhead[model] = int(
                self._counter(model=model, messages=[a]) + self._counter(model=model, messages=[b])
                - self._counter(model=model, messages=[a, b]))
        return overhead


def litellm_text_counter(model: str) -> Callable[[str], int] | None:
    """The function `token_counter` counts a string with for `model`, or None."""
    try:
        return text_count_function(model)  # type: ignore[return-value]  # LiteLLM: untyped
    except Exception:  # renamed or failing in another litellm: the public call instead
        return None
