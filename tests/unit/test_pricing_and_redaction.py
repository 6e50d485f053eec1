"""Exact money conversion and credential scrubbing."""

import logging
from decimal import Decimal

import pytest

from llmgw.budgets.pricing import micros_to_usd, to_micros, token_cost_micros
from llmgw.redact import Redactor, install_log_filter


@pytest.mark.parametrize(("usd", "micros"), [
    (3.5e-05, 35), (0.1 + 0.2, 300_000), (1.0000005, 1_000_000), (1.0000015, 1_000_002),
    (Decimal("0.0000025"), 2), ("12.345678", 12_345_678), (None, 0), (0, 0),
])
def test_to_micros_rounds_once_half_even(usd, micros):
    assert to_micros(usd) == micros


def test_token_cost_is_exact_decimal_arithmetic():
    # 21 prompt + 7 completion tokens at $1 / $2 per million = $0.000035 exactly.
    assert token_cost_micros(21, 7, Decimal("0.000001"), Decimal("0.000002")) == 35
    assert token_cost_micros(10**7, 0, Decimal("0.0000001"), Decimal(0)) == 1_000_000
    assert micros_to_usd(35) == Decimal("0.000035")


def test_redactor_scrubs_configured_and_key_shaped_secrets():
    r = Redactor(["my-very-secret-value"])
    text = ("key my-very-secret-value, sk-ant-api03-ABCDEFGHIJKLMNOP, Bearer abcdefghijklmnop, "
            "x-api-key: zyxwvutsrqponm, ?key=AIzaSyABCDEFGH")
    out = r.scrub(text)
    for secret in ("my-very-secret-value", "ABCDEFGHIJKLMNOP", "abcdefghijklmnop", "zyxwvutsrqponm",
                   "AIzaSyABCDEFGH"):
        assert secret not in out
    assert "sk-ant-***" in out


def test_log_filter_scrubs_messages_args_and_tracebacks(caplog):
    install_log_filter(Redactor(["hunter2-secret"]))
    for name in ("llmgw", "llmgw.routing.router", "LiteLLM Router"):
        with caplog.at_level(logging.DEBUG, logger=name):
            logging.getLogger(name).warning("calling with %s", "hunter2-secret")
            try:
                raise ValueError("bad key hunter2-secret")
            except ValueError:
                logging.getLogger(name).exception("failed")
    assert len(caplog.records) == 6
    assert all("hunter2-secret" not in (r.getMessage() + (r.exc_text or "")) for r in caplog.records)
