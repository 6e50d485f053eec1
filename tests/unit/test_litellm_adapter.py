"""LiteLLM is imported only inside `llmgw._litellm`: every other module calls its adapter, so a
LiteLLM upgrade is audited in one package. Imports are found by parsing (`ast`), wherever they
are: at the top, inside a function, or through `importlib.import_module` / `__import__`."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "llmgw"
ADAPTER = PACKAGE / "_litellm"
_IMPORTERS = frozenset({"import_module", "__import__"})


def _is_litellm(name: str | None) -> bool:
    return name is not None and (name == "litellm" or name.startswith("litellm."))


def litellm_imports(source: str) -> list[tuple[int, str]]:
    """(line, what) of each import of litellm in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_litellm(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_litellm(node.module):
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (name in _IMPORTERS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str) and _is_litellm(first.value)):
                found.append((node.lineno, f"{name}({first.value!r})"))
    return found


@pytest.mark.parametrize("source, expected", [
    ("import litellm", ["import litellm"]),
    ("import os, litellm.utils as u", ["import litellm.utils"]),
    ("from litellm import Router", ["from litellm import ..."]),
    ("from litellm.types.router import X", ["from litellm.types.router import ..."]),
    ("def f():\n    from litellm.utils import g\n    return g", ["from litellm.utils import ..."]),
    ("class C:\n    def m(self):\n        import litellm", ["import litellm"]),
    ("import importlib\nm = importlib.import_module('litellm.router')",
     ["import_module('litellm.router')"]),
    ("from importlib import import_module\nimport_module('litellm')", ["import_module('litellm')"]),
    ("m = __import__('litellm')", ["__import__('litellm')"]),
    ("import litellmx\nfrom llmgw._litellm import import_litellm\nfrom . import litellm", []),
    ("from llmgw._litellm.errors import Timeout\nimportlib.import_module('json')", []),
])
def test_the_finder_sees_every_form_of_import(source: str, expected: list[str]) -> None:
    assert [what for _, what in litellm_imports(textwrap.dedent(source))] == expected


def test_no_module_outside_the_adapter_imports_litellm() -> None:
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if ADAPTER not in p.parents]
    assert len(modules) > 20  # the walk did find the package
    offenders = [f"{p.relative_to(PACKAGE.parent)}:{line}: {what}"
                 for p in modules for line, what in litellm_imports(p.read_text())]
    assert not offenders, ("LiteLLM is imported outside llmgw/_litellm/; import what you need "
                           "from a module of llmgw._litellm instead:\n" + "\n".join(offenders))


def test_the_adapter_itself_is_found_importing_litellm() -> None:
    """The walk reads real files: the adapter's own imports are seen (and allowed there)."""
    assert litellm_imports((ADAPTER / "errors.py").read_text())
