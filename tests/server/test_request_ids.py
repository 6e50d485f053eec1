"""Every answer of `llmgw serve` names its request (`x-llmgw-request-id`): a stream from its
first byte, and a refusal of the front too, so a caller always has an id to quote."""

from __future__ import annotations

import httpx
import pytest

from llmgw.errors import LedgerError
from llmgw.server.common import broken_stream
from tests.support import ledger_rows

SQLITE = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)

RID = "x-llmgw-request-id"
HI = [{"role": "user", "content": "Say hi"}]
STREAMS = {
    "chat": ("/v1/chat/completions", {"model": "backup", "messages": HI, "stream": True}),
    "messages": ("/v1/messages", {"model": "primary", "messages": HI, "max_tokens": 20,
                                  "stream": True}),
    "responses": ("/v1/responses", {"model": "backup", "input": "Say hi", "stream": True}),
}


@SQLITE
@pytest.mark.parametrize("dialect", list(STREAMS))
def test_a_stream_names_its_request_in_its_headers(running, dialect):
    path, body = STREAMS[dialect]
    headers = {"authorization": f"Bearer {running.key()}", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", running.base_url + path, json=body, headers=headers,
                      timeout=30) as r:
        assert r.status_code == 200
        request_id = r.headers[RID]
        text = "".join(r.iter_text())
    (row,) = ledger_rows(running.ledger_url)
    assert row["request_id"] == request_id
    assert f'"request_id":"{request_id}"' in text  # the last event's facts say the same


@SQLITE
def test_refusals_of_the_front_carry_a_request_id_and_write_nothing(running):
    base = running.base_url
    answers = [
        httpx.post(base + "/v1/chat/completions", json={"model": "backup", "messages": HI}),
        httpx.post(base + "/v1/chat/completions", json={"model": "backup", "messages": HI},
                   headers={"authorization": "Bearer llmgw-not-a-key"}),
        httpx.post(base + "/v1/chat/completions", json={"model": "backup"},
                   headers={"authorization": f"Bearer {running.key()}"}),
        httpx.get(base + "/v1/no-such-endpoint",
                  headers={"authorization": f"Bearer {running.key()}"}),
    ]
    assert [a.status_code for a in answers] == [401, 401, 400, 404]
    ids = [a.headers.get(RID) for a in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    assert ledger_rows(running.ledger_url) == []


def test_a_stream_broken_past_the_gateway_ends_typed_with_its_id():
    typed = broken_stream(LedgerError("The ledger is down.", hint="Retry."), "rid-1", "openai")
    assert typed["error"]["code"] == "ledger_unavailable"
    assert typed["llmgw"] == {"request_id": "rid-1"}
    untyped = broken_stream(RuntimeError("boom"), "rid-2", "anthropic")
    assert untyped["type"] == "error" and untyped["error"]["type"] == "api_error"
    assert "rid-2" in untyped["error"]["message"] and "boom" not in untyped["error"]["message"]
