"""A headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no driver, no
websocket library. Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4."""

import base64
import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe",
         # a fake microphone (a beep) that needs no permission prompt, for the recording test
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def find_chromium() -> str | None:
    return next((path for b in BINARIES if (path := shutil.which(b))), None)


class CDPError(RuntimeError):
    pass


class Browser:
    """One Chromium process and one page. `call()` sends a command to the page and waits for its reply."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        # the shell moves our stdin/stdout pipes to fds 3/4, where Chromium expects them
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2', binary, *FLAGS,
                                      f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._next = 0
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name="cdp-reader").start()
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=None)["sessionId"]
        for domain in ("Page", "Runtime", "DOM"):
            self.call(f"{domain}.enable")

    def _read(self) -> None:
        buf = b""
        while chunk := self.proc.stdout.read1(65536):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        box = self._replies.get(msg["id"])
                    if box is not None:
                        box.put(msg)

    def call(self, method: str, params: dict | None = None, session: str | None | bool = True) -> dict:
        with self._lock:
            self._next += 1
            msg_id, box = self._next, queue.Queue()
            self._replies[msg_id] = box
        self._send(msg_id, method, params, session)
        try:
            reply = box.get(timeout=self.timeout)
        except queue.Empty:
            raise CDPError(f"no reply to {method} within {self.timeout} s") from None
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _send(self, msg_id: int, method: str, params: dict | None, session: str | None | bool) -> None:
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session is True:
            msg["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in out:
            raise CDPError(f"{expression[:60]}: {out['exceptionDetails'].get('text')} "
                           f"{out['exceptionDetails'].get('exception', {}).get('description', '')}")
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, poll: float = 0.1):
        """Poll until the expression is truthy (errors count as not yet: the page may be loading); the last value
        or error is in the timeout's message."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression)
            except CDPError as e:
                value = e
            if value and not isinstance(value, CDPError):
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for {expression!r} (last: {value!r})")
            time.sleep(poll)

    def goto(self, url: str) -> None:
        """Open `url` and wait until it has loaded."""
        self.call("Page.navigate", {"url": url})
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def set_files(self, selector: str, paths: list[str]) -> None:
        """What picking files in the file dialog does (fires the input's change event)."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": paths})

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, scrolled into view first (as a person would)."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._send(0, "Browser.close", None, None)  # no reply to wait for: the browser exits
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
