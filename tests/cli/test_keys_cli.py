"""`llmgw keys create --rpm/--tpm/--max-parallel`, `keys list` (limits, defaults by agent type,
keys near expiry), `keys rotate`."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from llmgw.cli import app
from llmgw.ledger.api_keys import ApiKeyStore
from llmgw.ledger.engine import make_engine
from tests.support import sim_config_dict

runner = CliRunner()


def test_create_list_rotate(tmp_path, migrated_ledger_url):
    url = migrated_ledger_url
    config = sim_config_dict("http://127.0.0.1:9", "http://127.0.0.1:9", url)
    config["llmgw"]["key_limits"] = {"*": {"rpm": 100}, "qa-engineer": {"max_parallel": 3}}
    path = tmp_path / "model_list.yaml"
    path.write_text(yaml.safe_dump(config))
    made = runner.invoke(app, ["keys", "create", "--project", "p", "--agent", "a", "--rpm", "10",
                               "--max-parallel", "2", "--expires", "3d", "--ledger-url", url])
    assert made.exit_code == 0, made.output
    secret = made.output.strip().splitlines()[-1]
    typed = runner.invoke(app, ["keys", "create", "--project", "p", "--agent", "b",
                                "--agent-type", "qa-engineer", "--ledger-url", url])
    assert typed.exit_code == 0, typed.output
    bad = runner.invoke(app, ["keys", "create", "--project", "p", "--agent", "c", "--rpm", "0",
                              "--ledger-url", url])
    assert bad.exit_code != 0
    listed = runner.invoke(app, ["keys", "list", "--format", "json", "--config", str(path),
                                 "--ledger-url", url])
    assert listed.exit_code == 0, listed.output
    keys = {k["agent_id"]: k for k in json.loads(listed.output)}
    assert keys["a"]["limits"] == {"rpm": 10, "tpm": None, "max_parallel": 2}
    assert keys["b"]["limits"] == {"rpm": 100, "tpm": None, "max_parallel": 3}  # the defaults
    assert (keys["a"]["expiring_soon"], keys["b"]["expiring_soon"]) == (True, False)
    rotated = runner.invoke(app, ["keys", "rotate", str(keys["a"]["id"]), "--overlap", "1h",
                                  "--ledger-url", url])
    assert rotated.exit_code == 0, rotated.output
    successor = rotated.output.strip().splitlines()[-1]
    assert successor != secret
    engine = make_engine(url)
    try:
        store = ApiKeyStore(engine)
        new, old = store.authenticate(successor), store.authenticate(secret)
        assert old is not None and old.rotated_to == new.id  # inside the overlap
        assert (new.rpm, new.max_parallel, new.agent_id, new.limit_id) == (10, 2, "a", old.id)
    finally:
        engine.dispose()
    table = runner.invoke(app, ["keys", "list", "--config", str(path), "--ledger-url", url])
    assert "expiring soon" in table.output and f"rotated to {new.id}" in table.output
