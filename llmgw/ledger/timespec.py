"""Parse the CLI's time arguments (`7d`, `24h`, `30m`, `2026-11-01`, `2026-11-01T12:00`) to naive UTC."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from llmgw.errors import InvalidRequest

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "a duration ago (30m, 24h, 7d, 2w), a UTC date (2026-11-01) or time (2026-11-01T12:00)"


class TimeSpecError(InvalidRequest):
    """A time argument that is none of the accepted forms."""


def utcnow() -> datetime:
    """Now as naive UTC, the ledger's form."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_duration(value: str) -> timedelta | None:
    """`30s`, `15m`, `2h`, `7d`, `2w` (or `0`) as a timedelta; None for anything else."""
    text = value.strip()
    if text == "0":
        return timedelta(0)
    match = _RELATIVE.match(text)
    if not match:
        return None
    return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """A naive UTC datetime from a relative duration ("ago"), an ISO date or an ISO datetime.

    Dates are midnight UTC; datetimes without an offset are UTC; with an offset, converted.
    """
    text = value.strip()
    ago = parse_duration(text) if text != "0" else None
    if ago is not None:
        return (now or utcnow()) - ago
    if text.lower() == "now":
        return now or utcnow()
    if text.lower() in ("today", "yesterday"):
        midnight = (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=1 if text.lower() == "yesterday" else 0)
    try:
        # fromisoformat accepts 'Z' and offsets (Python 3.11+) but also odd forms like
        # '20261101'; require the dashed date so typos are not taken as something else.
        if not re.match(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$",
                        text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TimeSpecError(f"Cannot read the time {value!r}.", hint=f"Use {FORMS}.") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment
