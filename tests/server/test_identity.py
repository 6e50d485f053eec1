"""`caller_of`: the key decides who calls; the body's user is an end user or (any-agent keys)
the agent, never Claude Code's per-session id; sessions come from the header or Claude Code."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from starlette.requests import Request

from llmgw.ledger.api_keys import KeyInfo
from llmgw.server.auth import caller_of, claude_code_user
from llmgw.server.errors import FrontError

SESSION = "5f0c7e1a-3b7d-4a4e-9c55-0d5d1f3e2b11"
ACCOUNT = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
DEVICE = "d" * 64
CC_JSON = json.dumps({"device_id": DEVICE, "account_uuid": "", "session_id": SESSION},
                     separators=(",", ":"))
CC_JSON_ACCOUNT = json.dumps({"device_id": DEVICE, "account_uuid": ACCOUNT,
                              "session_id": SESSION})
CC_LEGACY = f"user_{DEVICE}_account_{ACCOUNT}_session_{SESSION}"
CC_LEGACY_NO_ACCOUNT = f"user_{DEVICE}_account__session_{SESSION}"


def key(agent: str | None = "dev-1", agent_type: str | None = None, *,
        admin: bool = False) -> KeyInfo:
    return KeyInfo(id=1, prefix="llmgw-abcdef", project_id=None if admin else "proj",
                   agent_id=agent, agent_type=agent_type, name=None, admin=admin,
                   created_at=datetime(2026, 12, 1), expires_at=None, revoked_at=None,
                   last_used_at=None)


def request(**headers: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/messages",
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


def refusal(*args, **kwargs) -> FrontError:
    with pytest.raises(FrontError) as info:
        caller_of(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("kwargs", [{"user": "alice@example.com"},
                                    {"anthropic_user_id": "alice@example.com"}])
def test_agent_key_body_user_is_the_end_user_never_another_agent(kwargs):
    c = caller_of(key("dev-1", "qa"), request(), **kwargs)
    assert (c.project_id, c.agent_id, c.agent_type, c.end_user, c.session_id) == (
        "proj", "dev-1", "qa", "alice@example.com", None)


def test_agent_key_still_refuses_a_header_naming_another_agent_or_project():
    assert refusal(key(), request(**{"X-LLMGW-Agent": "dev-2"})).status == 403
    assert refusal(key(), request(**{"X-LLMGW-Project": "other"})).status == 403
    assert refusal(key(agent_type="qa"), request(**{"X-LLMGW-Agent-Type": "ops"})).status == 403
    assert caller_of(key(), request(**{"X-LLMGW-Agent": "dev-1"})).agent_id == "dev-1"


def test_admin_key_calls_no_model():
    assert refusal(key(None, admin=True), request(), user="x").code == \
        "admin_key_reads_usage_only"


def test_any_agent_key_header_wins_then_user():
    anyone = key(None)
    c = caller_of(anyone, request(**{"X-LLMGW-Agent": "bot-1"}), user="alice")
    assert (c.agent_id, c.end_user) == ("bot-1", "alice")
    c = caller_of(anyone, request(), user="bot-2")
    assert (c.agent_id, c.end_user) == ("bot-2", None)
    c = caller_of(anyone, request(), anthropic_user_id="bot-3")
    assert (c.agent_id, c.end_user) == ("bot-3", None)
    missing = refusal(anyone, request())
    assert (missing.status, missing.code) == (400, "agent_required")
    assert "X-LLMGW-Agent" in missing.message.replace("x-llmgw-agent", "X-LLMGW-Agent")


@pytest.mark.parametrize(("user_id", "end_user"), [
    (CC_JSON, DEVICE), (CC_JSON_ACCOUNT, ACCOUNT), (CC_LEGACY, ACCOUNT),
    (CC_LEGACY_NO_ACCOUNT, DEVICE)])
def test_claude_code_user_id_is_never_an_agent_name(user_id, end_user):
    anyone = key(None)
    err = refusal(anyone, request(), anthropic_user_id=user_id)
    assert (err.status, err.code, err.param) == (400, "agent_required", "metadata.user_id")
    assert 'ANTHROPIC_CUSTOM_HEADERS="X-LLMGW-Agent: <name>"' in err.message
    # Passed as `user` (as a front may), the same rule holds.
    assert refusal(anyone, request(), user=user_id).code == "agent_required"
    c = caller_of(anyone, request(**{"X-LLMGW-Agent": "claude-1"}), anthropic_user_id=user_id)
    assert (c.agent_id, c.end_user, c.session_id) == ("claude-1", end_user, SESSION)
    c = caller_of(key("dev-1"), request(), anthropic_user_id=user_id)
    assert (c.agent_id, c.end_user, c.session_id) == ("dev-1", end_user, SESSION)


def test_session_header_wins_over_claude_codes_session():
    c = caller_of(key(), request(**{"X-LLMGW-Session": "run-42"}), anthropic_user_id=CC_JSON)
    assert c.session_id == "run-42"
    assert caller_of(key(), request(**{"X-LLMGW-Session": "run-43"})).session_id == "run-43"
    assert caller_of(key(), request(), user="alice").session_id is None


@pytest.mark.parametrize("text", [
    "plain-user", "{not json", '{"name": "x"}', '["device_id"]', "user_abc_session_x",
    '{"device_id": 5, "session_id": "s"}'])
def test_other_user_ids_are_not_claude_codes(text):
    assert claude_code_user(text) is None


@pytest.mark.parametrize(("headers", "kwargs", "param"), [
    ({"X-LLMGW-Session": "s" * 201}, {}, "x-llmgw-session"),
    ({"X-LLMGW-Agent": "bad\u0085agent"}, {}, "x-llmgw-agent"),
    ({}, {"user": "u" * 201}, "user"),
    ({}, {"user": "tab\there"}, "user"),
    ({}, {"anthropic_user_id": "   "}, "metadata.user_id"),
])
def test_ids_are_validated_like_ledger_ids(headers, kwargs, param):
    for k in (key(), key(None)):
        err = refusal(k, request(**headers), **kwargs)
        assert (err.status, err.param) == (400, param), err.message
