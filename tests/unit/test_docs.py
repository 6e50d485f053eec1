"""The documentation site keeps up with the code: every page is in the nav, every LLMGW_*
variable the code reads is in the configuration table, every error class in the API page."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml

import llmgw.errors
from llmgw.server.settings import ENV_PREFIX, ServerSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ENV_NAME = re.compile(r"\bLLMGW_[A-Z0-9_]+")


def nav_pages(entries: object) -> set[str]:
    """Every page path named in mkdocs.yml's nav, at any depth."""
    if isinstance(entries, str):
        return {entries}
    if isinstance(entries, list):
        return set().union(*(nav_pages(e) for e in entries))
    if isinstance(entries, dict):
        return set().union(*(nav_pages(v) for v in entries.values()))
    return set()


def env_vars_read() -> set[str]:
    """LLMGW_* names in llmgw's source; a prefix (`LLMGW_SERVE_`) stands for its settings."""
    found: set[str] = set()
    for path in (ROOT / "llmgw").rglob("*.py"):
        found |= set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    prefixes = {name for name in found if name.endswith("_")}
    assert prefixes <= {ENV_PREFIX}, f"an LLMGW_ prefix this test does not expand: {prefixes}"
    return (found - prefixes) | {ENV_PREFIX + f.upper() for f in ServerSettings.model_fields}


def table_first_column(markdown: str) -> set[str]:
    """The backticked names in the first cell of each table row."""
    cells = (line.split("|")[1] for line in markdown.splitlines() if line.startswith("| `"))
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if "gen" not in p.relative_to(DOCS).parts}
    assert pages, "no pages found under docs/"
    missing = pages - nav_pages(config["nav"])
    assert not missing, f"pages missing from mkdocs.yml's nav: {sorted(missing)}"


def test_every_environment_variable_is_in_the_configuration_table() -> None:
    documented = table_first_column((DOCS / "configuration.md").read_text(encoding="utf-8"))
    read = env_vars_read()
    assert {"LLMGW_CONFIG", "LLMGW_LITELLM_LOG_LEVEL", "LLMGW_SERVE_GRACE_S"} <= read
    missing = read - documented
    assert not missing, f"LLMGW_* variables missing from docs/configuration.md: {sorted(missing)}"


def test_every_error_class_is_in_the_python_api_page() -> None:
    classes = {name for name, obj in inspect.getmembers(llmgw.errors, inspect.isclass)
               if issubclass(obj, llmgw.errors.LLMGatewayError)
               and obj.__module__ == llmgw.errors.__name__}
    documented = table_first_column((DOCS / "python-api.md").read_text(encoding="utf-8"))
    assert "LLMGatewayError" in classes
    missing = classes - documented
    assert not missing, f"error classes missing from docs/python-api.md's table: {sorted(missing)}"
