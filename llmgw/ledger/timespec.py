"""Parse the CLI's time arguments (`7d`, `24h`, `30m`, `2026-11-01`, `2026-11-01T12:00`) to naive UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from llmgw.errors import InvalidRequest

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "a duration ago (30m, 24h, 7d, 2w), a UTC date (2026-11-01) or time (2026-11-01T12:00)"
# Longer ago than any ledger holds; far longer is a typo that would overflow datetime.
MAX_DURATION = timedelta(days=100 * 365)


class TimeSpecError(InvalidRequest):
    """A time argument that is none of the accepted forms."""


def utcnow() -> datetime:
    """Now as naive UTC, the ledger's form."""
    return datetime.now(UTC).replace(tzinfo=None)


def read_duration(value: str) -> timedelta | None:
    """`30s`, `15m`, `2h`, `7d`, `2w` (or `0`) as a timedelta; None if it is not one.
    Raises `TimeSpecError` for a duration longer than `MAX_DURATION`."""
    text = value.strip()
    if text == "0":
        return timedelta(0)
    match = _RELATIVE.match(text)
    if not match:
        return None
    count, unit = int(match.group(1)), _UNITS[match.group(2).lower()]
    if count > MAX_DURATION // timedelta(**{unit: 1}):
        raise TimeSpecError(f"The duration {text!r} is longer than "
                            f"{MAX_DURATION.days // 365} years.",
                            hint=f"Use a shorter one, or a date: {FORMS}.")
    return timedelta(**{unit: count})


def parse_duration(value: str) -> timedelta | None:
    """`read_duration`, with None (not an error) for a duration out of range too."""
    try:
        return read_duration(value)
    except TimeSpecError:
        return None


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """A naive UTC datetime from a relative duration ("ago"), an ISO date or an ISO datetime.

    Dates are midnight UTC; datetimes without an offset are UTC; with an offset, converted.
    """
    text = value.strip()
    ago = read_duration(text) if text != "0" else None
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
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        raise TimeSpecError(f"Cannot read the time {value!r}.", hint=f"Use {FORMS}.") from None
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        raise TimeSpecError(f"The time {value!r} is out of range.",
                            hint="Use a date between years 1 and 9999.") from None
    return moment
