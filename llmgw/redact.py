"""Scrub credentials from any text llmgw stores, logs or raises."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Shapes of common provider keys, for keys that are not in our config (e.g. echoed by a provider).
_KEY_PATTERNS = [
    re.compile(r"\b(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)([?&]key=)[A-Za-z0-9._\-]{8,}"),
]
MASK = "***"


class Redactor:
    """Replaces every known secret, and anything shaped like an API key, with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self._secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(set(self._secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: str | None) -> str | None:
        if not text:
            return text
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _KEY_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record's message and scrubs it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logger's problem, not ours
            return True
        scrubbed = self.redactor.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redactor.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


# A logger's filter sees only records logged on that logger, not its children's: list each.
LOGGERS_TO_SCRUB = ("llmgw", "llmgw.gateway", "llmgw.router", "llmgw.ledger", "llmgw.sim",
                    "llmgw.cache",
                    "llmgw.cli", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "aiohttp")


def install_log_filter(redactor: Redactor) -> RedactingFilter:
    """Attach one scrubbing filter to llmgw's and LiteLLM's loggers (idempotent per redactor)."""
    flt = RedactingFilter(redactor)
    for name in LOGGERS_TO_SCRUB:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt
