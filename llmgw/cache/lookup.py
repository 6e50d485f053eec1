"""Step 4 of the pipeline (docs/cache.md): whether a call may use the answer cache, its key, its hit
(exact, then semantic), and keeping a fresh answer. The cache itself is `llmgw.cache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmgw.cache import Cache, CachedAnswer, cache_key, scope_of
from llmgw.config.agents import Resolution
from llmgw.config.models import Config
from llmgw.dialects.base import Call
from llmgw.types import Completion


@dataclass(frozen=True, slots=True)
class CacheLookup:
    key: str | None = None
    scope: str = ""
    msgs: list[dict[str, Any]] | None = None
    params: dict[str, Any] | None = None
    hit: CachedAnswer | None = None
    similarity: float | None = None
    text: str = ""
    fingerprint: str = ""
    group: str = ""  # the group the key was made for
    dialect: str = "chat"


MISS = CacheLookup()


class CacheStep:
    """The answer cache as the pipeline uses it; `cache` None turns it off."""

    def __init__(self, config: Config, cache: Cache | None, semantic: Any) -> None:
        self.config = config
        self.cache = cache
        self.semantic = semantic

    @classmethod
    def from_config(cls, config: Config) -> CacheStep:
        """The cache `llmgw.cache` configures (memory, Redis or none), and its semantic index
        when turned on (the model itself loads on first use)."""
        from llmgw.cache.backends import make_cache

        settings = config.llmgw.cache
        semantic = None
        if settings.semantic is not None and settings.semantic.enabled:
            from llmgw.cache.semantic import SemanticIndex

            semantic = SemanticIndex.from_settings(settings.semantic)
        redis_url = config.router_settings.router_kwargs().get("redis_url")
        return cls(config, make_cache(settings, redis_url), semantic)

    async def lookup(self, call: Call, route: Resolution, project_id: str, dialect: str, *,
                     use: bool, stream: bool) -> CacheLookup:
        """The cache key of a cacheable call, and its hit if there is one (an answer of the
        same dialect: a chat answer never stands in for an Anthropic message)."""
        settings = self.config.llmgw.cache
        params = call.cache_params if call.cache_params is not None else call.params
        temperature = params.get("temperature")
        if (not use or self.cache is None
                or (temperature is not None and temperature > settings.max_temperature)
                or (call.params.get("tools") and not settings.tool_calls)
                or (stream and not settings.streams)):
            return MISS
        scope = scope_of(settings.scope, project_id=project_id, agent_type=route.agent_type)
        msgs = call.message_dicts
        group = route.model_group
        key = cache_key(scope, group, msgs, params)
        hit = await self.cache.get(key)
        if hit is not None and hit.dialect != dialect:
            hit = None
        if hit is not None or self.semantic is None or call.params.get("tools"):
            return CacheLookup(key, scope, msgs, params, hit, group=group, dialect=dialect)
        from llmgw.cache.semantic import params_fingerprint, semantic_text

        text = semantic_text(msgs)
        if text is None:  # the last turn is not plain user text: exact matches only
            return CacheLookup(key, scope, msgs, params, None, group=group, dialect=dialect)
        fingerprint = params_fingerprint(msgs, params)
        found = await self.semantic.lookup(scope, group, text, fingerprint)
        if found is None:
            return CacheLookup(key, scope, msgs, params, None, None, text, fingerprint, group,
                               dialect)
        similar = await self.cache.get(found[0])
        if similar is None:
            self.semantic.remove(found[0])
        elif similar.dialect != dialect:
            similar = None
        return CacheLookup(key, scope, msgs, params, similar, found[1] if similar else None,
                           text, fingerprint, group, dialect)

    async def store(self, lookup: CacheLookup, completion: Completion, now: Any) -> None:
        """Keep an answer, under the group that actually served it (a fallback's answer must
        not stand in for the requested group's once that group is back)."""
        if lookup.key is None or self.cache is None or not (completion.content
                                                            or completion.tool_calls):
            return
        # Every value comes from a validated Completion: built as it is, not checked again.
        answer = CachedAnswer.model_construct(
            content=completion.content, tool_calls=completion.tool_calls,
            finish_reason=completion.finish_reason, usage=completion.usage,
            cost_micros=completion.cost_micros, model_group=completion.model_group,
            requested_group=completion.requested_group, deployment=completion.deployment,
            provider=completion.provider, model=completion.model,
            request_id=completion.request_id, created_at=now, body=completion.body,
            dialect=completion.dialect)
        if completion.model_group == lookup.group:
            key = lookup.key
        else:  # a lookup with a key has its messages and params
            assert lookup.msgs is not None and lookup.params is not None
            key = cache_key(lookup.scope, completion.model_group, lookup.msgs, lookup.params)
        await self.cache.set(key, answer, self.config.llmgw.cache.ttl_s)
        if (self.semantic is not None and lookup.text
                and completion.model_group == lookup.group):
            await self.semantic.add(lookup.scope, completion.model_group, lookup.text,
                                    lookup.fingerprint, key)

    async def aclose(self) -> None:
        if self.cache is not None:
            await self.cache.aclose()
