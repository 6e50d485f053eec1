"""OpenAI chat completions: `Router.acompletion`, the gateway's first dialect."""

from __future__ import annotations

import copy
from typing import Any

from llmgw.dialects.base import Call, Served, caching_asked
from llmgw.pipeline.completions import StreamAccumulator, completion_of, replay, stream_completion
from llmgw.redact import Redactor
from llmgw.routing.constraints import CONSTRAINT_PARAMS
from llmgw.types import AttemptStatus, Completion, CompletionRequest, StreamEvent


def chat_call(request: CompletionRequest) -> Call:
    """A validated `complete()` / `stream()` call as the pipeline carries it."""
    params = dict(request.params)
    constraints = {k: params.pop(k) for k in CONSTRAINT_PARAMS if k in params}
    return Call(agent_id=request.agent_id, project_id=request.project_id,
                agent_type=request.agent_type, model_group=request.model_group,
                metadata=request.metadata, message_dicts=request.message_dicts, params=params,
                constraints=constraints,
                caching=caching_asked(request.message_dicts, params.get("tools")))


class ChatDialect:
    name = "chat"

    async def send(self, router: Any, group: str, call: Call, params: dict[str, Any],
                   metadata: dict[str, Any], *, stream: bool) -> Any:
        messages = provider_copy(call.message_dicts)
        params = {**call.params, **params}
        if stream:
            # Usage in streams from every base, not only OpenAI's own.
            return await router.acompletion(model=group, messages=messages, stream=True,
                                            stream_options={"include_usage": True},
                                            metadata=metadata, **params)
        return await router.acompletion(model=group, messages=messages, metadata=metadata,
                                        **params)

    def answer(self, response: Any, served: Served) -> Completion:
        return completion_of(response, served.trace, served.route, served.ctx.request_id,
                             served.started, served.config)

    def accumulator(self, call: Call, request_id: str) -> ChatStream:
        return ChatStream(call, request_id)

    def replay(self, completion: Completion) -> list[StreamEvent]:
        return list(replay(completion))


class ChatStream:
    """Chat completion chunks as content and tool-call deltas."""

    def __init__(self, call: Call, request_id: str) -> None:
        self.call = call
        self.acc = StreamAccumulator(request_id)

    @property
    def empty(self) -> bool:
        return self.acc.empty

    def add(self, chunk: Any) -> list[StreamEvent]:
        return list(self.acc.add(chunk))

    def completion(self, response: Any, served: Served, redactor: Redactor, *,
                   status: AttemptStatus, error: BaseException | None) -> Completion:
        return stream_completion(response, self.acc, served.trace, served.route, served.ctx,
                                 self.call.message_dicts, served.started, served.config,
                                 redactor, status=status, error=error)


def provider_copy(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages for LiteLLM, a copy of their own (providers may change what they get):
    a message of plain strings as a new dict, anything nested copied whole."""
    return [dict(m) if all(type(v) is str for v in m.values()) else copy.deepcopy(m)
            for m in messages]


CHAT = ChatDialect()
