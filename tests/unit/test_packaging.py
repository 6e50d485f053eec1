"""Every package ships: the wheel's package list names each llmgw subpackage and the migrations."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_for_the_wheel():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "llmgw").rglob("__init__.py")}
    found |= {"llmgw_migrations" + ".".join(("",) + p.parent.relative_to(REPO / "migrations").parts)
              for p in (REPO / "migrations").rglob("__init__.py")}
    assert set(config["packages"]) == found
    assert config["package-dir"] == {"llmgw_migrations": "migrations"}


def test_litellm_is_pinned_exactly():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "litellm==1.106.2" in deps
