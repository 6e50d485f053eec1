"""The remembered prompt-token count equals LiteLLM's own count of the whole conversation."""

from __future__ import annotations

import pytest

from llmgw._litellm import import_litellm
from llmgw.config.loading import load_config
from llmgw.pipeline.tokens import PromptTokenCounter
from tests.unit.test_config import REPO

SHIPPED_MODELS = sorted({d.litellm_params.model
                         for d in load_config(REPO / "model_list.yaml").model_list})
MODELS = [*SHIPPED_MODELS, "anthropic/claude-sim", "openai/gpt-sim", "gemini/gemini-2.5-flash",
          "cohere_chat/command-r", "ollama/llama3.2", "ruvector/auto"]
TURNS = ["You are a careful software architect.", "Split the billing service?",
         "Yes: invoices and payments change for different reasons.", "And the ledger? ünïcode ✓",
         "", "Keep it with payments; one transaction boundary.\n\nDone."]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": r, "content": c}
     for r, c in zip(["system", "user", "assistant", "user"], TURNS[:4], strict=True)],
    [{"role": ["user", "assistant"][i % 2], "content": c} for i, c in enumerate(TURNS * 3)],
]


@pytest.mark.parametrize("model", MODELS)
def test_remembered_count_is_litellms_count(model: str) -> None:
    counter = PromptTokenCounter()
    litellm = import_litellm()
    for _ in range(2):  # the second pass comes from memory
        for messages in CONVERSATIONS:
            assert counter.count(model, messages) == litellm.token_counter(model=model,
                                                                           messages=messages)


def test_messages_that_are_not_plain_text_are_counted_in_full() -> None:
    counter = PromptTokenCounter(max_entries=2)
    litellm = import_litellm()
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert counter.count("openai/gpt-4.1", messages) == litellm.token_counter(
        model="openai/gpt-4.1", messages=messages)
    long = CONVERSATIONS[2]  # more messages than the memory holds: still exact
    assert counter.count("openai/gpt-4.1", long) == litellm.token_counter(model="openai/gpt-4.1",
                                                                          messages=long)


@pytest.mark.parametrize("model", ["openai/gpt-4.1", "anthropic/claude-sim"])
def test_long_and_single_turns_are_litellms_count(model: str) -> None:
    counter = PromptTokenCounter()
    litellm = import_litellm()
    long_turn = {"role": "user", "content": " ".join(TURNS) * 4000}  # LiteLLM extrapolates
    for messages in ([long_turn], [{"role": "system", "content": "Be brief."}, long_turn], []):
        assert counter.count(model, messages) == litellm.token_counter(model=model,
                                                                       messages=messages)


class _WrongText(PromptTokenCounter):
    def _text_function(self, model):  # type: ignore[no-untyped-def]
        # As if LiteLLM's text count no longer added up to its message count.
        import llmgw.pipeline.tokens as tokens

        real = tokens.litellm_text_counter
        tokens.litellm_text_counter = lambda m: (lambda text: len(text))  # type: ignore
        try:
            return super()._text_function(model)
        finally:
            tokens.litellm_text_counter = real


def test_a_text_count_that_does_not_add_up_is_not_used() -> None:
    counter = _WrongText()
    litellm = import_litellm()
    # The first turn it meets is empty, which any text count gets right: it is not the test.
    for messages in [[{"role": "user", "content": ""}], *CONVERSATIONS]:
        assert counter.count("openai/gpt-4.1", messages) == litellm.token_counter(
            model="openai/gpt-4.1", messages=messages)
    assert counter._text["openai/gpt-4.1"] is None
