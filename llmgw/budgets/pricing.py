"""Money arithmetic: dollars to integer micro-dollars, exactly, in one place."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

MICROS_PER_USD = 1_000_000


def to_micros(usd: float | Decimal | str | int | None) -> int:
    """Dollars to micro-dollars, rounded half-even once. Floats go through their shortest repr
    so 3.5e-05 is 35, not 34.99999..."""
    if usd is None:
        return 0
    amount = usd if isinstance(usd, Decimal) else Decimal(repr(usd) if isinstance(usd, float) else str(usd))
    return int((amount * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal of dollars with six places."""
    return (Decimal(micros) / MICROS_PER_USD).quantize(Decimal("0.000001"))


def token_cost_micros(prompt_tokens: int, completion_tokens: int, input_price: Decimal,
                      output_price: Decimal) -> int:
    """Cost of a token count at per-token dollar prices, exact to the micro-dollar."""
    return to_micros(prompt_tokens * input_price + completion_tokens * output_price)
