"""Scrub credentials from any text llmgw stores, logs or raises."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

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


def scrub_exception(exc: BaseException, redactor: Redactor) -> None:
    """Make a provider's exception safe to keep reachable from ours (as its `__context__`):
    its text scrubbed, the exceptions it wrapped dropped (SDK and HTTP errors quoting the
    provider's body), and its HTTP request and response replaced by copies without headers
    we sent or a body (a provider may echo the key in either)."""
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    exc.args = tuple(_scrubbed_or_none(a, redactor) for a in exc.args)
    for name, value in list(vars(exc).items()):
        clean = _scrubbed_or_none(value, redactor)
        if clean is not value:
            try:
                setattr(exc, name, clean)
            except (AttributeError, TypeError):  # a read-only attribute: drop it instead
                vars(exc).pop(name, None)


def _scrubbed_or_none(value: Any, redactor: Redactor) -> Any:
    """What cannot be copied safely is dropped: scrubbing must never fail an error path."""
    try:
        return _scrubbed(value, redactor)
    except Exception:  # noqa: BLE001
        return None


def _scrubbed(value: Any, redactor: Redactor) -> Any:
    """`value` with every string in it scrubbed; the same object when nothing changed."""
    import httpx

    if isinstance(value, str):
        clean = redactor.scrub(value)
        return value if clean == value else clean
    if isinstance(value, dict):
        items = {k: _scrubbed(v, redactor) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if type(value) in (list, tuple):
        parts = [_scrubbed(v, redactor) for v in value]
        return value if all(p is v for p, v in zip(parts, value, strict=True)) else type(value)(parts)
    if isinstance(value, httpx.Request):
        return httpx.Request(value.method, redactor.scrub(str(value.url)) or "")
    if isinstance(value, httpx.Response):
        try:
            request = _scrubbed(value.request, redactor)
        except RuntimeError:  # a Response built without a request
            request = None
        kept = {k: v for k, v in value.headers.items()
                if k.lower() not in ("content-length", "content-encoding", "set-cookie")}
        return httpx.Response(value.status_code, headers=kept, request=request)
    return value


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
LOGGERS_TO_SCRUB = ("llmgw", "llmgw.gateway", "llmgw.routing.router", "llmgw.routing.recorder",
                    "llmgw.ledger", "llmgw.sim", "llmgw.cache",
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
