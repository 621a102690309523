"""The status page in a real headless Chromium (Debian's ``chromium``), driven over the DevTools
protocol with aiohttp: what a responder sees, live updates without a reload, and the page with
JavaScript disabled. Skips with a reason where chromium is not installed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from exporter.page import verdict_label
from probes.lab import LabThread
from tests.test_page import (
    NOW,
    FakeSource,
    change,
    measurement_record,
    parse,
    result,
    status_doc,
    status_route,
)

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1600",
)
PATIENCE_S = 60.0  # a bound on waiting for the browser, never a speed expectation


class Chromium:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self, user_data_dir: Path) -> None:
        self.dir = user_data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ids = itertools.count(1)

    async def start(self) -> None:
        assert CHROMIUM is not None
        self.proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            "--remote-debugging-port=0",
            f"--user-data-dir={self.dir}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port = await self._port()
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def _port(self) -> int:
        """Chromium writes the port it chose into DevToolsActivePort in its profile directory."""
        marker = self.dir / "DevToolsActivePort"
        async with asyncio.timeout(PATIENCE_S):
            while True:
                assert self.proc is not None and self.proc.returncode is None, "chromium exited"
                with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                    return int(marker.read_text().splitlines()[0])
                await asyncio.sleep(0.05)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self.pending.pop(data["id"], None) if "id" in data else None
            if fut is not None and not fut.done():
                fut.set_result(data)
            elif "method" in data:
                self.events.put_nowait(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        msg_id = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        async with asyncio.timeout(PATIENCE_S):
            reply = await fut
        assert "error" not in reply, f"{method}: {reply['error']}"
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def navigate(self, url: str) -> None:
        while not self.events.empty():
            self.events.get_nowait()
        await self.send("Page.navigate", url=url)
        async with asyncio.timeout(PATIENCE_S):
            while (await self.events.get())["method"] != "Page.loadEventFired":
                pass

    async def js(self, expression: str, *, gesture: bool = False) -> Any:
        reply = await self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=gesture,
        )
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    async def wait_for(self, expression: str) -> Any:
        """Poll until the expression is truthy; fails with its last value after PATIENCE_S."""
        last: Any = None
        try:
            async with asyncio.timeout(PATIENCE_S):
                while True:
                    last = await self.js(expression)
                    if last:
                        return last
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"never true: {expression} (last: {last!r})") from None

    async def screenshot(self, name: str) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for fut in self.pending.values():
            fut.cancel()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    b = Chromium(tmp_path / "profile")
    try:
        await b.start()
        yield b
    finally:
        await b.close()


SERVICES = ("canaries", "open", "twitter", "telegram")
VANTAGE_NAMES = ("control", "censored", "shutdown")
FIRST: dict[tuple[str, str], str] = {
    **{(s, "control"): "ok" for s in SERVICES},
    **{(s, "shutdown"): "vantage_down" for s in SERVICES},
    ("canaries", "censored"): "ok",
    ("open", "censored"): "ok",
    ("twitter", "censored"): "dns_blocked",
    ("telegram", "censored"): "tls_blocked",
}


def fake_status(verdicts: dict[tuple[str, str], str]) -> dict[str, Any]:
    rows = []
    for (service, vantage), verdict in verdicts.items():
        rows.append(result(service, f"https://{service}.test/", vantage, verdict))
        if service == "twitter":  # a second target, so the cell is worst-of-targets
            rows.append(result(service, "dns://twitter.test", vantage, "ok"))
    return status_doc(rows)


@pytest.fixture
async def fake_app() -> AsyncIterator[tuple[str, FakeSource]]:
    changes = [
        change(
            "twitter",
            "https://twitter.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=6),
            NOW - timedelta(hours=2),
        ),
        change(
            "twitter",
            "https://twitter.test/",
            "censored",
            "dns_blocked",
            NOW - timedelta(hours=2),
            previous="ok",
        ),
    ]
    source = FakeSource(fake_status(FIRST), changes, [measurement_record()])
    async with TestServer(status_route(source), host="127.0.0.1", port=0) as server:
        yield str(server.make_url("/")), source


CELLS_JS = """
Array.from(document.querySelectorAll('#matrix td.c:not([data-t])')).map(td => ({
  s: td.dataset.s, v: td.dataset.v, verdict: td.dataset.verdict,
  text: td.textContent.replace(/\\s+/g, ' ').trim(),
  visible: td.getBoundingClientRect().width > 0
}))
"""

LABELS = {
    "ok": "OK",
    "dns_blocked": "DNS blocked",
    "tls_blocked": "TLS blocked",
    "vantage_down": "Vantage down",
    "tcp_blocked": "TCP blocked",
}


def assert_matrix(cells: list[dict[str, Any]], expected: dict[tuple[str, str], str]) -> None:
    seen = {(c["s"], c["v"]): c for c in cells}
    assert set(seen) == set(expected)
    for key, verdict in expected.items():
        assert seen[key]["verdict"] == verdict, key
        assert seen[key]["text"].startswith(_mark(verdict) + " " + LABELS[verdict]), seen[key]
        assert seen[key]["visible"], key


def _mark(verdict: str) -> str:
    return {"ok": "✓", "vantage_down": "▼"}.get(verdict, "✕")


async def test_every_cell_is_shown_and_news_arrives_without_a_reload(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, source = fake_app
    await browser.navigate(url)
    assert_matrix(await browser.js(CELLS_JS), FIRST)
    # the tab counts the incidents, as the headline: the shutdown, the DNS and the TLS block
    assert await browser.js("document.title") == "(3) lifeline status"
    heads = await browser.js(
        "Array.from(document.querySelectorAll('#matrix thead th')).map(t => t.dataset.v || '')"
    )
    assert heads == ["", *VANTAGE_NAMES]
    assert await browser.js("!document.getElementById('copy').hidden")
    await browser.screenshot("page-fake-source.png")

    # mark the document and watch which cells get touched from here on
    await browser.js("""
      window.__lifeline_marker = 'same document';
      window.__touched = new Set();
      new MutationObserver(ms => ms.forEach(m => {
        const n = m.target.nodeType === 1 ? m.target : m.target.parentElement;
        if (n.closest('time')) return;                       // clocks tick on their own
        const td = n.closest('#matrix td.c');
        const key = td && [td.dataset.s, td.dataset.v, td.dataset.t || ''].join('|');
        if (td) window.__touched.add(key);
        else if (n.closest('#matrix')) window.__touched.add('other:' + n.tagName);
      })).observe(document.getElementById('matrix'),
                  {subtree: true, childList: true, attributes: true, characterData: true});
      true
    """)
    news = dict(FIRST)
    news[("twitter", "censored")] = "ok"
    news[("open", "censored")] = "tcp_blocked"
    source.doc = fake_status(news)
    await browser.wait_for(
        'document.querySelector(\'td.c[data-s="open"][data-v="censored"]:not([data-t])\')'
        ".dataset.verdict === 'tcp_blocked'"
    )
    await browser.wait_for(
        'document.querySelector(\'td.c[data-s="twitter"][data-v="censored"]:not([data-t])\')'
        ".dataset.verdict === 'ok'"
    )
    assert_matrix(await browser.js(CELLS_JS), news)
    assert await browser.js("window.__lifeline_marker") == "same document"
    touched = set(await browser.js("Array.from(window.__touched)"))
    assert touched <= {
        "open|censored|",
        "twitter|censored|",
        "twitter|censored|https://twitter.test/",
    }, touched
    assert "open|censored|" in touched
    assert await browser.js("document.title") == "(3) lifeline status"  # one fixed, one new
    newest = await browser.js("document.querySelector('#changes li').textContent")
    assert newest.startswith("open at censored: OK → TCP blocked") or newest.startswith(
        "twitter at censored: DNS blocked → OK"
    ), newest
    await browser.screenshot("page-fake-source-after-change.png")


async def test_arrow_keys_move_between_cells_and_a_cell_opens_its_evidence(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, _ = fake_app
    await browser.navigate(url)
    assert (
        await browser.js("document.querySelectorAll('#matrix td.c a[tabindex=\"0\"]').length") == 1
    )
    await browser.js("document.querySelector('#matrix td.c a[tabindex=\"0\"]').focus(); true")
    where = (
        "(() => { const td = document.activeElement.closest('td');"
        " return td.dataset.s + '|' + td.dataset.v })()"
    )
    assert await browser.js(where) == "canaries|control"
    for key, code, expected in (
        ("ArrowRight", 39, "canaries|censored"),
        ("ArrowDown", 40, "open|censored"),
        ("ArrowDown", 40, "telegram|censored"),
        ("ArrowLeft", 37, "telegram|control"),
    ):
        for kind in ("rawKeyDown", "keyUp"):
            await browser.send(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
            )
        assert await browser.js(where) == expected
    # the twitter row has two targets: expanding shows them, and arrows then walk into them
    await browser.js("document.querySelector('#s-twitter a.expand').click(); true")
    assert (
        await browser.js(
            "document.querySelector('#s-twitter a.expand').getAttribute('aria-expanded')"
        )
        == "true"
    )
    assert await browser.js(
        "document.querySelector('#s-twitter tr.trow').getBoundingClientRect().height > 0"
    )
    await browser.js(
        "document.querySelector("
        '\'td.c[data-s="twitter"][data-v="censored"]:not([data-t]) a\').click(); true'
    )
    await browser.wait_for("location.pathname === '/target' && document.readyState === 'complete'")
    text = await browser.js("document.body.textContent")
    assert "DNS blocked" in text and "127.0.0.66" in text and "connection_reset" in text


async def test_copy_as_text_puts_the_summary_on_the_clipboard(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, _ = fake_app
    await browser.send(
        "Browser.grantPermissions",
        origin=url.rstrip("/"),
        permissions=["clipboardReadWrite", "clipboardSanitizedWrite"],
    )
    await browser.send("Emulation.setFocusEmulationEnabled", enabled=True)  # headless has no focus
    await browser.navigate(url)
    await browser.js("document.getElementById('copy').click(); true", gesture=True)
    await browser.wait_for(
        "document.getElementById('notice').textContent.startsWith('Summary copied')"
    )
    await browser.wait_for("document.getElementById('notice').textContent.length > 0")
    pasted = await browser.js("navigator.clipboard.readText()", gesture=True)
    assert pasted.startswith("lifeline status 2026-11-21 01:30 UTC — ")
    assert "twitter: dns_blocked at censored (IR) since" in pasted
    assert "shutdown (IR): vantage_down for all services" in pasted


async def test_with_javascript_disabled_the_full_matrix_is_there(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, _ = fake_app
    await browser.send("Emulation.setScriptExecutionDisabled", value=True)
    await browser.navigate(url)
    root = await browser.send("DOM.getDocument", depth=0)
    dom = (await browser.send("DOM.getOuterHTML", nodeId=root["root"]["nodeId"]))["outerHTML"]
    cells = {
        (c.attrs["data-s"], c.attrs["data-v"]): c
        for c in parse(dom).cells
        if "data-t" not in c.attrs
    }
    assert {k: c.attrs["data-verdict"] for k, c in cells.items()} == FIRST
    for key, verdict in FIRST.items():
        assert LABELS[verdict] in cells[key].text
    # the script did not run: the live-status line is still the server's, the copy button hidden
    assert "server-rendered; refreshes every" in dom
    assert '<button type="button" id="copy" hidden="">' in dom
    assert 'http-equiv="refresh"' in dom
    # the timeline is server-rendered too
    assert 'class="v-dns_blocked"' in dom[dom.index('id="timelines"') :]


async def test_phone_width_keeps_the_service_column_in_view(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, _ = fake_app
    await browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=375,
        height=800,
        deviceScaleFactor=2,
        mobile=True,
    )
    await browser.navigate(url)
    wrap = "document.querySelector('.matrix-wrap')"
    assert await browser.js(
        f"{wrap}.scrollWidth > {wrap}.clientWidth"
    )  # the matrix scrolls sideways
    assert await browser.js(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"
    )  # the page does not
    await browser.js(f"{wrap}.scrollLeft = 10000; true")
    left = await browser.js(
        "document.querySelector('#s-twitter th[scope=row]').getBoundingClientRect().left"
    )
    wrap_left = await browser.js(f"{wrap}.getBoundingClientRect().left")
    assert abs(left - wrap_left) < 2  # sticky: still at the left edge after scrolling
    await browser.screenshot("page-phone.png")


# --- the first screen at desktop and phone width -------------------------------------------

WIDTHS = ((1280, False), (400, True))  # (CSS pixels, a phone)


async def set_width(browser: Chromium, width: int, mobile: bool) -> None:
    await browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=800,
        deviceScaleFactor=1,
        mobile=mobile,
    )


NOW_JS = """
(() => {
  const now = document.getElementById('now'), r = now.getBoundingClientRect();
  const items = Array.from(now.querySelectorAll('li.now-item'));
  return {
    top: r.top, height: r.height, width: window.innerWidth, screen: window.innerHeight,
    headline: document.getElementById('headline').textContent.replace(/\\s+/g, ' ').trim(),
    items: items.map(li => li.textContent.replace(/\\s+/g, ' ').trim()),
    widest: Math.max(...items.map(li => li.getBoundingClientRect().right)),
    page: document.documentElement.scrollWidth,
    legendTop: document.getElementById('legend').getBoundingClientRect().top,
    matrixTop: document.getElementById('matrix').getBoundingClientRect().top,
  };
})()
"""


@pytest.mark.parametrize(("width", "mobile"), WIDTHS)
async def test_now_is_the_first_screen_at_desktop_and_phone_width(
    browser: Chromium, fake_app: tuple[str, FakeSource], width: int, mobile: bool
) -> None:
    url, _ = fake_app
    await set_width(browser, width, mobile)
    await browser.navigate(url)
    now = await browser.js(NOW_JS)
    assert now["width"] == width
    # on the first screen, whole, and nothing of it (or of the page) cut off at the side
    assert 0 <= now["top"] and now["top"] + now["height"] <= now["screen"], now
    assert now["widest"] <= width and now["page"] <= width, now
    assert now["headline"] == "1 shutdown, 2 blocked (1 DNS, 1 TLS)"
    assert [i.split(":")[0] for i in now["items"]] == [
        "▼ Vantage down",
        "✕ DNS blocked",
        "✕ TLS blocked",
    ]
    assert now["items"][0].startswith("▼ Vantage down: 3 services at shutdown (IR, ")
    # the legend is read before the matrix
    assert now["top"] < now["legendTop"] < now["matrixTop"]
    shot = await browser.send("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"page-now-{width}.png").write_bytes(base64.b64decode(shot["data"]))


CUE_JS = """
(() => {
  const box = document.getElementById('matrix-box'), wrap = box.querySelector('.matrix-wrap');
  const hint = document.getElementById('scroll-hint'), h = hint.getBoundingClientRect();
  const heads = Array.from(document.querySelectorAll('#matrix thead th[data-v]'));
  const last = heads[heads.length - 1].getBoundingClientRect(), w = wrap.getBoundingClientRect();
  return {
    hint: h.height > 0 && h.width > 0 ? hint.textContent : '',
    more: box.classList.contains('more-right'),
    shadow: getComputedStyle(box, '::after').opacity,
    lastRight: last.right, wrapRight: w.right,
    page: document.documentElement.scrollWidth, width: window.innerWidth,
  };
})()
"""


async def test_at_400_px_the_matrix_says_it_scrolls_and_every_vantage_is_reachable(
    browser: Chromium, fake_app: tuple[str, FakeSource]
) -> None:
    url, _ = fake_app
    await set_width(browser, 400, True)
    await browser.navigate(url)
    cue = await browser.js(CUE_JS)
    assert cue["hint"] == "Wider than the screen: scroll the table sideways for all 3 vantages →"
    assert cue["more"] and cue["shadow"] == "1", cue  # a shadow at the cut edge
    assert cue["lastRight"] > cue["wrapRight"]  # the third vantage is past the edge ...
    assert cue["page"] <= cue["width"]  # ... of the table, never of the page
    await browser.js("document.querySelector('.matrix-wrap').scrollLeft = 10000; true")
    await browser.wait_for(
        "!document.getElementById('matrix-box').classList.contains('more-right')"
    )
    cue = await browser.js(CUE_JS)
    assert cue["lastRight"] <= cue["wrapRight"] + 1  # scrolled: the last column is in view
    # at desktop width the table fits: no cue
    await set_width(browser, 1280, False)
    await browser.navigate(url)
    cue = await browser.js(CUE_JS)
    assert cue["hint"] == "" and not cue["more"]


def colour_source(verdicts: list[str]) -> FakeSource:
    """One service per verdict, that verdict at censored for two hours, ok at the control."""
    rows = [result(v, f"https://{v}.test/", "censored", v) for v in verdicts]
    rows += [result(v, f"https://{v}.test/", "control", "ok") for v in verdicts]
    changes = [
        change(v, f"https://{v}.test/", "censored", v, NOW - timedelta(hours=2), previous="ok")
        for v in verdicts
    ]
    return FakeSource(status_doc(rows), changes)


COLOURS_JS = """
((verdicts) => Object.fromEntries(verdicts.map(v => {
  const td = document.querySelector(`td.c[data-s="${v}"][data-v="censored"]:not([data-t])`);
  const band = document.querySelector(
    `section.tl[data-s="${v}"] .tl-row[data-v="censored"] rect.v-${v}`);
  const chip = document.querySelector(`#legend .lg[data-verdict="${v}"] .chip`);
  const what = document.querySelector(
    `section.tl[data-s="${v}"] .tl-row[data-v="censored"] .tl-what`);
  return [v, {
    cell: getComputedStyle(td).backgroundColor, band: band && getComputedStyle(band).fill,
    chip: getComputedStyle(chip).backgroundColor, label: td.querySelector('.vl').textContent,
    what: what.textContent,
  }];
})))
"""


async def test_each_method_its_own_colour_the_same_on_cells_bands_and_legend(
    browser: Chromium,
) -> None:
    verdicts = [
        "dns_blocked",
        "tcp_blocked",
        "tls_blocked",
        "http_blocked",
        "throttled",
        "vantage_down",
        "service_down",
        "anomaly",
    ]
    source = colour_source(verdicts)
    async with TestServer(status_route(source), host="127.0.0.1", port=0) as server:
        await browser.navigate(str(server.make_url("/")))
        seen = await browser.js(f"({COLOURS_JS})({json.dumps(verdicts)})")
    for v in verdicts:
        c = seen[v]
        assert c["cell"] == c["band"] == c["chip"], (v, c)  # one colour, everywhere
        assert c["label"] == verdict_label(v)  # and its name, besides the colour
        assert c["what"].startswith(verdict_label(v) + " from "), c
    colours = {v: seen[v]["cell"] for v in verdicts}
    assert len(set(colours.values())) == len(verdicts), colours  # none shares one
    await browser.screenshot("page-colours.png")


class CountingSource(FakeSource):
    """Says when the page polls the status."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status)
        self.polled = asyncio.Event()

    async def status(self) -> dict[str, Any]:
        self.polled.set()
        return await super().status()


def shutdown_status(verdicts: dict[tuple[str, str], str]) -> dict[str, Any]:
    """One target a service; every one of them vantage_down at the shutdown vantage."""
    return status_doc([result(s, f"https://{s}.test/", v, x) for (s, v), x in verdicts.items()])


async def test_only_problems_stays_quiet_about_what_it_hides(browser: Chromium) -> None:
    source = CountingSource(shutdown_status(FIRST))
    async with TestServer(status_route(source), host="127.0.0.1", port=0) as server:
        await browser.navigate(str(server.make_url("/?only=problems")))
        heads = await browser.js(
            "Array.from(document.querySelectorAll('#matrix thead th[data-v]'))"
            ".map(t => t.dataset.v)"
        )
        assert heads == ["control", "censored"]  # the down vantage is one line, not a column
        note = await browser.js("document.querySelector('p.folded').textContent")
        assert note.startswith("▼ shutdown (IR) is down: every canary fails")
        # polls of unchanged news: nothing "new" is claimed for the hidden rows and column
        async with asyncio.timeout(PATIENCE_S):
            for _ in range(3):
                source.polled.clear()
                await source.polled.wait()
        await browser.wait_for("document.getElementById('live').classList.contains('ok')")
        assert await browser.js("document.getElementById('notice').textContent") == ""
        # a hidden service that gets a problem is news: reload to see it
        news = dict(FIRST)
        news[("open", "censored")] = "tcp_blocked"
        source.doc = shutdown_status(news)
        await browser.wait_for(
            "document.getElementById('notice').textContent.startsWith('New services')"
        )
        # and so is the down vantage answering again
        news[("canaries", "shutdown")] = "ok"
        news[("open", "censored")] = "ok"
        source.doc = shutdown_status(news)
        await browser.wait_for(
            "document.getElementById('notice').textContent === "
            "'shutdown no longer down everywhere: reload the page for its column.'"
        )
        assert await browser.js("!document.getElementById('now-stale').hidden")


# --- against real `lifeline serve` on the built-in lab --------------------------------------


@dataclass
class Serve:
    proc: asyncio.subprocess.Process
    url: str


async def start_serve(lab: LabThread, work: Path) -> Serve:
    """`lifeline serve` as a subprocess on a copy of the lab config that measures every 4 s."""
    doc = yaml.safe_load(lab.config_path.read_text())
    doc["defaults"]["interval"] = "4s"
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.cli",
        "serve",
        "-c",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(work / "data"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(PATIENCE_S):
            while line := (await proc.stdout.readline()).decode():
                if line.startswith("listening on "):
                    return Serve(proc, line.removeprefix("listening on ").strip())
    except TimeoutError:
        pass
    await stop_serve(Serve(proc, ""))
    raise AssertionError("serve did not start listening")


async def stop_serve(served: Serve) -> None:
    if served.proc.returncode is None:
        served.proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(60):
            await served.proc.communicate()
    except TimeoutError:
        served.proc.kill()
        await served.proc.wait()


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(3 * PATIENCE_S):
        while True:
            async with http.get(url + "-/ready") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.5)


LAB_CELLS_JS = """
Array.from(document.querySelectorAll('#matrix td.c')).map(td => ({
  s: td.dataset.s, v: td.dataset.v, t: td.dataset.t || null, verdict: td.dataset.verdict,
  label: (td.querySelector('.vl') || {textContent: ''}).textContent
}))
"""


def lab_view(
    cells: list[dict[str, Any]], targets: dict[str, set[str]]
) -> dict[tuple[str, str, str], str]:
    """(service, target, vantage) -> verdict as the page shows it: a service with one target has
    only its summary cell, a service with several has a (collapsed) row per target."""
    out = {}
    for c in cells:
        if c["t"] is not None:
            out[(c["s"], c["t"], c["v"])] = c["verdict"]
        elif len(targets.get(c["s"], ())) == 1:
            out[(c["s"], next(iter(targets[c["s"]])), c["v"])] = c["verdict"]
        assert c["label"] == verdict_label(c["verdict"]), c
    return out


async def test_real_serve_on_the_lab_shows_every_verdict_and_a_rule_flip_live(
    browser: Chromium, lab: LabThread, tmp_path: Path
) -> None:
    served = await start_serve(lab, tmp_path)
    try:
        await wait_ready(served.url)
        await browser.navigate(served.url)
        expected = {(r["service"], r["target"], r["vantage"]): r["verdict"] for r in lab.expected}
        targets: dict[str, set[str]] = {}
        for service, target, _ in expected:
            targets.setdefault(service, set()).add(target)
        shown = lab_view(await browser.js(LAB_CELLS_JS), targets)
        assert set(shown) >= set(expected)
        wrong = {k: (shown[k], v) for k, v in expected.items() if shown[k] != v}
        assert not wrong, wrong
        heads = await browser.js(
            "Array.from(document.querySelectorAll('#matrix thead th[data-v]'))"
            ".map(t => t.textContent)"
        )
        assert [h.split()[0] for h in heads] == ["control", "censored", "shutdown"]
        assert "Asia/Tehran (UTC+03:30)" in heads[1] and "IR" in heads[1]
        await browser.screenshot("page-lab.png")

        await browser.js("window.__lifeline_marker = 'same document'; true")
        cell = 'document.querySelector(\'td.c[data-s="open"][data-v="censored"]:not([data-t])\')'
        assert await browser.js(f"{cell}.dataset.verdict") == "ok"
        with lab.rule("open", "dns", "nxdomain"):
            await browser.wait_for(f"{cell}.dataset.verdict === 'dns_blocked'")
            assert "DNS blocked" in await browser.js(f"{cell}.textContent")
            await browser.screenshot("page-lab-open-blocked.png")
        await browser.wait_for(f"{cell}.dataset.verdict === 'ok'")
        assert await browser.js("window.__lifeline_marker") == "same document"
        changes = await browser.js("document.getElementById('changes').textContent")
        assert "open at censored: DNS blocked → OK" in changes
    finally:
        await stop_serve(served)
