"""API keys: issued once, stored as hashes, scoped, revocable, expiring; `llmgw keys` CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from llmgw.cli import app
from llmgw.errors import InvalidRequest
from llmgw.ledger.api_keys import KEY_PREFIX, ApiKeyStore, hash_key
from llmgw.ledger.engine import make_engine
from llmgw.ledger.models import ApiKey
from llmgw.ledger.timespec import utcnow

runner = CliRunner()


@pytest.fixture
def store(migrated_ledger_url):
    engine = make_engine(migrated_ledger_url)
    yield ApiKeyStore(engine)
    engine.dispose()


def test_key_is_random_prefixed_and_stored_as_hash_only(store):
    a = store.create(project_id="p", agent_id="dev-1", agent_type="software-engineer")
    b = store.create(project_id="p", agent_id="dev-1")
    assert a.secret.startswith(KEY_PREFIX) and a.secret != b.secret
    # 32 random bytes in url-safe base64: 43 characters, 256 bits
    assert len(a.secret) - len(KEY_PREFIX) == 43
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(*ApiKey.__table__.columns))]
    stored = json.dumps(rows, default=str)
    assert a.secret not in stored and a.secret[len(KEY_PREFIX) + 6:] not in stored
    assert {r["hash"] for r in rows} == {hash_key(a.secret), hash_key(b.secret)}
    assert rows[0]["prefix"] == a.secret[:12]


def test_authenticate_scopes_revoke_and_expiry(store):
    agent = store.create(project_id="p", agent_id="dev-1", agent_type="qa-engineer")
    anyone = store.create(project_id="p")
    admin = store.create(project_id=None, admin=True)
    info = store.authenticate(agent.secret)
    assert (info.project_id, info.agent_id, info.agent_type, info.any_agent, info.admin) == (
        "p", "dev-1", "qa-engineer", False, False)
    assert info.last_used_at is not None
    assert store.authenticate(anyone.secret).any_agent
    assert store.authenticate(admin.secret).admin
    assert store.authenticate(agent.secret + "x") is None
    assert store.authenticate("sk-not-ours") is None
    assert store.authenticate(KEY_PREFIX) is None
    revoked = store.revoke(agent.info.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert store.authenticate(agent.secret) is None
    assert store.revoke(10_000) is None
    short = store.create(project_id="p", agent_id="x", expires_in=timedelta(hours=1))
    assert store.authenticate(short.secret) is not None
    assert store.authenticate(short.secret, now=utcnow() + timedelta(hours=2)) is None


def test_create_refuses_ambiguous_scopes(store):
    with pytest.raises(InvalidRequest):
        store.create(project_id=None)
    with pytest.raises(InvalidRequest):
        store.create(project_id="p", admin=True)
    with pytest.raises(InvalidRequest):
        store.create(project_id="p", agent_type="qa-engineer")
    with pytest.raises(InvalidRequest):
        store.create(project_id=" ")


def test_cli_create_prints_key_last_list_hides_it_revoke(migrated_ledger_url, monkeypatch,
                                                        tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMGW_CONFIG", raising=False)
    url = ["--ledger-url", migrated_ledger_url]
    result = runner.invoke(app, ["keys", "create", "--project", "p", "--agent", "dev-1",
                                 "--agent-type", "qa-engineer", "--name", "ci",
                                 "--expires", "30d", *url])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith(KEY_PREFIX)
    listed = runner.invoke(app, ["keys", "list", "--format", "json", *url])
    assert listed.exit_code == 0 and secret not in listed.output
    (row,) = json.loads(listed.output)
    assert (row["project_id"], row["agent_id"], row["name"]) == ("p", "dev-1", "ci")
    assert row["expires_at"] is not None and "hash" not in row
    table = runner.invoke(app, ["keys", "list", *url])
    assert table.exit_code == 0 and secret not in table.output and secret[:12] in table.output
    assert runner.invoke(app, ["keys", "revoke", str(row["id"]), *url]).exit_code == 0
    engine = make_engine(migrated_ledger_url)
    try:
        assert ApiKeyStore(engine).authenticate(secret) is None
    finally:
        engine.dispose()
    assert runner.invoke(app, ["keys", "revoke", "999", *url]).exit_code == 1


@pytest.mark.parametrize("args", [
    ["--project", "p"],                                   # neither --agent nor --any-agent
    ["--project", "p", "--agent", "a", "--any-agent"],    # both
    ["--admin", "--project", "p"],
    ["--agent", "a"],                                     # no project
    ["--project", "p", "--any-agent", "--expires", "soon"],
])
def test_cli_create_usage_errors(args, migrated_ledger_url):
    result = runner.invoke(app, ["keys", "create", *args, "--ledger-url", migrated_ledger_url])
    assert result.exit_code == 2
    assert KEY_PREFIX not in result.output
