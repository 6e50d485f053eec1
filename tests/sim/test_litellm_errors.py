"""Every provider simulator's errors through LiteLLM's real provider code, from one table: the
exception each fault becomes, and whether a 429's Retry-After reaches the caller.

A row of PROVIDERS is a provider as LiteLLM calls it (model string, simulator, key) with its
quirks: the exceptions its faults map to (LiteLLM 1.106.2 maps the same fault differently per
provider), and whether its 429 keeps the provider's headers. The wire formats themselves stay
in each simulator's own test file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from llmgw.sim import AnthropicSim, FaultPlan, OpenAISim, SimServer
from llmgw.sim.cohere import CohereSim
from llmgw.sim.gemini import GeminiSim
from llmgw.sim.ollama import OllamaSim
from tests.sim.conftest import fresh

SYSTEM = "Be brief."
QUESTION = "What is the capital of France?"
CHAT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
# Google's real 503 text
OVERLOADED = "The model is overloaded. Please try again later."


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
    # How many generation requests the simulator saw (Ollama's LiteLLM also asks /api/show).
    generations: Callable[[Any], int] = lambda sim: len(sim.requests)
    # Wait for the simulator's record after a fault, so a request the client gave up on is
    # not recorded in the next test.
    settle_after_fault: bool = False


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


STREAM = (("stream", True),)

PROVIDERS = [
    Provider("openai", lambda: OpenAISim(api_key="sk-sim-test"), openai_call, (
        Fault("401", FaultPlan(), "AuthenticationError", (("api_key", "sk-wrong"),)),
        Fault("500", FaultPlan.error(500), "InternalServerError"),
        Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
        Fault("malformed", FaultPlan.malformed(), "InternalServerError"),
        Fault("timeout", FaultPlan.timeout(), "Timeout", (("timeout", 0.5),)),
        Fault("drop", FaultPlan.drop(), "InternalServerError"),
        # LiteLLM wraps mid-stream failures in MidStreamFallbackError, a ServiceUnavailableError.
        Fault("drop-stream", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError", STREAM),
        Fault("malformed-stream", FaultPlan.malformed(), "ServiceUnavailableError", STREAM),
    ), retry_after_kept=True),
    Provider("anthropic", lambda: AnthropicSim(api_key="sk-ant-sim-test"), anthropic_call, (
        Fault("401", FaultPlan(), "AuthenticationError", (("api_key", "sk-ant-wrong"),)),
        Fault("500", FaultPlan.error(500), "InternalServerError"),
        Fault("503", FaultPlan.error(503), "ServiceUnavailableError"),
        Fault("529", FaultPlan.error(529), "InternalServerError"),
        Fault("malformed", FaultPlan.malformed(), "APIConnectionError"),
        Fault("timeout", FaultPlan.timeout(), "Timeout", (("timeout", 0.5),)),
        Fault("drop", FaultPlan.drop(), "InternalServerError"),
        Fault("drop-stream", FaultPlan.drop(after_chunks=3), "ServiceUnavailableError", STREAM),
    ), retry_after_kept=True),
    Provider("gemini", lambda: GeminiSim(api_key="AIza-sim-test"), gemini_call, (
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
    ), retry_after_kept=True, settle_after_fault=True),
    Provider("cohere", lambda: CohereSim(api_key="co-sim-test"), cohere_call, (
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
    ), retry_after_kept=False, settle_after_fault=True),
    Provider("ollama", lambda: OllamaSim(), ollama_call, (
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
    ), retry_after_kept=True, generations=ollama_generations, settle_after_fault=True),
]
BY_NAME = {p.name: p for p in PROVIDERS}
FAULTS = [pytest.param(p.name, f, id=f"{p.name}-{f.id}") for p in PROVIDERS for f in p.faults]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SimServer]]:
    """One simulator per provider for the module, started when a test first needs it."""
    with ExitStack() as stack:

        class Lazy(dict[str, SimServer]):
            def __missing__(self, name: str) -> SimServer:
                server = self[name] = stack.enter_context(BY_NAME[name].sim())
                return server

        yield Lazy()


@pytest.mark.parametrize(("provider", "fault"), FAULTS)
async def test_litellm_maps_faults_to_exceptions(servers, litellm, provider: str,
                                                 fault: Fault) -> None:
    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = fault.plan
    with pytest.raises(getattr(litellm, fault.error)):
        resp = await litellm.acompletion(**p.call(sim, **fault.call))
        if fault.call.get("stream"):
            _ = [chunk async for chunk in resp]
    if p.settle_after_fault:  # the server has let go before the next test resets it
        await asyncio.to_thread(sim.wait_for_responses, 1)


@pytest.mark.parametrize("provider", [p.name for p in PROVIDERS])
async def test_litellm_rate_limit_and_its_retry_after(servers, litellm, provider: str) -> None:
    from litellm.utils import _get_retry_after_from_exception_header

    p = BY_NAME[provider]
    sim = fresh(servers[provider])
    sim.plan = FaultPlan.rate_limited(retry_after=2)
    with pytest.raises(litellm.RateLimitError) as caught:
        await litellm.acompletion(**p.call(sim))
    headers = caught.value.litellm_response_headers
    if p.retry_after_kept:
        # LiteLLM's exception.response is a synthetic httpx.Response without headers; the
        # provider's headers are on litellm_response_headers.
        assert headers["retry-after"] == "2"
        assert _get_retry_after_from_exception_header(headers) == 2
    else:
        # LiteLLM 1.106.2 quirk, pinned: CohereError drops the response headers, so a 429
        # reaches callers without Retry-After anywhere on the exception.
        assert headers is None
        assert "retry-after" not in caught.value.response.headers
    assert p.generations(sim) == 1  # no hidden retries
