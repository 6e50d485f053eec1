"""Provider simulators: loopback servers speaking each provider's real wire protocol.

Start one, point a client's base URL at ``sim.base_url`` and steer it with a `FaultPlan`::

    with OpenAISim(FaultPlan.rate_limited(retry_after=2, times=1)) as sim:
        ...  # api_base = sim.base_url + "/v1"
"""

from llmgw.sim.anthropic import AnthropicSim
from llmgw.sim.faults import Fault, FaultPlan, ToolCall
from llmgw.sim.ollama import OllamaSim
from llmgw.sim.openai import OpenAISim
from llmgw.sim.ruvllm import RuvLLMSim
from llmgw.sim.server import SimServer
from llmgw.sim.wire import RecordedRequest, RecordedResponse

__all__ = [
    "AnthropicSim",
    "Fault",
    "FaultPlan",
    "OllamaSim",
    "OpenAISim",
    "RecordedRequest",
    "RecordedResponse",
    "RuvLLMSim",
    "SimServer",
    "ToolCall",
]
