"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4), no extra library.

The browser signs in through the page's own form, so its cookie jar holds the session the
way a person's would; pages are read from the live DOM and photographed as PNG."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Self

TIMEOUT_S = 60.0


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, profile: Path, *, width: int = 1280, height: int = 900) -> None:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed: `make test` installs it as root, "
                               "or run `apt-get install chromium`")
        pipe_r, self._to_w = os.pipe()
        self._from_r, pipe_w = os.pipe()
        # Above 9, so moving them to 3 and 4 (where Chromium expects them) clobbers neither.
        to_r = fcntl.fcntl(pipe_r, fcntl.F_DUPFD_CLOEXEC, 10)
        from_w = fcntl.fcntl(pipe_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(pipe_r)
        os.close(pipe_w)
        script = f'exec "$0" "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, exe, "--headless=new", "--remote-debugging-pipe",
             "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--disable-background-networking", "--disable-sync", "--mute-audio",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._next = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # -- protocol ------------------------------------------------------------------------

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._events.put({"method": "_closed"})
                for q in list(self._replies.values()):
                    q.put({"error": {"message": "browser closed"}})
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    waiting = self._replies.get(message["id"])
                    if waiting is not None:
                        waiting.put(message)
                else:
                    self._events.put(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ident = self._next
            self._replies[ident] = queue.Queue()
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_w, json.dumps(message).encode() + b"\0")
        reply = self._replies[ident].get(timeout=TIMEOUT_S)
        del self._replies[ident]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})  # type: ignore[no-any-return]

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page's session."""
        return self.call(method, self.session, **params)

    def _wait_event(self, method: str) -> dict[str, Any]:
        while True:
            event = self._events.get(timeout=TIMEOUT_S)
            if event.get("method") == "_closed":
                raise RuntimeError("the browser exited")
            if event.get("method") == method and event.get("sessionId") == self.session:
                return event

    def _drain_events(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    # -- what a test does ----------------------------------------------------------------

    def goto(self, url: str) -> str:
        """Load `url` and wait for its load event; returns the final URL."""
        self._drain_events()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")
        self._wait_event("Page.loadEventFired")
        return self.url()

    def submit(self, form_selector: str, values: dict[str, str]) -> str:
        """Fill a form's fields and submit it as a person would; waits for the next page."""
        self._drain_events()
        fills = "".join(f"f.elements[{json.dumps(k)}].value = {json.dumps(v)};"
                        for k, v in values.items())
        self.js(f"(() => {{ const f = document.querySelector({json.dumps(form_selector)}); "
                f"{fills} f.requestSubmit(); return true; }})()")
        self._wait_event("Page.loadEventFired")
        return self.url()

    def js(self, expression: str) -> Any:
        """Evaluate in the page (DevTools' evaluation is not the page's script: the pages'
        CSP forbids any)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def url(self) -> str:
        return str(self.js("location.href"))

    def html(self) -> str:
        return str(self.js("document.documentElement.outerHTML"))

    def cookies(self) -> list[dict[str, Any]]:
        return self.send("Network.getCookies")["cookies"]  # type: ignore[no-any-return]

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"],
                               "height": size["height"], "scale": 1})
        data = base64.b64decode(shot["data"])
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, "not a picture"
        path.write_bytes(data)
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001, S110 - it may already be gone
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(20)
        os.close(self._to_w)
        self._reader.join(5)
        os.close(self._from_r)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
