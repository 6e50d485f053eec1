"""Fault plans: what a simulator should do wrong, and what it should answer.

One model for every simulator. A plan is plain data (pydantic), so it can come from code,
a YAML file or a compact CLI string such as ``"429:retry_after=2,times=1"``.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["http_error", "latency", "timeout", "drop", "malformed"]
_KINDS: tuple[str, ...] = ("http_error", "latency", "timeout", "drop", "malformed")


class Fault(BaseModel):
    """One fault rule.

    ``times`` limits how often the rule *fires* (None = always); a rule that is skipped
    (model mismatch, lost probability roll, an earlier rule decided) does not use one up.
    For streams, ``after_chunks`` is where ``drop`` closes the connection and where
    ``timeout`` stalls; for JSON answers both act before any response is sent.
    ``latency`` delays the start of the response (for streams, the first byte).
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    status: int = Field(default=500, ge=100, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    message: str | None = None
    delay_s: float = Field(default=0.0, ge=0)
    jitter_s: float = Field(default=0.0, ge=0)
    after_chunks: int = Field(default=0, ge=0)
    times: int | None = Field(default=None, ge=0)
    probability: float = Field(default=1.0, ge=0, le=1)
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse a CLI fault string.

        ``KIND[:key=value,...]`` where KIND is a fault kind or an HTTP status
        (``"429:retry_after=2,times=1"``, ``"503"``, ``"latency:delay_s=0.2,jitter_s=0.1"``,
        ``"timeout"``, ``"drop:after_chunks=2"``, ``"malformed:model=gpt-x"``).
        """
        head, _, rest = spec.strip().partition(":")
        head = head.strip().lower()
        fields: dict[str, Any] = {}
        if head.isdigit():
            fields["kind"] = "http_error"
            fields["status"] = int(head)
        elif head in _KINDS:
            fields["kind"] = head
        else:
            raise ValueError(
                f"unknown fault kind {head!r} in {spec!r}; use an HTTP status or one of {_KINDS}"
            )
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"expected key=value, got {item!r} in {spec!r}")
            if key == "kind" or key not in cls.model_fields:
                raise ValueError(f"unknown fault option {key!r} in {spec!r}")
            value = value.strip()
            fields[key] = None if value.lower() in ("none", "null") else value
        return cls.model_validate(fields)


class ToolCall(BaseModel):
    """A tool call the simulator makes instead of answering text.

    ``name`` None means the first tool the request offers.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> ToolCall:
        """Parse a CLI tool call: ``NAME=JSON-OBJECT`` (``Bash={"command":"ls"}``) or ``NAME``."""
        name, sep, arguments = spec.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"expected NAME=JSON, got {spec!r}")
        if not sep or not arguments.strip():
            return cls(name=name)
        try:
            parsed = json.loads(arguments)
        except ValueError as exc:
            raise ValueError(f"the arguments of {name!r} are not JSON ({exc}) in {spec!r}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"the arguments of {name!r} must be a JSON object, got {arguments!r}")
        return cls(name=name, arguments=parsed)


class FaultPlan(BaseModel):
    """Faults plus the answer and usage a simulator gives when no fault decides.

    ``tool_call`` answers every request that offers tools with that call. ``tool_loop`` is
    a scripted agent: a request offering one of its tools (the first that matches) gets that
    call, unless the last turn holds tool results; then the answer is text quoting them
    (``"The tool returned: <text>"``), so a real agent's tool loop ends after one round.
    Requests offering none of the tools get plain text.

    Usage: ``cached_tokens`` are prompt tokens read from the cache, ``cache_write_5m_tokens``
    and ``cache_write_1h_tokens`` prompt tokens written to it at each TTL (providers that
    report writes; Anthropic's ``input_tokens`` excludes reads and writes).

    Thinking (Anthropic, when the request asks for it): ``thinking`` is the text of the
    thinking block (default: generated), ``redact_thinking`` sends a ``redacted_thinking``
    block instead. OpenAI's Responses API answers a request with ``reasoning`` with a
    reasoning item whose summary is ``thinking``.

    ``reasoning_tokens``: completion tokens spent reasoning, counted inside the completion
    tokens as OpenAI does (``output_tokens_details.reasoning_tokens``, chat's
    ``completion_tokens_details``); default: the thinking text's count when the request asks
    for it, else 0.
    """

    model_config = ConfigDict(extra="forbid")

    faults: list[Fault] = Field(default_factory=list)
    seed: int = 0
    answer: str | None = None
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    cache_write_5m_tokens: int = Field(default=0, ge=0)
    cache_write_1h_tokens: int = Field(default=0, ge=0)
    tool_call: ToolCall | None = None
    tool_loop: list[ToolCall] = Field(default_factory=list)
    thinking: str | None = None
    redact_thinking: bool = False
    reasoning_tokens: int | None = Field(default=None, ge=0)
    # A wrong key's 401 quotes the key, as OpenAI's does (simulators that model it).
    echo_key: bool = False

    @classmethod
    def parse(cls, specs: str | list[str], **plan: Any) -> FaultPlan:
        """Build a plan from CLI fault strings (one per ``--fault``; ``;`` also separates)."""
        items = [specs] if isinstance(specs, str) else list(specs)
        faults = [Fault.parse(s) for item in items for s in item.split(";") if s.strip()]
        return cls(faults=faults, **plan)

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        """A plan from a YAML (or JSON) file holding this model's fields.

        Faults may be given as CLI strings too (``faults: ["429:times=1"]``), tool-loop
        entries as ``NAME=JSON`` strings (``tool_loop: ['Bash={"command": "ls"}']``).
        """
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of plan fields, got {type(data).__name__}")
        if isinstance(data.get("faults"), list):
            data["faults"] = [Fault.parse(f) if isinstance(f, str) else f for f in data["faults"]]
        if isinstance(data.get("tool_loop"), list):
            data["tool_loop"] = [ToolCall.parse(t) if isinstance(t, str) else t for t in data["tool_loop"]]
        return cls.model_validate(data)

    @classmethod
    def error(
        cls,
        status: int = 500,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        times: int | None = None,
        model: str | None = None,
        **plan: Any,
    ) -> FaultPlan:
        """Answer ``status`` with the provider's error body."""
        fault = Fault(
            kind="http_error",
            status=status,
            retry_after=retry_after,
            message=message,
            times=times,
            model=model,
        )
        return cls(faults=[fault], **plan)

    @classmethod
    def rate_limited(
        cls, retry_after: float | None = 1.0, *, times: int | None = None, **plan: Any
    ) -> FaultPlan:
        """Answer 429 with ``Retry-After``."""
        return cls.error(429, retry_after=retry_after, times=times, **plan)

    @classmethod
    def latency(cls, delay_s: float, *, jitter_s: float = 0.0, **plan: Any) -> FaultPlan:
        """Delay every answer."""
        return cls(faults=[Fault(kind="latency", delay_s=delay_s, jitter_s=jitter_s)], **plan)

    @classmethod
    def timeout(cls, *, times: int | None = None, after_chunks: int = 0, **plan: Any) -> FaultPlan:
        """Never answer (streams: stall after ``after_chunks`` chunks)."""
        return cls(faults=[Fault(kind="timeout", times=times, after_chunks=after_chunks)], **plan)

    @classmethod
    def drop(cls, *, after_chunks: int = 0, times: int | None = None, **plan: Any) -> FaultPlan:
        """Close the connection (streams: after ``after_chunks`` chunks)."""
        return cls(faults=[Fault(kind="drop", after_chunks=after_chunks, times=times)], **plan)

    @classmethod
    def malformed(cls, *, times: int | None = None, **plan: Any) -> FaultPlan:
        """Answer 200 with a body that is not valid JSON."""
        return cls(faults=[Fault(kind="malformed", times=times)], **plan)

    def with_faults(self, *faults: Fault | str) -> Self:
        """A copy of this plan with more faults appended."""
        extra = [Fault.parse(f) if isinstance(f, str) else f for f in faults]
        return self.model_copy(update={"faults": [*self.faults, *extra]})


@dataclass(frozen=True)
class Decision:
    """What the fault plan decided for one request."""

    delay_s: float = 0.0
    fault: Fault | None = None

    @property
    def kind(self) -> str | None:
        return self.fault.kind if self.fault else None


class FaultState:
    """A plan's runtime state: per-rule fire counts and the seeded RNG. Thread-safe."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self._fired = [0] * len(plan.faults)
        self._rng = random.Random(plan.seed)

    def decide(self, model: str | None) -> Decision:
        """Evaluate the plan for one request, in order; latency rules add up."""
        delay = 0.0
        with self._lock:
            for i, fault in enumerate(self.plan.faults):
                if fault.model is not None and fault.model != model:
                    continue
                if fault.times is not None and self._fired[i] >= fault.times:
                    continue
                # Roll only for partial probabilities so adding a certain rule does not
                # shift the random sequence seen by the others.
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                self._fired[i] += 1
                if fault.kind == "latency":
                    delay += fault.delay_s
                    if fault.jitter_s:
                        delay += self._rng.uniform(0.0, fault.jitter_s)
                    continue
                return Decision(delay_s=delay, fault=fault)
        return Decision(delay_s=delay)

    @property
    def fired(self) -> list[int]:
        """How often each rule has fired so far."""
        with self._lock:
            return list(self._fired)
