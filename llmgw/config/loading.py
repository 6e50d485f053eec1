"""Loading `model_list.yaml`: the file (argument, `LLMGW_CONFIG`, ./model_list.yaml), YAML,
validation into `Config` with every bad key in one `ConfigError`, then the environment's
overrides (ledger URL, Redis URL, metrics port).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmgw.config.error_text import describe, one_line
from llmgw.config.models import Config, MetricsSettings
from llmgw.errors import ConfigError

DEFAULT_CONFIG_FILE = "model_list.yaml"
ENV_REDIS_URL = "LLMGW_REDIS_URL"
ENV_METRICS_PORT = "LLMGW_METRICS_PORT"


def config_from_dict(data: Any, *, source: str = "<dict>") -> Config:
    """Validate a parsed config; any problem becomes one `ConfigError` listing each bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got "
                          f"{type(data).__name__}", path=source)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        found = describe(exc, Config)
        if len(found) == 1:  # one line, so a CLI error stays one line
            text = f"{source}: invalid configuration: {one_line(*found[0])}"
        else:
            text = f"{source}: invalid configuration:\n" + "\n".join(
                f"  {key}: {msg}" for key, msg in found)
        raise ConfigError(text, path=source, key=found[0][0] if found else None,
                          hint="Fix the key(s) named; see the model_list.yaml shipped with "
                               "llmgw.") from None
    cfg._source = source
    ledger_url = os.environ.get("LLMGW_LEDGER_URL")
    if ledger_url:
        cfg.llmgw.ledger.url = ledger_url
    redis_url = os.environ.get(ENV_REDIS_URL)
    if redis_url:
        cfg.router_settings.redis_url = redis_url
    metrics_port = os.environ.get(ENV_METRICS_PORT)
    if metrics_port:
        try:
            cfg.llmgw.metrics = MetricsSettings(enabled=True, host=cfg.llmgw.metrics.host,
                                                port=int(metrics_port))
        except ValueError:
            raise ConfigError(f"{ENV_METRICS_PORT}={metrics_port!r} is not a port number.",
                              key=ENV_METRICS_PORT,
                              hint="Use a free TCP port (0-65535), or unset it.") from None
    return cfg


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the config comes from: the argument, then `LLMGW_CONFIG`, then ./model_list.yaml."""
    return Path(path or os.environ.get("LLMGW_CONFIG") or DEFAULT_CONFIG_FILE)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate `model_list.yaml` (see `config_path`); env overrides applied."""
    p = config_path(path)
    if not p.is_file():
        raise ConfigError(f"No configuration file at {p}.", path=str(p),
                          hint="Create model_list.yaml (see README) or set LLMGW_CONFIG to its path.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                          path=str(p), hint="Fix the YAML syntax.") from None
    return config_from_dict(data, source=str(p))
