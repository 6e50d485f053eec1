"""Deployment health: cheap live probes, LiteLLM's cooldown state, limits and current use,
and in-process stats.

`probe` asks every deployment of a config, concurrently, through the provider's own cheap
route (a models list, Ollama's tags, ruvLLM's /health), and falls back to a 1-token
completion through LiteLLM only where no such route exists. LiteLLM is imported by
`probe` itself (before its clocks start), so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from llmgw.config.models import ENV_PREFIX, Config, Deployment
from llmgw.redact import Redactor

_ANTHROPIC_VERSION = "2023-06-01"
_ERROR_LIMIT = 300


class DeploymentUse(BaseModel):
    """A deployment's limits and its use right now (`current_use`)."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None
    requests_this_minute: int = 0
    tokens_this_minute: int = 0
    in_flight: int = 0


class DeploymentHealth(DeploymentUse):
    """One deployment's probe result. ``error`` is scrubbed of credentials."""

    deployment_id: str
    group: str
    provider: str
    model: str
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None
    cooling_down: bool = False
    cooldown_status: int | None = None  # the HTTP status LiteLLM cooled it down for
    cooldown_remaining_s: float | None = None
    checked: str  # what was asked: "GET <url>" or "completion"
    # and, from DeploymentUse, its limits (max_parallel_requests as LiteLLM derives it) and use


class _Unresolved(Exception):
    """A deployment setting names an environment variable that is not set."""


@dataclass(frozen=True)
class _Route:
    url: str
    headers: dict[str, str]


# -- per-provider cheap routes ---------------------------------------------------------------
# (default api_base, env vars LiteLLM reads the key from, route builder). The builder gets
# the api_base without a trailing slash, and the key (or None).

def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _openai(base: str, key: str | None) -> _Route:
    return _Route(f"{base}/models", _bearer(key))


def _anthropic(base: str, key: str | None) -> _Route:
    root = base.removesuffix("/v1/messages").removesuffix("/v1")
    headers = {"anthropic-version": _ANTHROPIC_VERSION, **({"x-api-key": key} if key else {})}
    return _Route(f"{root}/v1/models", headers)


def _gemini(base: str, key: str | None) -> _Route:
    # The header, not ?key=: a URL ends up in error messages and logs.
    return _Route(f"{base}/models", {"x-goog-api-key": key} if key else {})


def _cohere(base: str, key: str | None) -> _Route:
    # LiteLLM's Cohere api_base is the whole chat URL (.../v2/chat); models live at /v1/models.
    root = base.removesuffix("/chat").removesuffix("/v2").removesuffix("/v1")
    return _Route(f"{root}/v1/models", _bearer(key))


def _ollama(base: str, key: str | None) -> _Route:
    return _Route(f"{base}/api/tags", _bearer(key))


def _ruvllm(base: str, key: str | None) -> _Route:
    return _Route(f"{base}/health", _bearer(key))


_ROUTES: dict[str, tuple[str, tuple[str, ...], Callable[[str, str | None], _Route]]] = {
    "openai": ("https://api.openai.com/v1", ("OPENAI_API_KEY",), _openai),
    "openrouter": ("https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), _openai),
    "anthropic": ("https://api.anthropic.com", ("ANTHROPIC_API_KEY",), _anthropic),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta",
               ("GEMINI_API_KEY", "GOOGLE_API_KEY"), _gemini),
    "cohere": ("https://api.cohere.com/v2/chat", ("COHERE_API_KEY", "CO_API_KEY"), _cohere),
    "cohere_chat": ("https://api.cohere.com/v2/chat", ("COHERE_API_KEY", "CO_API_KEY"), _cohere),
    "ollama": ("http://localhost:11434", (), _ollama),
    "ollama_chat": ("http://localhost:11434", (), _ollama),
    "ruvector": ("http://127.0.0.1:3000", (), _ruvllm),
}


# -- probing ---------------------------------------------------------------------------------

async def probe(config: Config, router: Any = None, *, timeout: float = 5.0,
                redactor: Redactor | None = None, gate: Any = None) -> list[DeploymentHealth]:
    """Probe every deployment of ``config`` concurrently, in config order.

    ``router`` is the gateway's `litellm.Router`, asked which deployments it is cooling
    down and for how long (None: report none), and with ``gate`` (`llmgw.routing.capacity`; default:
    the one built with the router) what each uses now. Each probe gets ``timeout`` seconds.
    """
    from llmgw._litellm import import_litellm

    # Before any clock starts: a first import takes seconds and blocks the event loop, which
    # would count against whichever probes are in flight (a 404 falls back to LiteLLM).
    import_litellm()
    redactor = redactor or Redactor(config.secret_values())
    if gate is None and router is not None:
        from llmgw.routing.recorder import router_services

        services = router_services(router)
        gate = services.gate if services is not None else None
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        cooling, use, results = await asyncio.gather(
            cooldowns(router), current_use(config, router, gate),
            asyncio.gather(*(_probe_one(d, client, timeout, redactor) for d in config.model_list)))
    out = []
    for r in results:
        entry = cooling.get(r.deployment_id)
        out.append(r.model_copy(update={
            "cooling_down": entry is not None,
            "cooldown_status": entry.status if entry else None,
            "cooldown_remaining_s": round(entry.remaining_s, 1) if entry else None,
            **use[r.deployment_id].model_dump()}))
    return out


async def cooldowns(router: Any) -> dict[str, Any]:
    """LiteLLM's cooldown entries (status, remaining seconds) of the deployments it cools."""
    if router is None:
        return {}
    from llmgw._litellm import cooldown_statuses

    return await cooldown_statuses(router, list(router.get_model_ids()))


async def current_use(config: Config, router: Any = None, gate: Any = None
                      ) -> dict[str, DeploymentUse]:
    """Each deployment's limits and use this minute. Requests and tokens: LiteLLM's router
    cache keys (`global_router:<id>:<model>:rpm|tpm:<HH-MM>`, kept for deployments with
    rpm/tpm, shared through Redis) or llmgw's capacity gate (every deployment with a limit,
    exact across processes), whichever counted more; in flight: the gate's leases, else
    LiteLLM's per-process max_parallel_requests slot."""
    from llmgw.routing.capacity import limits_of

    default_par = config.router_settings.default_max_parallel_requests
    limits = {d.id: limits_of(d.to_litellm()["litellm_params"], default_par)
              for d in config.model_list}
    gated = await gate.usage(list(gate.limits)) if gate is not None else {}
    counted = await _litellm_counts(config, router)
    out = {}
    for d in config.model_list:
        lim, ours = limits[d.id], gated.get(d.id)
        reqs, toks = counted.get(d.id, (0, 0))
        out[d.id] = DeploymentUse(
            rpm=lim.rpm, tpm=lim.tpm, max_parallel_requests=lim.max_parallel,
            requests_this_minute=max(reqs, ours.requests if ours else 0),
            tokens_this_minute=max(toks, ours.tokens if ours else 0),
            in_flight=ours.in_flight if ours else _litellm_in_flight(router, d.id))
    return out


async def _litellm_counts(config: Config, router: Any) -> dict[str, tuple[int, int]]:
    cache = getattr(router, "cache", None)
    if cache is None:
        return {}
    from llmgw._litellm.router_state import current_minute, usage_keys

    keys = usage_keys(((d.id, d.litellm_params.model) for d in config.model_list),
                      current_minute())
    try:
        values = await cache.async_batch_get_cache(keys=keys) or [None] * len(keys)
    except Exception:  # noqa: BLE001  # no shared cache reachable: no counts to show
        values = [None] * len(keys)
    return {d.id: (int(float(values[2 * i] or 0)), int(float(values[2 * i + 1] or 0)))
            for i, d in enumerate(config.model_list)}


def _litellm_in_flight(router: Any, deployment_id: str) -> int:
    from llmgw._litellm.router_state import in_flight

    return in_flight(router, deployment_id)


async def cooling_down(router: Any) -> dict[str, int | None]:
    """The deployments LiteLLM's Router currently has in cooldown: id -> the HTTP status
    that put it there (401: its key was refused)."""
    if router is None:
        return {}
    from llmgw._litellm import cooldown_statuses

    ids = list(router.get_model_ids())
    return {i: e.status for i, e in (await cooldown_statuses(router, ids)).items()}


async def _probe_one(dep: Deployment, client: httpx.AsyncClient, timeout: float,
                     redactor: Redactor) -> DeploymentHealth:
    def result(**fields: Any) -> DeploymentHealth:
        return DeploymentHealth(deployment_id=dep.id, group=dep.model_name,
                                provider=dep.provider, model=dep.litellm_params.model, **fields)

    spec = _ROUTES.get(dep.provider)
    checked = "completion"
    started = time.perf_counter()
    try:
        key = _resolve(dep.litellm_params.api_key, "api_key")
        api_base = _resolve(dep.litellm_params.api_base, "api_base")
        async with asyncio.timeout(timeout):
            if spec is not None:
                default_base, key_envs, build = spec
                key = key or next((os.environ[e] for e in key_envs if os.environ.get(e)), None)
                route = build((api_base or default_base).rstrip("/"), key)
                checked = f"GET {route.url}"
                response = await client.get(route.url, headers=route.headers)
                # No such route on this server (an OpenAI-compatible one without /models):
                # a 1-token completion is the only way left to know.
                if response.status_code not in (404, 405):
                    error = _http_error(response)
                    return result(status="down" if error else "up", latency_ms=_ms(started),
                                  checked=checked, error=_clip(redactor.scrub(error)))
                checked, started = "completion", time.perf_counter()
            error = await _complete(dep, key, api_base, timeout, redactor)
            return result(status="down" if error else "up", latency_ms=_ms(started),
                          checked=checked, error=error)
    except _Unresolved as exc:
        return result(status="down", checked="config", error=str(exc))
    except TimeoutError:
        return result(status="down", checked=checked, error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        error = _clip(redactor.scrub(_transport_error(exc)))
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            fallback = await _ollama_fallback(dep, client, timeout)
            if fallback is not None:  # the deployment still answers, as its handler falls back
                url, latency = fallback
                return result(status="up", latency_ms=latency, checked=f"GET {url}",
                              error=f"{error}; answering through its Ollama fallback")
        return result(status="down", checked=checked, error=error)


async def _ollama_fallback(dep: Deployment, client: httpx.AsyncClient,
                           timeout: float) -> tuple[str, float] | None:
    """For a ruvector deployment with ``ollama_api_base``: (url, latency) if that answers."""
    configured = (dep.litellm_params.model_extra or {}).get("ollama_api_base")
    if dep.provider != "ruvector" or not isinstance(configured, str):
        return None
    try:
        url = (_resolve(configured, "ollama_api_base") or "").rstrip("/") + "/api/tags"
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            response = await client.get(url)
    except (_Unresolved, TimeoutError, httpx.HTTPError):
        return None
    return (url, _ms(started)) if response.is_success else None


def _resolve(value: str | None, name: str) -> str | None:
    """``os.environ/VAR`` -> the variable's value, as LiteLLM does."""
    if value is None or not value.startswith(ENV_PREFIX):
        return value
    var = value[len(ENV_PREFIX):]
    resolved = os.environ.get(var)
    if not resolved:
        raise _Unresolved(f"{name}: environment variable {var} is not set")
    return resolved


async def _complete(dep: Deployment, key: str | None, api_base: str | None, timeout: float,
                    redactor: Redactor) -> str | None:
    """A 1-token completion through LiteLLM; the error text, or None if it answered."""
    from llmgw._litellm import import_litellm
    from llmgw.errors import AuthenticationFailed
    from llmgw.routing.errors import classify, provider_message, status_code_of

    litellm = import_litellm()
    params = dict(dep.to_litellm()["litellm_params"])
    params.update({k: v for k, v in (("api_key", key), ("api_base", api_base)) if v})
    try:
        # LiteLLM's own timeout a little later than ours, so a stall always reads the same.
        await litellm.acompletion(**params, messages=[{"role": "user", "content": "ping"}],
                                  max_tokens=1, timeout=timeout + 1, num_retries=0)
    except Exception as exc:
        cls = classify(exc)
        status = status_code_of(exc)
        what = "authentication failed" if cls is AuthenticationFailed else cls.__name__
        where = f" (HTTP {status})" if status else ""
        return _clip(f"{what}{where}: {provider_message(exc, redactor)}")
    return None


def _http_error(response: httpx.Response) -> str | None:
    """None for a 2xx answer, else what went wrong, in the provider's words."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    message = _message_of(response)
    # Gemini answers a wrong key with 400 API_KEY_INVALID, not 401.
    auth = status in (401, 403) or "API_KEY_INVALID" in response.text
    what = "authentication failed" if auth else "error"
    return f"{what} (HTTP {status}): {message}" if message else f"{what} (HTTP {status})"


def _message_of(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text.strip()
    for path in (("error", "message"), ("message",), ("error",), ("detail",)):
        value = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return response.text.strip()


def _transport_error(exc: httpx.HTTPError) -> str:
    try:
        where = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
    except RuntimeError:  # httpx raises when the error carries no request
        where = "the server"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {where} in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {where}: {exc or 'connection refused'}"
    return f"{type(exc).__name__} talking to {where}: {exc}"


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _ERROR_LIMIT:
        return text
    return text[:_ERROR_LIMIT - 1] + "…"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# -- in-process stats ------------------------------------------------------------------------

class DeploymentStats(BaseModel):
    """One deployment's recent attempts.

    ``requests``, ``errors``, ``error_rate`` and the latency percentiles cover the last
    ``window`` attempts; the ``total_*`` counts cover the collector's whole life. Latency
    percentiles are over successful attempts (a refused connection is fast, not healthy).
    """

    deployment_id: str
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    total_requests: int
    total_errors: int


_EWMA_WEIGHT = 0.3  # recent answers count most, one slow answer does not dominate


class StatsCollector:
    """Per-deployment counts and latencies of the attempts the gateway makes. Thread-safe."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._lock = threading.Lock()
        self._recent: dict[str, deque[tuple[bool, float | None]]] = {}
        self._totals: dict[str, list[int]] = {}  # id -> [requests, errors]
        self._ewma: dict[str, float] = {}  # id -> smoothed latency of its answers (prefer=fastest)

    def record(self, deployment_id: str, ok: bool, latency_ms: float | None) -> None:
        """One attempt on ``deployment_id``."""
        with self._lock:
            recent = self._recent.get(deployment_id)
            if recent is None:
                recent = self._recent[deployment_id] = deque(maxlen=self.window)
                self._totals[deployment_id] = [0, 0]
            recent.append((ok, latency_ms))
            totals = self._totals[deployment_id]
            totals[0] += 1
            totals[1] += 0 if ok else 1
            if ok and latency_ms is not None:
                last = self._ewma.get(deployment_id)
                self._ewma[deployment_id] = (latency_ms if last is None
                                             else last + _EWMA_WEIGHT * (latency_ms - last))

    def latency_ms(self, deployment_id: str) -> float | None:
        """The smoothed latency of a deployment's recent answers; None before its first."""
        return self._ewma.get(deployment_id)

    def snapshot(self) -> list[DeploymentStats]:
        """Stats per deployment, sorted by id."""
        with self._lock:
            items = {k: (list(v), tuple(self._totals[k])) for k, v in self._recent.items()}
        return [_stats(dep_id, recent, totals)
                for dep_id, (recent, totals) in sorted(items.items())]

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self._totals.clear()
            self._ewma.clear()


def _stats(dep_id: str, recent: list[tuple[bool, float | None]],
           totals: tuple[int, ...]) -> DeploymentStats:
    errors = sum(1 for ok, _ in recent if not ok)
    latencies = sorted(ms for ok, ms in recent if ok and ms is not None)
    return DeploymentStats(
        deployment_id=dep_id, requests=len(recent), errors=errors,
        error_rate=round(errors / len(recent), 6) if recent else 0.0,
        p50_ms=_percentile(latencies, 50), p95_ms=_percentile(latencies, 95),
        total_requests=totals[0], total_errors=totals[1])


def _percentile(ordered: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, -(-pct * len(ordered) // 100))  # ceil(pct/100 * n)
    return ordered[rank - 1]
