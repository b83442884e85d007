"""A headless Chromium driven over the DevTools protocol, with no dependency beyond Python.

Chromium speaks the protocol over a pair of pipes (``--remote-debugging-pipe``: it reads
commands on fd 3 and writes replies on fd 4, each message JSON ended by a NUL byte), so
neither a WebDriver binary nor a websocket library is needed. Used by the browser tests
and by benchmarks/bench_page.py. The browser is Debian's ``chromium`` package; a missing
browser is an error for the caller to report, never a reason to skip.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

INSTALL_HINT = (
    "install Debian's browser package: apt-get update && "
    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium"
)


#: key → (code, Windows virtual key code, the text a key press types)
_KEYS = {"Enter": ("Enter", 13, "\r"), "Tab": ("Tab", 9, ""), " ": ("Space", 32, " ")}


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless browser process with one page (tab) attached."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        binary = find_chromium()
        if binary is None:
            raise BrowserError(f"no Chromium on PATH; {INSTALL_HINT}")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="saereg-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_pipes() -> None:  # runs in the child: the protocol's fds are 3 and 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self._proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,  # the only way to place the pipes at fds 3 and 4
            pass_fds=(3, 4),  # kept open (after wire_pipes) while the rest are closed
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank", session=False)["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True, session=False)
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    # ------------------------------------------------------------------ protocol
    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_child, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (status {self._proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    # ------------------------------------------------------------------ page
    def open(self, url: str) -> None:
        """Load `url` afresh and wait for the load event (a URL that differs from the
        current one only in its fragment is reloaded, not just scrolled to)."""
        current = self.eval("location.href").split("#")[0]
        if current == url.split("#")[0]:
            self._events.clear()
            self.call("Page.navigate", url="about:blank")
            self.wait_event("Page.loadEventFired")
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def page_errors(self) -> list[str]:
        """Uncaught exceptions and console errors seen since the last `open`."""
        self.call("Runtime.evaluate", expression="0")  # collect events already sent
        out = []
        for event in self._events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(details.get("exception", {}).get("description") or details["text"])
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
        return out

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); page errors raise."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result["result"].get("value")

    def key(self, key: str) -> None:
        """Press and release one key (Enter, Tab or space) where the focus is, as a
        keyboard would: Enter and space activate buttons, Tab moves the focus."""
        code, key_code, text = _KEYS[key]
        for kind in ("keyDown" if text else "rawKeyDown", "keyUp"):
            extra = {"text": text} if text and kind == "keyDown" else {}
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
                nativeVirtualKeyCode=key_code,
                **extra,
            )

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def image_stats(self, png: bytes) -> dict[str, float]:
        """Decode a PNG with the browser's own decoder (no image library here) and count
        its colours: {"width", "height", "colours" (distinct, sampled), "ink" (the share
        of sampled pixels that differ from the top-left one)}."""
        data = base64.b64encode(png).decode()
        return self.eval(
            f"""(async () => {{
              const img = new Image();
              img.src = "data:image/png;base64,{data}";
              await img.decode();
              const c = document.createElement("canvas");
              c.width = img.width; c.height = img.height;
              const g = c.getContext("2d");
              g.drawImage(img, 0, 0);
              const px = g.getImageData(0, 0, c.width, c.height).data;
              const seen = new Set(); let ink = 0, n = 0;
              const bg = px[0] + "," + px[1] + "," + px[2];
              for (let i = 0; i < px.length; i += 4 * 7) {{
                const k = px[i] + "," + px[i + 1] + "," + px[i + 2];
                seen.add(k); n++; if (k !== bg) ink++;
              }}
              return {{width: c.width, height: c.height, colours: seen.size, ink: ink / n}};
            }})()"""
        )

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", session=False)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
