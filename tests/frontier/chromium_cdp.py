"""Open a page in headless Chromium and inspect it over the Chrome DevTools protocol.

Chromium is Debian's ``chromium`` package (``scripts/test.sh`` installs it when it runs as root).
The DevTools websocket is spoken with aiohttp (a dependency of Ray), so no test-only package is
needed: every <img> is checked for a decoded bitmap (``naturalWidth > 0``) and every console
message, uncaught exception, browser log entry and failed network load of level error is
collected.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """Path of a Chromium binary; the calling test skips, saying how to install one, where there is none."""
    import pytest

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed: scripts/test.sh installs Debian's chromium when run as root "
                    "(or: apt-get install -y chromium)")
    return binary


@contextmanager
def chromium(binary: str, profile: Path, timeout: float = 60.0) -> Iterator[int]:
    """Run headless Chromium with a private profile; yields its DevTools port."""
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    try:
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit status {proc.poll()})")
            time.sleep(0.1)
        yield int(port_file.read_text().splitlines()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PageReport:
    """What the browser saw: images (src, complete, naturalWidth), error-level messages, the title,
    the table links, the id of the first section of <main>, the claims' verdict cells and the banner."""

    images: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    title: str = ""
    links: list[str] = field(default_factory=list)
    first_section: str = ""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    banner: dict[str, Any] | None = None  # a running sweep's banner: its text and drawn height


class _Session:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg_id = self.next_id
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads((await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))).data)
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    async def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            message = json.loads((await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))).data)
            self.events.append(message)

    async def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads((await self.ws.receive(timeout=left)).data))
            except TimeoutError:
                return


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            out.append(f"network: {params.get('errorText')} ({params.get('type')})")
    return out


_IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => "
              "({src: i.getAttribute('src'), complete: i.complete, naturalWidth: i.naturalWidth})))")
_LINKS_JS = "JSON.stringify(Array.from(document.querySelectorAll('td a')).map(a => a.href))"
_FIRST_SECTION_JS = "(document.querySelector('main > section') || {id: ''}).id"
# The claims table's verdict cells: text, class and whether they are laid out (visible, styled).
_VERDICTS_JS = ("JSON.stringify(Array.from(document.querySelectorAll('#claims td.verdict')).map(td => "
                "({text: td.textContent, className: td.className, height: td.getBoundingClientRect().height, "
                "color: getComputedStyle(td).color})))")


_BANNER_JS = ("JSON.stringify((() => { const b = document.querySelector('.banner'); return b ? "
              "{text: b.innerText, height: b.getBoundingClientRect().height} : null; })())")


async def _inspect(port: int, url: str, screenshot: Path | None, width: int) -> PageReport:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as answer:
            target = await answer.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Session(ws)
            for domain in ("Runtime", "Log", "Page", "Network"):
                await cdp.send(f"{domain}.enable")
            await cdp.send("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            await cdp.send("Page.navigate", {"url": url})
            await cdp.wait_event("Page.loadEventFired")
            await cdp.drain(0.5)
            report = PageReport()
            result = await cdp.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True})
            report.images = json.loads(result["result"]["value"])
            result = await cdp.send("Runtime.evaluate", {"expression": _LINKS_JS, "returnByValue": True})
            report.links = json.loads(result["result"]["value"])
            result = await cdp.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})
            report.title = result["result"]["value"]
            result = await cdp.send("Runtime.evaluate", {"expression": _FIRST_SECTION_JS, "returnByValue": True})
            report.first_section = result["result"]["value"]
            result = await cdp.send("Runtime.evaluate", {"expression": _VERDICTS_JS, "returnByValue": True})
            report.verdicts = json.loads(result["result"]["value"])
            result = await cdp.send("Runtime.evaluate", {"expression": _BANNER_JS, "returnByValue": True})
            report.banner = json.loads(result["result"]["value"])
            if screenshot is not None:
                metrics = await cdp.send("Page.getLayoutMetrics")
                height = int(min(12000, metrics["cssContentSize"]["height"]))
                await cdp.send("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                shot = await cdp.send("Page.captureScreenshot", {"format": "png"})
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            report.errors = _errors(cdp.events)
            return report


def inspect_page(binary: str, url: str, profile: Path, screenshot: Path | None = None, width: int = 1400) -> PageReport:
    """Load `url` in headless Chromium and report its images and errors (optionally a full-page PNG)."""
    with chromium(binary, profile) as port:
        return asyncio.run(_inspect(port, url, screenshot, width))
