"""Every token kind has a rate, and its source is said (llmgw.budgets.rates); the shipped
model_list.yaml bills as LiteLLM's bundled price map does for the same models."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from llmgw._litellm import bundled_price_map
from llmgw.budgets.rates import CONFIG, INPUT, RATE_KEYS, rates_of, snapshot, warn_input_rate_fallbacks
from llmgw.config.loading import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def _config(model: str, **info: float):
    return config_from_dict({
        "model_list": [{"model_name": "g", "litellm_params": {"model": model, "api_key": "k"},
                        "model_info": {"id": "d", "input_cost_per_token": 0.000002,
                                       "output_cost_per_token": 0.00001, **info}}],
        "llmgw": {"default_group": "g"}})


def test_the_shipped_model_list_bills_as_litellms_map_for_its_models():
    table = bundled_price_map()
    for dep in load_config(REPO / "model_list.yaml").model_list:
        if dep.input_price == 0:
            continue  # the local model: free
        entry = table[dep.litellm_params.model.split("/", 1)[1]]
        rates = rates_of(dep)
        for kind, key in RATE_KEYS.items():
            if entry.get(key) is not None:
                assert rates[kind].usd_per_token == Decimal(repr(entry[key])), (dep.id, kind)
            else:  # a kind the provider does not bill apart (OpenAI's cache writes)
                assert rates[kind].usd_per_token == dep.input_price, (dep.id, kind)


def test_config_rates_win_then_the_map_then_the_input_rate():
    (dep,) = _config("anthropic/claude-sonnet-4-5", cache_read_input_token_cost=0.0000001).model_list
    rates = rates_of(dep)
    assert (rates["cache_read"].usd_per_token, rates["cache_read"].source) == (
        Decimal("1E-7"), CONFIG)
    assert rates["cache_write"].source.startswith("litellm map")
    assert rates["cache_write"].usd_per_token == Decimal("0.00000375")
    (unknown,) = _config("anthropic/claude-from-the-future").model_list
    assert {k: r.source for k, r in rates_of(unknown).items() if k.startswith("cache")} == {
        "cache_read": INPUT, "cache_write": INPUT, "cache_write_1h": INPUT}
    assert snapshot(unknown)["cache_read"] == "0.000002"


def test_a_deployment_priced_at_the_input_rate_is_warned_about_by_name(caplog):
    (unknown,) = _config("anthropic/claude-from-the-future").model_list
    (known,) = _config("openai/gpt-5").model_list
    with caplog.at_level(logging.INFO, logger="llmgw.budgets.rates"):
        assert warn_input_rate_fallbacks([unknown, known]) == ["d"]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "deployment d" in warning.getMessage() and "cache_read_input_token_cost" in \
        warning.getMessage()
    assert any("LiteLLM's price map" in r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO)


def test_llmgw_models_shows_every_rate_and_its_source_without_importing_litellm(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from llmgw.cli import main; sys.argv = ['llmgw', "
         "'models', '--format', 'json', '--config', sys.argv[1]]; "
         "import atexit; atexit.register(lambda: print('LITELLM' if 'litellm' in sys.modules "
         "else 'NO-LITELLM', file=sys.stderr)); main()", str(REPO / "model_list.yaml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "NO-LITELLM" in out.stderr
    rows = {r["deployment"]: r for r in json.loads(out.stdout)}
    sonnet = rows["hr-anthropic-sonnet"]["rates"]
    assert sonnet["cache_write_1h"] == {"usd_per_mtok": "6.00",
                                        "source": "litellm map (anthropic/claude-sonnet-4-5)"}
    assert sonnet["input"]["source"] == CONFIG
    assert rows["hr-openai-gpt41"]["rates"]["cache_write"]["source"] == INPUT
