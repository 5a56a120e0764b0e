"""A headless Chromium driven over the Chrome DevTools Protocol (CDP), for the browser tests and screenshots.

``Browser`` starts ``chromium --headless=new`` with a remote-debugging port, attaches to its page over a
websocket (tornado's client) and offers what the tests need: open a URL and wait for its load event,
evaluate JavaScript, click, take a screenshot, and the console errors, uncaught exceptions and failed loads
seen so far. ``find_chromium()`` is None on a machine without a Chromium binary (tests skip then).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One headless Chromium page. Use as a context manager; the process is ended on exit."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed loads
        self._profile = tempfile.TemporaryDirectory()
        port = _free_port()
        self._proc = subprocess.Popen(
            [binary, "--headless=new", f"--remote-debugging-port={port}", f"--user-data-dir={self._profile.name}",
             "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._loop = asyncio.new_event_loop()
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._ws = self._loop.run_until_complete(self._connect(port))
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    async def _connect(self, port: int) -> Any:
        from tornado.websocket import websocket_connect

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                if pages:
                    return await websocket_connect(pages[0]["webSocketDebuggerUrl"], max_message_size=256 << 20)
            except OSError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"chromium did not open its debugging port {port} within {self.timeout} s")
            await asyncio.sleep(0.2)

    # --- protocol -------------------------------------------------------------------------------------
    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        return self._loop.run_until_complete(self._call(self._next_id, method, params))

    async def _call(self, call_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self._ws.write_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = await self._read()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def _read(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self._ws.read_message(), self.timeout)
        if raw is None:
            raise RuntimeError("chromium closed the DevTools connection")
        message = json.loads(raw)
        if "method" in message:
            self._note(message)
        return message

    def _note(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".rstrip())

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` not yet consumed (waiting for it)."""
        async def wait() -> dict[str, Any]:
            while True:
                for i, event in enumerate(self._events):
                    if event["method"] == method:
                        return self._events.pop(i)
                await self._read()
        return self._loop.run_until_complete(wait())

    # --- what the tests use ------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image loaded or failed)."""
        self._events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def settle(self, seconds: float) -> None:
        """Let the page run (and events arrive) for ``seconds``."""
        self.evaluate(f"new Promise(r => setTimeout(r, {int(seconds * 1000)}))")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self._ws.close()
            self._loop.run_until_complete(asyncio.sleep(0))
        finally:
            self._loop.close()
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
