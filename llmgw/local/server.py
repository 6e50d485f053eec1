"""The local model served by llama.cpp (docs/providers.md); its weights: `llmgw.local.fetch`.

`LocalServer` runs llama.cpp's OpenAI-compatible server (`xllamacpp`, extra `llmgw[local]`) in
a child process, `python -m llmgw.local.server serve ...`, and returns once `/health` answers.
A child process because `xllamacpp.Server(...)` holds the GIL for the whole model load
(seconds: an event loop in the same process would freeze), the memory it maps are given back
when it exits, a crash in native code cannot take the caller down, and SIGTERM/cleanup are
the operating system's. The child exits by itself when its parent goes away (it watches its
stdin pipe), so no server outlives its owner.

Importing this module is cheap: no LiteLLM, no xllamacpp (only the child imports it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from llmgw.errors import LLMGatewayError
from llmgw.local.fetch import MODEL_ALIAS, output_tail

__all__ = ["LocalServer", "LocalServerError", "default_threads"]


class LocalServerError(LLMGatewayError):
    """The local model server could not start or stopped unexpectedly."""


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
        cmd = [sys.executable, "-m", "llmgw.local.server", "serve", "--model", str(self.model_path),
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
    return output_tail("\n".join(errors), 4) if errors else output_tail(text, 6)


def _client_url(url: str) -> str:
    """The URL a local client should use: a wildcard listen address becomes loopback."""
    url = url.rstrip("/")
    if not url.startswith("http"):
        url = "http://" + url
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


# --------------------------------------------------------------------------- the child

def _serve_main(argv: Sequence[str]) -> int:
    """`python -m llmgw.local.server serve`: load the model, print one ready line (JSON) on stdout,
    serve until SIGTERM/SIGINT (or stdin closes, with --watch-stdin)."""
    ap = argparse.ArgumentParser(prog="python -m llmgw.local.server")
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
