"""Settings of the HTTP front (`llmgw serve`): flags, else `LLMGW_SERVE_*` environment
variables, else these defaults. The gateway's own settings stay in model_list.yaml."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmgw.errors import ConfigError

ENV_PREFIX = "LLMGW_SERVE_"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0,
                                description="larger request bodies get a 413")
    max_header_bytes: int = Field(default=64 * 1024, ge=4096,
                                  description="the request line and headers together")
    cors_origins: tuple[str, ...] = Field(default=(), description=(
        "origins a browser may call from; empty: CORS off"))
    grace_s: float = Field(default=20.0, ge=0, description=(
        "on SIGTERM, how long in-flight requests may finish before they are cancelled"))
    key_cache_s: float = Field(default=5.0, ge=0, description=(
        "how long a worker trusts a key it checked; a revoked key stops within this"))

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        """`LLMGW_SERVE_MAX_BODY_BYTES`, `..._MAX_HEADER_BYTES`, `..._CORS_ORIGINS`
        (comma-separated), `..._GRACE_S`, `..._KEY_CACHE_S`; `overrides` (not None) win."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = (tuple(o.strip() for o in raw.split(",") if o.strip())
                            if name == "cors_origins" else raw)
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
