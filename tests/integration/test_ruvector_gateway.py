"""RuVector through LLMGateway: ruvLLM's own figures in the ledger, feedback, sessions."""

from __future__ import annotations

from pathlib import Path

from llmgw.config.loading import config_from_dict
from llmgw.ledger.migrate import upgrade
from llmgw.sim import RuvLLMSim
from tests.support import ledger_rows


async def test_ruvector_answer_is_recorded_and_feedback_reaches_ruvllm(tmp_path: Path):
    from llmgw.gateway import LLMGateway

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    with RuvLLMSim(model_used="M1500", confidence=0.91) as ruv:
        cfg = config_from_dict({
            "model_list": [{"model_name": "local", "litellm_params": {
                "model": "ruvector/quality", "api_base": ruv.base_url},
                "model_info": {"id": "ruv", "input_cost_per_token": 0,
                               "output_cost_per_token": 0}}],
            "llmgw": {"default_group": "local", "ledger": {"url": url},
                      "cache": {"backend": "none"}}})
        gw = LLMGateway(cfg)
        try:
            history = [{"role": "system", "content": "You are terse."},
                       {"role": "user", "content": "Name a prime."}]
            first = await gw.complete("dev-1", "proj", history)
            history += [{"role": "assistant", "content": first.content},
                        {"role": "user", "content": "Another one."}]
            second = await gw.complete("dev-1", "proj", history)
            other = await gw.complete("dev-2", "proj", history[:2])
            assert await gw.feedback(second.request_id, 0.75) is True
        finally:
            await gw.aclose()
        queries = [r.json for r in ruv.requests if r.path == "/query"]
        feedback = ruv.feedback

    # the wire: the whole conversation flattened into `query`, one session per agent
    assert set(queries[0]) == {"query", "session_id"}
    assert queries[1]["query"].startswith("System: You are terse.\nUser: Name a prime.\n"
                                          "Assistant: ")
    assert queries[0]["session_id"] == queries[1]["session_id"] != queries[2]["session_id"]
    assert [(f.response, f.quality) for f in feedback] == [(second.content, 0.75)]
    assert feedback[0].query == queries[1]["query"]
    # the ledger: cost 0, real token counts, ruvLLM's model and confidence in the metadata
    rows = ledger_rows(url)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert all(r["cost_micros"] == 0 and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
               for r in rows)
    details = rows[1]["metadata"]["provider_details"]
    assert (details["model_used"], details["confidence"], details["served_by"]) == (
        "M1500", 0.91, "ruvllm")
    assert (first.provider, other.deployment) == ("ruvector", "ruv")
