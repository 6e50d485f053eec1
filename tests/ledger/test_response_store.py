"""Stored Responses-API responses: kept per project, found until they expire, then purged."""

from __future__ import annotations

import base64
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func, select

from llmgw.errors import InvalidRequest
from llmgw.ledger.models import StoredResponseRow
from llmgw.ledger.response_store import ResponseStore, StoredResponse

T0 = datetime(2026, 12, 7, 12, 0, 0)
DAY = timedelta(days=1)
# LiteLLM's ids are base64 of the provider's id and the deployment: long, well past 200.
LONG_ID = "resp_" + base64.b64encode(("litellm:custom_llm_provider:openai;model_id:dep-1;"
                                      "response_id:resp_" + "9f" * 60).encode()).decode()


def response(id_: str = LONG_ID, project: str = "proj-a", **changes: object) -> StoredResponse:
    output = [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}]
    stored = StoredResponse(
        id=id_, project_id=project, agent_id="agent-1", request_id="req-0001",
        model_group="gpt", deployment_id="dep-1", provider="openai", created_at=T0,
        expires_at=T0 + DAY,
        input=[{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "Capital of France?"}]}],
        output=output,
        response={"id": id_, "object": "response", "status": "completed", "model": "gpt-4o",
                  "output": output, "temperature": 0.5,
                  "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}})
    return replace(stored, **changes)  # type: ignore[arg-type]


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(StoredResponseRow.__table__)
                            ).scalar_one()


def test_save_and_get_round_trip(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    stored = response()
    assert len(stored.id) > 200
    store.save(stored)
    found = store.get(stored.id, "proj-a", T0 + timedelta(hours=1))
    assert found == stored
    assert found is not None and found.created_at.tzinfo is None
    assert found.response["temperature"] == 0.5 and isinstance(found.response["usage"], dict)
    nullable = replace(stored, id="resp_2", deployment_id=None, provider=None)
    store.save(nullable)
    assert store.get("resp_2", "proj-a", T0) == nullable
    assert rows(ledger_engine) == 2


def test_times_are_stored_naive_utc_like_the_rest_of_the_ledger(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    plus_two = timezone(timedelta(hours=2))
    store.save(response(created_at=(T0 + timedelta(hours=2)).replace(tzinfo=plus_two),
                        expires_at=(T0 + DAY).replace(tzinfo=UTC)))
    found = store.get(LONG_ID, "proj-a", (T0 + timedelta(hours=3)).replace(tzinfo=plus_two))
    assert found is not None
    assert (found.created_at, found.expires_at) == (T0, T0 + DAY)


def test_another_projects_id_is_not_found(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    store.save(response(project="proj-a"))
    assert store.get(LONG_ID, "proj-b", T0) is None
    assert store.get("resp_unknown", "proj-a", T0) is None
    # The same id in two projects: two rows, each project sees its own.
    store.save(response(project="proj-b", agent_id="agent-b"))
    found_a, found_b = store.get(LONG_ID, "proj-a", T0), store.get(LONG_ID, "proj-b", T0)
    assert found_a is not None and found_a.agent_id == "agent-1"
    assert found_b is not None and found_b.agent_id == "agent-b"


@pytest.mark.parametrize("bad_id", ["", "x" * 401, "resp_\x00", "resp_\ud800", 7])
def test_an_id_no_database_could_hold_is_unknown(ledger_engine: Engine, bad_id: object) -> None:
    store = ResponseStore(ledger_engine)
    store.save(response())
    assert store.get(bad_id, "proj-a", T0) is None  # type: ignore[arg-type]
    assert store.get(LONG_ID, bad_id, T0) is None  # type: ignore[arg-type]


def test_expired_is_not_found_and_purged(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    store.save(response("resp_short", expires_at=T0 + timedelta(hours=1)))
    store.save(response("resp_long", expires_at=T0 + DAY))
    store.save(response("resp_other", project="proj-b", expires_at=T0 + timedelta(minutes=30)))
    at_expiry = T0 + timedelta(hours=1)
    assert store.get("resp_short", "proj-a", at_expiry - timedelta(seconds=1)) is not None
    assert store.get("resp_short", "proj-a", at_expiry) is None  # expires_at is exclusive
    assert store.get("resp_long", "proj-a", at_expiry) is not None
    assert store.purge(at_expiry) == 2  # across projects
    assert rows(ledger_engine) == 1
    assert store.purge(at_expiry) == 0
    assert store.get("resp_long", "proj-a", at_expiry) is not None
    assert store.purge(T0 + 2 * DAY) == 1
    assert rows(ledger_engine) == 0


def test_saving_the_same_id_again_replaces_it(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    store.save(response())
    newer = response(request_id="req-0002", deployment_id=None, expires_at=T0 + 2 * DAY,
                     output=[{"type": "message", "role": "assistant", "content": []}],
                     response={"id": LONG_ID, "status": "incomplete"})
    store.save(newer)
    assert rows(ledger_engine) == 1
    assert store.get(LONG_ID, "proj-a", T0 + DAY + timedelta(hours=1)) == newer


def test_a_long_conversation_round_trips(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    items: list[dict[str, object]] = []
    for turn in range(100):  # 200 items: a tool call and its output per turn
        items.append({"type": "function_call", "call_id": f"call_{turn}", "name": "read_file",
                      "arguments": f'{{"path": "src/{turn}.py"}}'})
        items.append({"type": "function_call_output", "call_id": f"call_{turn}",
                      "output": f"line ü€ {turn}\n" * 50})
    stored = response(input=items)
    store.save(stored)
    found = store.get(LONG_ID, "proj-a", T0)
    assert found is not None and len(found.input) == 200
    assert found.input == items  # order and every value kept


@pytest.mark.parametrize(("changes", "message"), [
    ({"input": [{"type": "message", "content": "a\x00b"}]}, r"input\[0\]\['content'\].*NUL"),
    ({"output": [{"text": "\udc00"}]}, "unpaired surrogate"),
    ({"response": {"temperature": math.nan}}, r"response\['temperature'\] is nan"),
    ({"response": {"created": datetime(2026, 1, 1)}}, "response is not JSON"),
    ({"input": ["just text"]}, "input must be a list of items"),
    ({"output": {"type": "message"}}, "output must be a list of items"),
    ({"response": []}, "response must be an object"),
    ({"id": "x" * 401}, "id must be text of 1 to 400"),
    ({"project_id": ""}, "project_id must be text of 1 to 200"),
    ({"agent_id": "a\nb"}, "agent_id contains the control character"),
    ({"request_id": "r" * 65}, "request_id must be text of 1 to 64"),
    ({"provider": 3}, "provider must be text"),
    ({"expires_at": T0}, "would expire when it is created"),
    ({"created_at": "2026-12-07"}, "created_at must be a datetime"),
])
def test_a_value_that_cannot_be_stored_writes_no_row(ledger_engine: Engine,
                                                     changes: dict[str, object],
                                                     message: str) -> None:
    store = ResponseStore(ledger_engine)
    with pytest.raises(InvalidRequest, match=message):
        store.save(response(**changes))  # type: ignore[arg-type]
    assert rows(ledger_engine) == 0


def test_a_bad_replacement_keeps_the_stored_one(ledger_engine: Engine) -> None:
    store = ResponseStore(ledger_engine)
    stored = response()
    store.save(stored)
    with pytest.raises(InvalidRequest):
        store.save(replace(stored, output=[{"text": "\x00"}]))
    assert store.get(LONG_ID, "proj-a", T0) == stored

