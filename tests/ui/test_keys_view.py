"""`/ui/keys`: a project's keys with their limits, the ones about to expire first and marked,
so they are rotated before their agents are refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.ui.browser import Browser
from tests.ui.conftest import Filled


def _rows(browser: Browser) -> list[list[str]]:
    return browser.js("[...document.querySelectorAll('#keys tbody tr')]"
                      ".map(r => [...r.cells].map(c => c.textContent.trim()))")


def test_keys_near_expiry_come_first_and_other_projects_keys_never_show(
        filled: Filled, tmp_path: Path) -> None:
    soon = filled.keys.create(project_id="proj-a", agent_id="dev-9", name="expiring",
                              expires_in=timedelta(days=2), rpm=30)
    later = filled.keys.create(project_id="proj-a", agent_id="dev-8", name="later",
                               expires_in=timedelta(days=60))
    other = filled.keys.create(project_id="proj-b", agent_id="dev-7", name="theirs",
                               expires_in=timedelta(days=1))
    with Browser(tmp_path / "profile") as b:
        b.goto(filled.base_url + "/ui/keys")
        b.submit("form[action='/ui/login']", {"key": filled.key("proj-a")})
        b.goto(filled.base_url + "/ui/keys")
        rows = _rows(b)
    ids = [int(r[0]) for r in rows]
    first = rows[0]
    assert first[0] == str(soon.info.id) and first[-1] == "expiring soon" and first[5] == "30"
    assert str(later.info.id) in [r[0] for r in rows]
    assert next(r for r in rows if r[0] == str(later.info.id))[-1] == "live"
    assert other.info.id not in ids  # another project's key is not this session's to see
    expected = filled.scalar("SELECT COUNT(*) FROM api_keys WHERE project_id = 'proj-a'")
    assert len(rows) == expected
