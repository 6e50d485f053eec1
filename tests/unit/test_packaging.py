"""Every file ships: a wheel built from the tree holds each file of llmgw/ (subpackages, the
migrations with their SQL and mako files, templates, static files)."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _package_files(root: Path) -> set[str]:
    """Every file of llmgw/ a checkout holds, as a wheel names it (no caches, no bytecode)."""
    return {p.relative_to(root).as_posix() for p in (root / "llmgw").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_ships_every_file_of_the_package(tmp_path: Path) -> None:
    # Built from a copy: the build's own folders (build/, *.egg-info) stay out of the checkout.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "llmgw", source / "llmgw",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels), str(source)], check=True, timeout=240)
    (wheel,) = wheels.glob("llmgw-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")}
    expected = _package_files(source)
    assert {"llmgw/ledger/migrations/env.py", "llmgw/ledger/migrations/script.py.mako",
            "llmgw/ledger/migrations/versions/0017_baseline.py",
            "llmgw/ledger/migrations/legacy/0001_usage_events.py",
            "llmgw/ledger/migrations/sql/llmgw_settle_many.v4.sql",
            "llmgw/ledger/migrations/legacy/sql/llmgw_settle.v3.sql",
            "llmgw/server/templates/base.html"} <= expected
    assert expected - shipped == set()
    assert {n.split("/")[0] for n in shipped} == {"llmgw", wheel.name.rsplit("-", 3)[0] + ".dist-info"}


def test_litellm_is_pinned_exactly():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "litellm==1.106.2" in deps
