"""Open a report in headless Chromium and say what a reader would see: console errors, uncaught
exceptions, failed loads, each image's decoded size and colours, and a screenshot.

It speaks the DevTools protocol over Chromium's `--remote-debugging-pipe` (JSON messages ending
in a NUL byte, read from fd 3 and written to fd 4), so it needs no driver, no WebSocket library
and no network: only a `chromium` binary (Debian's package; ROBUSTART_CHROMIUM names another).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Per image: whether it decoded, its size, and how many distinct colours a sparse pixel sample
# holds (1 = a blank image). Runs in the page, after load.
_IMAGES_JS = """(() => Array.from(document.images).map(img => {
  let colors = -1;
  try {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length && seen.size < 256; i += 4 * 13) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    colors = seen.size;
  } catch (e) { colors = -2; }
  const r = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
          shown_width: r.width, shown_height: r.height, colors: colors, src_prefix: img.src.slice(0, 22)};
}))()"""

_PAGE_JS = """(() => ({title: document.title,
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  empty: Array.from(document.querySelectorAll('section .empty')).map(e => e.closest('section').id),
  resources: performance.getEntriesByType('resource').map(e => e.name)}))()"""


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    env = os.environ.get("ROBUSTART_CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    warnings: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    page: dict = field(default_factory=dict)
    screenshot: Path | None = None


class _Pipe:
    """A DevTools session over the pipe: commands get their answers; events are collected."""

    def __init__(self, proc, write_fd: int, read_fd: int):
        self.proc, self.write_fd = proc, write_fd
        self.inbox: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self.reader.start()

    def _read(self, fd: int) -> None:
        buf = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.inbox.put(None)
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            for m in msgs:
                self.inbox.put(json.loads(m))

    def _next(self, deadline: float) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError("Chromium did not answer in time")
        try:
            msg = self.inbox.get(timeout=left)
        except queue.Empty:
            raise BrowserError("Chromium did not answer in time") from None
        if msg is None:
            raise BrowserError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
        return msg

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise BrowserError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if "method" in m:
                self.events.append(m)
                if m["method"] == method:
                    return m


def _launch(chromium: str, profile: str):
    to_r, to_w = os.pipe()  # we write, Chromium reads on fd 3
    from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read

    def child_fds():
        a, b = os.dup(to_r), os.dup(from_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    args = [chromium, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-sandbox",
            "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--hide-scrollbars", "--mute-audio",
            "about:blank"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=child_fds, close_fds=False)
    os.close(to_r)
    os.close(from_w)
    return proc, _Pipe(proc, to_w, from_r), (to_w, from_r)


def _describe(event: dict) -> tuple[str, str] | None:
    """(severity, text) of a console / log / exception event; None for the rest."""
    p = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        return "error", f"exception: {d.get('text')} {(d.get('exception') or {}).get('description', '')}".strip()
    if event["method"] == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        if p.get("type") in ("error", "assert"):
            return "error", f"console.{p['type']}: {text}"
        if p.get("type") == "warning":
            return "warning", f"console.warn: {text}"
    if event["method"] == "Log.entryAdded":
        e = p.get("entry", {})
        sev = {"error": "error", "warning": "warning"}.get(e.get("level"))
        if sev:
            return sev, f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip()
    return None


def check_page(path: str | Path, screenshot: str | Path | None = None, width: int = 1280, max_height: int = 12000,
               timeout: float = 60) -> PageCheck:
    """Load a local HTML file in headless Chromium and report what happened (see PageCheck)."""
    chromium = find_chromium()
    if not chromium:
        raise BrowserError("no Chromium found (install Debian's `chromium` package, or set ROBUSTART_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    check = PageCheck(url)
    with tempfile.TemporaryDirectory(prefix="robustart-chromium-") as profile:
        proc, cdp, fds = _launch(chromium, profile)
        try:
            target = next(t for t in cdp.send("Target.getTargets", timeout=timeout)["targetInfos"] if t["type"] == "page")
            sid = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.send(f"{domain}.enable", session=sid)
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            cdp.events.clear()  # what about:blank said before is not the report's
            nav = cdp.send("Page.navigate", {"url": url}, session=sid)
            if nav.get("errorText"):
                check.errors.append(f"navigation: {nav['errorText']}")
            cdp.wait_event("Page.loadEventFired", timeout=timeout)
            ev = lambda expr: cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},  # noqa: E731
                                       session=sid)["result"].get("value")
            check.images = ev(_IMAGES_JS) or []
            check.page = ev(_PAGE_JS) or {}
            if screenshot is not None:
                h = cdp.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]["height"]
                height = int(min(max(h, 1), max_height))
                cdp.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=sid)
                shot = cdp.send("Page.captureScreenshot",
                                {"format": "png", "captureBeyondViewport": True,
                                 "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
                                session=sid, timeout=timeout)
                import base64

                check.screenshot = Path(screenshot)
                check.screenshot.write_bytes(base64.b64decode(shot["data"]))
            for e in cdp.events:
                d = _describe(e)
                if d:
                    (check.errors if d[0] == "error" else check.warnings).append(d[1])
            try:
                cdp.send("Browser.close", timeout=10)
            except BrowserError:
                pass  # it may close the pipe before answering
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
    return check
