"""Two gateways in one process, built one after the other from different configs: each
request is guarded (credentials), admitted (capacity) and recorded (its failed attempts, named
from its config) by its own gateway's services, never by those of the gateway built last."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from llmgw.errors import AuthenticationFailed, RateLimited
from llmgw.ledger.migrate import upgrade
from llmgw.sim import FaultPlan, OpenAISim
from tests.routing.fleet import dep, fleet
from tests.support import eventually_async

HELLO = [{"role": "user", "content": "hello"}]
UNSET_VAR = "LLMGW_TEST_TWO_GATEWAYS_UNSET_KEY"


@pytest.fixture
def ledger(tmp_path: Path) -> Callable[[str], str]:
    """A migrated SQLite ledger per gateway name."""
    def make(name: str) -> str:
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        return url
    return make


@pytest.fixture
async def gateways(ledger: Callable[[str], str]) -> AsyncIterator[list[Any]]:
    """Gateways the test builds; closed after it."""
    built: list[Any] = []
    yield built
    for gw in built:
        await gw.aclose()


def _sent(sim: OpenAISim, model: str) -> int:
    return sum(1 for r in sim.requests if r.model == model)


async def test_each_gateway_guards_and_records_with_its_own_config(
        sims: tuple[OpenAISim, Any], ledger: Callable[[str], str], gateways: list[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llmgw.gateway import LLMGateway

    monkeypatch.delenv(UNSET_VAR, raising=False)
    openai_sim, _ = sims
    openai_sim.set_plan(FaultPlan.error(500, model="gpt-flaky"))
    # The same groups and deployment ids in both; what differs is what the configs say.
    first = LLMGateway(fleet([
        dep("keyed", "keyed-1", openai_sim, "gpt-keyed-first", api_key=f"os.environ/{UNSET_VAR}"),
        dep("g", "g-1", openai_sim, "gpt-flaky"),
        dep("h", "h-1", openai_sim, "gpt-first-backup"),
    ], ledger("first"), num_retries=0, fallbacks=[{"g": ["h"]}]))
    gateways.append(first)
    second = LLMGateway(fleet([
        dep("keyed", "keyed-1", openai_sim, "gpt-keyed-second"),
        dep("g", "g-1", openai_sim, "gpt-second"),
        dep("h", "h-1", openai_sim, "gpt-second-backup"),
    ], ledger("second"), num_retries=0, fallbacks=[{"g": ["h"]}]))
    gateways.append(second)

    # The first gateway's key variable is unset: its own guard refuses before sending.
    with pytest.raises(AuthenticationFailed) as refused:
        await first.complete("a", "p", HELLO, model_group="keyed")
    assert refused.value.deployment == "keyed-1"
    assert UNSET_VAR in str(refused.value)
    assert _sent(openai_sim, "gpt-keyed-first") == 0
    # The second gateway's deployment of the same id has a key: nothing refuses it.
    answered = await second.complete("a", "p", HELLO, model_group="keyed")
    assert (answered.deployment, answered.model) == ("keyed-1", "openai/gpt-keyed-second")

    # A failed hop of the first gateway is recorded from the first gateway's config.
    fell_back = await first.complete("a", "p", HELLO, model_group="g")
    assert fell_back.deployment == "h-1"
    failed = fell_back.attempts[0]
    assert (failed.deployment, failed.status, failed.status_code) == ("g-1", "error", 500)
    assert failed.model == "openai/gpt-flaky"
    direct = await second.complete("a", "p", HELLO, model_group="g")
    assert [(a.deployment, a.status) for a in direct.attempts] == [("g-1", "ok")]
    assert not first._recorder.traces  # every trace closed, whichever gateway opened it


async def test_each_gateway_admits_and_counts_with_its_own_capacity_gate(
        sims: tuple[OpenAISim, Any], ledger: Callable[[str], str], gateways: list[Any]) -> None:
    from llmgw.gateway import LLMGateway

    openai_sim, _ = sims
    limited = LLMGateway(fleet([dep("lim", "lim-1", openai_sim, "gpt-limited", rpm=1,
                                    tpm=1_000_000)],
                               ledger("limited"), num_retries=0,
                               llmgw={"routing": {"max_queue_wait_s": 0}}))
    gateways.append(limited)
    free = LLMGateway(fleet([dep("lim", "lim-1", openai_sim, "gpt-free", tpm=1_000_000_000)],
                            ledger("free"), num_retries=0))
    gateways.append(free)
    assert limited._recorder.gate is not free._recorder.gate

    first = await limited.complete("a", "p", HELLO, model_group="lim")
    with pytest.raises(RateLimited) as over:  # rpm 1, by the limited gateway's own gate
        await limited.complete("a", "p", HELLO, model_group="lim")
    assert over.value.retry_after is not None and over.value.retry_after > 0
    assert _sent(openai_sim, "gpt-limited") == 1
    # The other gateway's deployment of the same id has no rpm limit.
    answers = [await free.complete("a", "p", HELLO, model_group="lim") for _ in range(3)]
    assert _sent(openai_sim, "gpt-free") == 3

    # Tokens are counted (after each answer, by LiteLLM's success callback) toward the tpm of
    # the gateway that asked.
    want = {limited: first.usage.total_tokens, free: sum(a.usage.total_tokens for a in answers)}
    assert all(want.values())

    async def counted() -> bool:
        got = {}
        for gw in want:
            gate = gw._recorder.gate
            assert gate is not None
            got[gw] = (await gate.usage(["lim-1"]))["lim-1"].tokens
        return got == want

    await eventually_async(counted, "each gateway's tokens on its own gate")
