"""API keys never reach the ledger, logs or errors; sync wrapper; unmigrated ledger."""

from __future__ import annotations

import io
import logging
import traceback

import pytest

from llmgw.errors import AllDeploymentsFailed, AuthenticationFailed, LedgerError, LLMGatewayError
from llmgw.redact import LOGGERS_TO_SCRUB
from llmgw.sim import FaultPlan
from tests.support import ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY, ledger_rows, sim_config

SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY, "SECRET")
HELLO = [{"role": "user", "content": "hello"}]


async def test_no_api_key_in_ledger_logs_or_errors(sims, migrated_ledger_url, monkeypatch, capfd):
    from llmgw.gateway import LLMGateway

    monkeypatch.setenv("LLMGW_LITELLM_LOG_LEVEL", "DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", *LOGGERS_TO_SCRUB)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    openai_sim, anthropic_sim = sims
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    errors: list[LLMGatewayError] = []
    try:
        await gw.complete("a", "p", HELLO, model_group="primary")            # ok
        anthropic_sim.set_plan(FaultPlan.error(500))
        await gw.complete("a", "p", HELLO, model_group="primary")            # fallback
        openai_sim.set_plan(FaultPlan.error(503))
        with pytest.raises(AllDeploymentsFailed) as e1:
            await gw.complete("a", "p", HELLO, model_group="primary")
        with pytest.raises(AuthenticationFailed) as e2:
            await gw.complete("a", "p", HELLO, model_group="authg")          # wrong key
        errors += [e1.value, e2.value]
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        await gw.aclose()

    logged = stream.getvalue()
    assert "Falling back" in logged or "fallback" in logged.lower()  # LiteLLM's debug logs were captured
    out, err = capfd.readouterr()
    rows = ledger_rows(migrated_ledger_url)
    assert len(rows) == 6  # ok; error+ok; error+error; auth error
    texts = {
        "ledger": repr(rows),
        "logs": logged,
        "stdout/stderr": out + err,
        "errors": " ".join(str(e) + repr(e) + repr(e.attempts) for e in errors),
    }
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {where}"


def test_complete_sync_for_scripts(sims, migrated_ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(answer="sync works"))
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    try:
        first = gw.complete_sync("a", "p", HELLO, model_group="backup")
        second = gw.complete_sync("a", "p", HELLO, model_group="backup")  # a second event loop
    finally:
        gw.close()
    assert first.content == second.content == "sync works"
    assert [r["status"] for r in ledger_rows(migrated_ledger_url)] == ["ok", "ok"]


def test_unmigrated_ledger_fails_at_start_with_the_fix(sims, ledger_url):
    from llmgw.gateway import LLMGateway

    openai_sim, anthropic_sim = sims
    with pytest.raises(LedgerError, match="llmgw db upgrade"):
        LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, ledger_url))


# -- a provider that echoes the key it was sent (as OpenAI's 401 does) ----------------------

def _chain(error: BaseException) -> list[BaseException]:
    """The error and every exception reachable through __cause__ / __context__."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or any(exc is seen for seen in found):
            continue
        found.append(exc)
        todo += [exc.__cause__, exc.__context__]
    return found


def _reachable_text(error: BaseException) -> str:
    """What a handler, a logger or an error tracker can read from the raised error: each
    chained exception's str, repr, args, attributes (HTTP requests and responses with their
    headers and body) and formatted traceback."""
    import httpx

    texts = []
    for exc in _chain(error):
        texts += [str(exc), repr(exc), repr(exc.args),
                  "".join(traceback.format_exception(exc, chain=True))]
        for value in vars(exc).values():
            texts.append(repr(value))
            if isinstance(value, httpx.Response):
                texts += [repr(value.headers), value.content.decode(errors="replace")]
                value = value.request
            if isinstance(value, httpx.Request):
                texts += [str(value.url), repr(value.headers),
                          value.content.decode(errors="replace")]
    return "\n".join(texts)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_echoed_key_reaches_no_error_chain_log_or_row(sims, migrated_ledger_url,
                                                               monkeypatch, caplog, stream):
    from llmgw.gateway import LLMGateway

    monkeypatch.setenv("LLMGW_LITELLM_LOG_LEVEL", "DEBUG")
    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(echo_key=True))
    gw = LLMGateway(sim_config(openai_sim.base_url, anthropic_sim.base_url, migrated_ledger_url))
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as info:
            if stream:
                async for _ in gw.stream("a", "p", HELLO, model_group="autho"):
                    pass
            else:
                await gw.complete("a", "p", HELLO, model_group="autho")
    finally:
        await gw.aclose()

    # The key reached the simulator, which quoted it back: that is what must not leak.
    assert [r.headers["authorization"] for r in openai_sim.requests] == [f"Bearer {WRONG_KEY}"]
    assert "Incorrect API key provided: " in str(info.value)
    assert len(_chain(info.value)) > 1  # LiteLLM's exception is still there, scrubbed
    rows = ledger_rows(migrated_ledger_url)
    assert [(r["error_class"], r["stream"]) for r in rows] == [("AuthenticationFailed", stream)]
    assert "openai" in caplog.text.lower()  # LiteLLM's debug logs were captured
    texts = {"the error": _reachable_text(info.value), "logs": caplog.text, "ledger": repr(rows)}
    for where, text in texts.items():
        assert WRONG_KEY not in text and "SECRET" not in text, f"the key leaked into {where}"


@pytest.mark.parametrize("stream", [False, True])
def test_llmgw_chat_prints_a_refused_key_without_it(sims, tmp_path, stream):
    import os
    import subprocess
    import sys

    import yaml

    from llmgw.ledger.migrate import upgrade
    from tests.support import sim_config_dict

    openai_sim, anthropic_sim = sims
    openai_sim.set_plan(FaultPlan(echo_key=True))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    data = sim_config_dict(openai_sim.base_url, anthropic_sim.base_url, url)
    for dep in data["model_list"]:  # the wrong key comes from the environment
        if dep["litellm_params"]["api_key"] == WRONG_KEY:
            dep["litellm_params"]["api_key"] = "os.environ/LLMGW_TEST_CHAT_KEY"
        dep["model_info"] = {k: str(v) for k, v in dep["model_info"].items()}
    (tmp_path / "model_list.yaml").write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    env.update(LLMGW_TEST_CHAT_KEY=WRONG_KEY, LLMGW_LITELLM_LOG_LEVEL="DEBUG")
    proc = subprocess.run(
        [sys.executable, "-m", "llmgw.cli", "chat", "--model-group", "autho",
         *(["--stream"] if stream else []), "hello"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "AuthenticationFailed from auth-openai" in proc.stderr
    assert "Incorrect API key provided: " in proc.stderr
    assert [r.headers["authorization"] for r in openai_sim.requests] == [f"Bearer {WRONG_KEY}"]
    assert WRONG_KEY not in proc.stdout + proc.stderr
    assert "SECRET" not in proc.stdout + proc.stderr
