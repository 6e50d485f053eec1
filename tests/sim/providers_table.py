"""One table of the provider simulators as LiteLLM calls them, with each provider's quirks as
columns. The table-driven modules (test_litellm_errors, test_litellm_completions) read it; the
wire formats themselves stay in each simulator's own test file.

A row is a provider as LiteLLM calls it (model string, simulator, key) and what LiteLLM 1.106.2
does with it: the request it sends, the usage it reads back, the exceptions its faults map to
(the same fault maps differently per provider), how its tool calls come back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmgw.sim import AnthropicSim, FaultPlan, OpenAISim, SimServer
from llmgw.sim.cohere import CohereSim
from llmgw.sim.gemini import GeminiSim
from llmgw.sim.ollama import OllamaSim

SYSTEM = "Be brief."
QUESTION = "What is the capital of France?"
CHAT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
ANSWER = f"Simulated answer to: {QUESTION}"
# Google's real 503 text
OVERLOADED = "The model is overloaded. Please try again later."
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = [{"type": "function", "function": WEATHER}]  # what callers hand LiteLLM
TOOL_RESULT = "sunny, 20C"


@dataclass(frozen=True)
class Fault:
    id: str
    plan: FaultPlan
    error: str  # the litellm exception class it must raise
    extra: tuple[tuple[str, Any], ...] = ()  # call arguments (stream, a wrong key, ...)

    @property
    def call(self) -> dict[str, Any]:
        return dict(self.extra)


@dataclass(frozen=True)
class Provider:
    name: str
    sim: Callable[[], SimServer]
    call: Callable[..., dict[str, Any]]  # LiteLLM's acompletion arguments for the simulator
    faults: tuple[Fault, ...]
    retry_after_kept: bool  # a 429's Retry-After reaches the exception
    # -- a completion: what LiteLLM sends and reads back --
    model: str  # resp.model as LiteLLM reports it
    path: str  # the generation request's path (a JSON answer)
    headers: dict[str, str]  # the key as the provider takes it (and other required headers)
    # The whole body LiteLLM sends for CHAT with max_tokens=50.
    sent: dict[str, Any]
    # (prompt, completion) as the record's wire usage carries them: LiteLLM must read those.
    wire_counts: Callable[[dict[str, Any]], tuple[int, int]]
    reports_cached: bool  # the wire carries cache reads and LiteLLM reports them
    # -- a stream --
    stream_path: str
    stream_sent: dict[str, Any]  # fields of the stream request's body
    # Chunks (SSE events, NDJSON lines) the simulator sends for an answer of n words.
    stream_chunks: Callable[[int], int]
    stream_call: dict[str, Any] = field(default_factory=dict)  # extra arguments for a stream
    streams_on_the_wire: bool = True  # False: LiteLLM asks for JSON and streams it itself
    # -- tool calls --
    sent_tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)  # as on the wire
    tool_finish_reason: str = "tool_calls"
    keeps_tool_call_id: bool = True  # the provider's call id reaches the caller
    # The body's list of turns, and the assistant's call and the tool's result as sent in it
    # (after the system prompt and the question), given the call's id.
    turns_key: str = "messages"
    sent_tool_turns: Callable[[str], list[dict[str, Any]]] = lambda call_id: []
    # How many generation requests the simulator saw (Ollama's LiteLLM also asks /api/show).
    generations: Callable[[Any], int] = lambda sim: len(sim.requests)
    # Wait for the simulator's record after a fault, so a request the client gave up on is
    # not recorded in the next test.
    settle_after_fault: bool = False

    def bodies(self, sim: Any) -> list[dict[str, Any]]:
        """Bodies of the generation requests (LiteLLM's Ollama provider also POSTs /api/show,
        sometimes from a background thread after the call)."""
        return [r.json for r in sim.requests if r.path in (self.path, self.stream_path)]


def _retries_off(extra: dict[str, Any], **call: Any) -> dict[str, Any]:
    return {**call, "num_retries": 0, "max_retries": 0, **extra}


def openai_call(sim: OpenAISim, **extra: Any) -> dict[str, Any]:
    return _retries_off(extra, model="openai/sim-gpt", api_base=sim.base_url + "/v1",
                        api_key="sk-sim-test", messages=CHAT)


def anthropic_call(sim: AnthropicSim, **extra: Any) -> dict[str, Any]:
    return _retries_off(extra, model="anthropic/claude-sim", api_base=sim.base_url,
                        api_key="sk-ant-sim-test", messages=CHAT)


def gemini_call(sim: GeminiSim, **extra: Any) -> dict[str, Any]:
    # A model LiteLLM knows (for unknown names it folds the system prompt into the user turn).
    return _retries_off(extra, model="gemini/gemini-2.5-flash", api_base=sim.base_url + "/v1beta",
                        api_key="AIza-sim-test", messages=CHAT)


def cohere_call(sim: CohereSim, v1: bool = False, **extra: Any) -> dict[str, Any]:
    return _retries_off(extra, model="cohere/v1/command-r-sim" if v1 else "cohere/command-r-sim",
                        api_base=sim.base_url + ("/v1/chat" if v1 else "/v2/chat"),  # whole URL
                        api_key="co-sim-test", messages=CHAT)


def ollama_call(sim: OllamaSim, **extra: Any) -> dict[str, Any]:
    return {"model": "ollama_chat/llama3.2", "api_base": sim.base_url, "messages": CHAT,
            "num_retries": 0, **extra}


def ollama_generations(sim: OllamaSim) -> int:
    return len([r for r in sim.requests if r.path == "/api/chat"])


def _openai_call_turn(call_id: str, **extra: Any) -> dict[str, Any]:
    function = {"arguments": '{"city": "Oslo"}', "name": "get_weather"}
    return {"role": "assistant",
            "tool_calls": [{**extra, "function": function, "id": call_id, "type": "function"}]}


def openai_tool_turns(call_id: str) -> list[dict[str, Any]]:
    # The caller's model_dump of LiteLLM's message is sent on as it is, extra fields too.
    return [{**_openai_call_turn(call_id), "provider_specific_fields": {"refusal": None},
             "annotations": []},
            {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}]


def anthropic_tool_turns(call_id: str) -> list[dict[str, Any]]:
    use = {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Oslo"}}
    result = {"type": "tool_result", "tool_use_id": call_id, "content": TOOL_RESULT}
    return [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]


def gemini_tool_turns(call_id: str) -> list[dict[str, Any]]:
    # Gemini matches a result to its call by name: the id is not sent back.
    call = {"function_call": {"name": "get_weather", "args": {"city": "Oslo"}}}
    result = {"function_response": {"name": "get_weather", "response": {"content": TOOL_RESULT}}}
    return [{"role": "model", "parts": [call]}, {"role": "user", "parts": [result]}]


def cohere_tool_turns(call_id: str) -> list[dict[str, Any]]:
    return [_openai_call_turn(call_id, index=0),
            {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}]


def ollama_tool_turns(call_id: str) -> list[dict[str, Any]]:
    # Ollama's calls have no id (LiteLLM made one up); the result still names it.
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    return [{"role": "assistant", "content": "", "images": [], "tool_calls": [call]},
            {"role": "tool", "content": TOOL_RESULT, "images": [], "tool_call_id": call_id}]


STREAM = (("stream", True),)
ANTHROPIC_USER = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
               "system_instruction": {"parts": [{"text": SYSTEM}]}}

PROVIDERS = [
    Provider(
        "openai", lambda: OpenAISim(api_key="sk-sim-test"), openai_call, (
            Fault("401", FaultPlan(), "AuthenticationError", (("api_key", "sk-wrong"),)),
            Fault("500", FaultPlan.error(500), "InternalServerError"),
            Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
            Fault("malformed", FaultPlan.malformed(), "InternalServerError"),
            Fault("timeout", FaultPlan.timeout(), "Timeout", (("timeout", 0.5),)),
            Fault("drop", FaultPlan.drop(), "InternalServerError"),
            # LiteLLM wraps mid-stream failures in MidStreamFallbackError, a ServiceUnavailableError.
            Fault("drop-stream", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError", STREAM),
            Fault("malformed-stream", FaultPlan.malformed(), "ServiceUnavailableError", STREAM),
        ), retry_after_kept=True,
        model="sim-gpt", path="/v1/chat/completions",
        headers={"authorization": "Bearer sk-sim-test"},
        sent={"messages": CHAT, "model": "sim-gpt", "max_tokens": 50},
        wire_counts=lambda usage: (usage["prompt_tokens"], usage["completion_tokens"]),
        reports_cached=True,
        stream_path="/v1/chat/completions",
        stream_sent={"stream": True, "stream_options": {"include_usage": True}},
        # role, one delta per word, finish, usage, [DONE]
        stream_chunks=lambda words: words + 4,
        sent_tool_turns=openai_tool_turns,
    ),
    Provider(
        "anthropic", lambda: AnthropicSim(api_key="sk-ant-sim-test"), anthropic_call, (
            Fault("401", FaultPlan(), "AuthenticationError", (("api_key", "sk-ant-wrong"),)),
            Fault("500", FaultPlan.error(500), "InternalServerError"),
            Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
            Fault("529", FaultPlan.error(529), "InternalServerError"),
            Fault("malformed", FaultPlan.malformed(), "APIConnectionError"),
            Fault("timeout", FaultPlan.timeout(), "Timeout", (("timeout", 0.5),)),
            Fault("drop", FaultPlan.drop(), "InternalServerError"),
            Fault("drop-stream", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError", STREAM),
        ), retry_after_kept=True,
        model="claude-sim", path="/v1/messages",
        headers={"x-api-key": "sk-ant-sim-test", "anthropic-version": "2023-06-01"},
        # LiteLLM moves system messages to "system".
        sent={"model": "claude-sim", "messages": ANTHROPIC_USER, "max_tokens": 50,
              "system": [{"type": "text", "text": SYSTEM}]},
        # LiteLLM's prompt_tokens = input + cache reads, the sim's provider-neutral count.
        wire_counts=lambda usage: (usage["input_tokens"] + usage["cache_read_input_tokens"],
                                   usage["output_tokens"]),
        reports_cached=True,
        stream_path="/v1/messages",
        # message_start says output_tokens=1 and message_delta the total: LiteLLM must not add them.
        stream_sent={"stream": True, "max_tokens": 4096},  # LiteLLM's default max_tokens
        # message_start, content_block_start, ping, a delta per word, block stop, delta, stop
        stream_chunks=lambda words: words + 6,
        sent_tools=[{"name": "get_weather", "input_schema": WEATHER["parameters"], "type": "custom",
                     "description": WEATHER["description"]}],
        sent_tool_turns=anthropic_tool_turns,
    ),
    Provider(
        "gemini", lambda: GeminiSim(api_key="AIza-sim-test"), gemini_call, (
            # Google answers a wrong key 400 API_KEY_INVALID; LiteLLM maps it by its text.
            Fault("wrong-key", FaultPlan(), "AuthenticationError", (("api_key", "AIza-wrong"),)),
            Fault("401", FaultPlan.error(401), "AuthenticationError"),
            # Quirk: any error text containing "403" maps to BadRequestError, not PermissionDenied.
            Fault("403", FaultPlan.error(403), "BadRequestError"),
            Fault("500", FaultPlan.error(500), "InternalServerError"),
            Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
            # Quirk: Google's real 503 text maps to InternalServerError.
            Fault("503-overloaded", FaultPlan.error(503, message=OVERLOADED), "InternalServerError"),
            # Quirk: an unparsable 200 body becomes a 422 BadRequestError.
            Fault("malformed", FaultPlan.malformed(), "BadRequestError"),
            Fault("drop", FaultPlan.drop(), "APIConnectionError"),
            Fault("drop-stream-start", FaultPlan.drop(), "ServiceUnavailableError", STREAM),
            Fault("drop-stream-mid", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError",
                  STREAM),
        ), retry_after_kept=True, settle_after_fault=True,
        model="gemini-2.5-flash",  # LiteLLM reports modelVersion
        path="/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": "AIza-sim-test"},  # never ?key= nor in the body
        sent={**GEMINI_BODY, "generationConfig": {"max_output_tokens": 50}},
        wire_counts=lambda usage: (usage["promptTokenCount"], usage["candidatesTokenCount"]),
        reports_cached=True,
        stream_path="/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        # Every chunk carries usageMetadata; LiteLLM must keep the last, not add them up.
        stream_sent=GEMINI_BODY,
        stream_chunks=lambda words: words,  # one per word, no [DONE]
        sent_tools=[{"function_declarations": [WEATHER]}],
        # Gemini says STOP; LiteLLM infers tool_calls. Gemini's functionCall.id is kept.
        turns_key="contents", sent_tool_turns=gemini_tool_turns,
    ),
    Provider(
        "cohere", lambda: CohereSim(api_key="co-sim-test"), cohere_call, (
            Fault("wrong-key", FaultPlan(), "AuthenticationError", (("api_key", "co-wrong"),)),
            Fault("401", FaultPlan.error(401), "AuthenticationError"),
            Fault("403", FaultPlan.error(403), "PermissionDeniedError"),
            Fault("500", FaultPlan.error(500), "InternalServerError"),
            Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
            Fault("malformed", FaultPlan.malformed(), "APIConnectionError"),
            Fault("drop", FaultPlan.drop(), "InternalServerError"),
            Fault("drop-v1-stream", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError",
                  (("stream", True), ("v1", True))),
            Fault("malformed-v1-stream", FaultPlan.malformed(), "ServiceUnavailableError",
                  (("stream", True), ("v1", True))),
        ), retry_after_kept=False, settle_after_fault=True,
        model="command-r-sim", path="/v2/chat",
        headers={"authorization": "Bearer co-sim-test"},
        sent={"model": "command-r-sim", "messages": CHAT, "max_tokens": 50},
        wire_counts=lambda usage: (usage["tokens"]["input_tokens"], usage["tokens"]["output_tokens"]),
        reports_cached=False,  # Cohere has no cache-read count
        # LiteLLM cannot parse a v2 stream (test_cohere_sim pins that); the workaround:
        # fake_stream=True makes LiteLLM ask for JSON and stream it itself.
        stream_call={"fake_stream": True}, streams_on_the_wire=False,
        stream_path="/v2/chat", stream_sent={},
        stream_chunks=lambda words: 0,  # a JSON answer: nothing streamed on the wire
        # Quirk, pinned: LiteLLM ignores Cohere's finish_reason TOOL_CALL and says "stop".
        tool_finish_reason="stop",
        sent_tool_turns=cohere_tool_turns,  # v2 takes OpenAI-shaped tools as they are
    ),
    Provider(
        "ollama", lambda: OllamaSim(), ollama_call, (
            Fault("400", FaultPlan.error(400), "BadRequestError"),
            Fault("401", FaultPlan.error(401), "AuthenticationError"),
            Fault("404", FaultPlan.error(404), "NotFoundError"),
            Fault("500", FaultPlan.error(500), "InternalServerError"),
            Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
            # Unlike the openai provider, ollama_chat maps a broken body and a dropped
            # connection to APIConnectionError.
            Fault("malformed", FaultPlan.malformed(), "APIConnectionError"),
            Fault("drop", FaultPlan.drop(), "APIConnectionError"),
            Fault("timeout", FaultPlan.timeout(), "Timeout", (("timeout", 0.5),)),
        ), retry_after_kept=True, generations=ollama_generations, settle_after_fault=True,
        model="ollama_chat/llama3.2", path="/api/chat",
        headers={},  # Ollama has no key
        sent={"model": "llama3.2", "stream": False, "options": {"num_predict": 50},
              "messages": [{**m, "images": []} for m in CHAT]},
        wire_counts=lambda usage: (usage["prompt_eval_count"], usage["eval_count"]),
        reports_cached=False,  # Ollama has no cache-read count
        stream_path="/api/chat", stream_sent={"stream": True},
        stream_chunks=lambda words: words + 1,  # a line per word, then done
        keeps_tool_call_id=False,  # Ollama's calls have no id; LiteLLM makes one up
        sent_tool_turns=ollama_tool_turns,
    ),
]
BY_NAME = {p.name: p for p in PROVIDERS}
NAMES = [p.name for p in PROVIDERS]
