"""The providers llmgw can simulate, and a ready `model_list.yaml` for running simulators.

One table: provider name -> simulator class (imported lazily by dotted path, so a provider
whose module is missing does not break the others), LiteLLM model, how the deployment's
``api_base`` derives from the simulator's ``base_url``, and whether LiteLLM needs a key.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from llmgw.sim.server import SimServer

# What the snippet puts in api_key when the simulators accept any key: LiteLLM refuses to
# call these providers without one.
PLACEHOLDER_KEY = "sk-llmgw-sim"


class SimUnavailable(LookupError):
    """A provider's simulator module or class is not there (yet)."""


@dataclass(frozen=True)
class SimProvider:
    """One simulatable provider."""

    name: str
    class_path: str  # "module:Class"
    model: str  # the LiteLLM model of the example deployment, prefix included
    api_base_suffix: str  # appended to the simulator's base_url
    needs_api_key: bool
    input_cost_per_token: Decimal = Decimal(0)
    output_cost_per_token: Decimal = Decimal(0)

    @property
    def prefix(self) -> str:
        """LiteLLM's provider prefix (``openai``, ``ollama_chat``, ...)."""
        return self.model.split("/", 1)[0]

    @property
    def local(self) -> bool:
        return not self.needs_api_key

    @property
    def group(self) -> str:
        """The model group the snippet gives this provider."""
        return f"sim-{self.name}"

    def api_base(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.api_base_suffix

    def load(self) -> type[SimServer]:
        """The simulator class; `SimUnavailable` if its module or class is missing."""
        module_name, _, class_name = self.class_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module exists but something it needs does not
                raise
            raise SimUnavailable(f"simulator for {self.name!r} is not available "
                                 f"(no module {module_name})") from None
        cls = getattr(module, class_name, None)
        if cls is None:
            raise SimUnavailable(f"simulator for {self.name!r} is not available "
                                 f"({module_name} has no {class_name})")
        return cls

    def available(self) -> bool:
        try:
            self.load()
        except SimUnavailable:
            return False
        return True

    def deployment(self, base_url: str, api_key: str | None = None) -> dict[str, Any]:
        """A `model_list` entry pointing at a simulator running at ``base_url``."""
        params: dict[str, Any] = {"model": self.model, "api_base": self.api_base(base_url)}
        if self.needs_api_key or api_key:
            params["api_key"] = api_key or PLACEHOLDER_KEY
        return {
            "model_name": self.group,
            "litellm_params": params,
            "model_info": {"id": self.group,
                           "input_cost_per_token": float(self.input_cost_per_token),
                           "output_cost_per_token": float(self.output_cost_per_token)},
        }


def _p(name: str, class_path: str, model: str, suffix: str, needs_key: bool,
       prices: tuple[str, str] = ("0", "0")) -> SimProvider:
    return SimProvider(name, class_path, model, suffix, needs_key, Decimal(prices[0]),
                       Decimal(prices[1]))


# Cloud prices are round, plausible figures so the ledger shows non-zero costs; local is 0.
# api_base suffixes were checked against LiteLLM 1.106.2: OpenAI posts to
# {api_base}/chat/completions, Anthropic to {api_base}/v1/messages, Gemini to
# {api_base}/models/{model}:generateContent, Cohere (v2, for both the cohere/ and cohere_chat/
# prefixes) to api_base *verbatim*, Ollama to {api_base}/api/chat.
PROVIDERS: dict[str, SimProvider] = {p.name: p for p in (
    _p("openai", "llmgw.sim.openai:OpenAISim", "openai/sim-gpt", "/v1", True,
       ("0.000001", "0.000002")),
    _p("anthropic", "llmgw.sim.anthropic:AnthropicSim", "anthropic/claude-sim", "", True,
       ("0.000003", "0.000015")),
    _p("gemini", "llmgw.sim.gemini:GeminiSim", "gemini/gemini-sim", "/v1beta", True,
       ("0.0000003", "0.0000025")),
    _p("cohere", "llmgw.sim.cohere:CohereSim", "cohere/command-sim", "/v2/chat", True,
       ("0.0000025", "0.00001")),
    _p("ollama", "llmgw.sim.ollama:OllamaSim", "ollama_chat/llama-sim", "", False),
    _p("ruvllm", "llmgw.sim.ruvllm:RuvLLMSim", "ruvector/auto", "", False),
)}


def get(name: str) -> SimProvider:
    """The provider called ``name``; `KeyError` naming the known ones otherwise."""
    try:
        return PROVIDERS[name.strip().lower()]
    except KeyError:
        raise KeyError(f"unknown simulator {name!r}; known: {', '.join(PROVIDERS)}") from None


def available() -> list[SimProvider]:
    """The providers whose simulator module is present, in table order."""
    return [p for p in PROVIDERS.values() if p.available()]


def snippet_dict(running: Mapping[str, str], *, api_key: str | None = None) -> dict[str, Any]:
    """The config for simulators running at ``running`` (name -> base_url), as data."""
    if not running:
        raise ValueError("no simulators: nothing to configure")
    providers = [get(name) for name in running]
    return {
        "model_list": [p.deployment(running[p.name], api_key) for p in providers],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": providers[0].group},
    }


def snippet(running: Mapping[str, str], *, api_key: str | None = None) -> str:
    """A ready `model_list.yaml` for simulators running at ``running`` (name -> base_url).

    One group per provider (``sim-<name>``) with a readable id and prices (0 for local
    providers). ``api_key`` is the key the simulators were started with, if any.
    """
    body = yaml.safe_dump(snippet_dict(running, api_key=api_key), sort_keys=False,
                          default_flow_style=False, width=100)
    names = ", ".join(running)
    return f"# model_list.yaml for llmgw's simulators ({names}); generated by `llmgw sim`.\n{body}"
