"""Settings of the HTTP front (`llmgw serve`): flags, else `LLMGW_SERVE_*` environment
variables, else these defaults. The gateway's own settings stay in model_list.yaml."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmgw.errors import ConfigError

ENV_PREFIX = "LLMGW_SERVE_"
_LISTS = ("cors_origins", "allowed_hosts", "allowed_origins")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0,
                                description="larger request bodies get a 413")
    max_header_bytes: int = Field(default=64 * 1024, ge=4096,
                                  description="the request line and headers together")
    cors_origins: tuple[str, ...] = Field(default=(), description=(
        "origins a browser may call from; empty: CORS off"))
    bind_host: str = Field(default="127.0.0.1", description=(
        "the address `llmgw serve` binds: the Host allow-list's default follows it"))
    allowed_hosts: tuple[str, ...] = Field(default=(), description=(
        "Host header values accepted besides the loopback names (`name`, `name:port`, `*`); "
        "empty on 0.0.0.0: any host (llmgw.server.hosts)"))
    allowed_origins: tuple[str, ...] = Field(default=(), description=(
        "Origin header values accepted besides loopback and same-origin (the CORS origins "
        "are allowed too)"))
    grace_s: float = Field(default=20.0, ge=0, description=(
        "on SIGTERM, how long in-flight requests may finish before they are cancelled"))
    key_cache_s: float = Field(default=5.0, ge=0, description=(
        "how long a worker trusts a key it checked; a revoked key stops within this"))

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not host.strip() or any(c in host for c in "/ ,@"):
                raise ValueError(f"{host!r} is not a host name (`name`, `name:port` or `*`)")
        return tuple(h.strip() for h in value)

    @field_validator("allowed_origins", "cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            scheme, sep, rest = origin.strip().partition("://")
            if origin != "*" and (not sep or scheme not in ("http", "https") or not rest
                                  or "/" in rest.rstrip("/")):
                raise ValueError(f"{origin!r} is not an origin (`https://name[:port]` or `*`)")
        return tuple(o.strip() for o in value)

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        """`LLMGW_SERVE_MAX_BODY_BYTES`, `..._MAX_HEADER_BYTES`, `..._CORS_ORIGINS`,
        `..._ALLOWED_HOSTS`, `..._ALLOWED_ORIGINS` (these three comma-separated),
        `..._BIND_HOST`, `..._GRACE_S`, `..._KEY_CACHE_S`; `overrides` (not None) win."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = (tuple(o.strip() for o in raw.split(",") if o.strip())
                            if name in _LISTS else raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: "
                                 f"{e['msg']}" for e in exc.errors())
            raise ConfigError(f"Invalid server settings: {problems}.",
                              hint="Fix the flag or environment variable named.") from None

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for worker processes."""
        env = {}
        for name, value in self.model_dump().items():
            env[ENV_PREFIX + name.upper()] = (",".join(value) if isinstance(value, tuple)
                                              else str(value))
        return env
