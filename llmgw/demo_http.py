"""The demo's last step: the same gateway over HTTP (`llmgw serve`), as an agent written in
another language would use it: a project key, the official `openai` SDK, and its row in the
ledger. Also issues the admin key the dashboard (`/ui`) signs in with."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console

from llmgw.config.models import Config

HTTP_PROJECT = "checkout"
HTTP_AGENT = "ts-agent-1"  # an agent that lives in another process, in another language


def http_step(cfg: Config, ledger_url: str, out: Console) -> str:
    """Serve the gateway on a free loopback port, ask one question with the openai SDK and a
    project key, stop. Returns the admin key issued for the dashboard."""
    import uvicorn

    from llmgw.ledger.api_keys import ApiKeyStore
    from llmgw.ledger.engine import make_engine
    from llmgw.server.app import create_app

    engine = make_engine(ledger_url)
    try:
        keys = ApiKeyStore(engine)
        agent_key = keys.create(project_id=HTTP_PROJECT, agent_id=HTTP_AGENT,
                                agent_type="software-engineer", name="demo http agent").secret
        admin_key = keys.create(project_id=None, admin=True, name="demo dashboard").secret
    finally:
        engine.dispose()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, ledger_url=ledger_url),
                                           host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="llmgw-demo-serve", daemon=True)
    thread.start()
    try:
        base = _wait_until_serving(server, thread)
        out.print(f"  llmgw serve at {base}; a project key for {HTTP_PROJECT}/{HTTP_AGENT} "
                  f"({agent_key[:12]}...)")
        _ask(base, agent_key, out)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return admin_key


def _wait_until_serving(server: Any, thread: threading.Thread, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not server.started:  # the gateway is built in the app's lifespan: seconds
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("llmgw serve did not start; see the log above.")
        time.sleep(0.05)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


def _ask(base: str, key: str, out: Console) -> None:
    try:
        from openai import OpenAI
    except ImportError:
        out.print("  (the openai SDK is not installed: `pip install openai` to run this step)")
        return
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", max_tokens=64,
        messages=[{"role": "user", "content": "Name one risk of a big-bang release."}])
    answer = raw.parse()
    h = raw.headers
    out.print(f"  openai SDK -> {h.get('x-llmgw-model-group')} / {h.get('x-llmgw-deployment')}: "
              f"${h.get('x-llmgw-cost-usd')}, cache {h.get('x-llmgw-cache')}, "
              f"request {h.get('x-llmgw-request-id')}")
    out.print(f"  [cyan]answered:[/] {answer.choices[0].message.content}", highlight=False,
              markup=True)
