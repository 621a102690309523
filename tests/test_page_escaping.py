"""Hostile values on every page and view: what a censor's block page or an odd config controls
(titles, headers, URLs, reasons, names) is shown as text and never becomes live markup.

The HTML is parsed (html.parser) and checked element by element: the only scripts are the
page's own static one, no element carries an event-handler attribute, no link or source is a
``javascript:`` URL, and no element type or attribute appears that a benign page lacks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.page import render_page, render_target_page, summary_text
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    Result,
    TCPAttempt,
    TCPStage,
    TLSCertificate,
    TLSStage,
    Verdict,
)
from tests.test_page import NOW, FakeSource, change, iso, result, status_doc, status_route

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
JS_URL = "javascript:alert(1)"
ATTR = "' onmouseover='alert(1)"
#: every hostile string, so each field can be tried with each
EVIL = (SCRIPT, IMG, JS_URL, ATTR)

SERVICE = f"svc{SCRIPT}"
TARGET = f"https://x.test/{IMG}"
VANTAGE = f"v{ATTR}{IMG}"


def hostile_record(i: int) -> dict[str, Any]:
    """A stored Result.to_dict() whose every censor-controlled field carries hostile text."""
    evil = EVIL[i % len(EVIL)]
    nxt = EVIL[(i + 1) % len(EVIL)]
    dns = DNSStage(
        ok=True,
        failure=None,
        duration_s=0.01,
        name=f"x.test{evil}",
        resolver=f"udp://127.0.0.1:5353/{nxt}",
        addresses=[evil, "127.0.0.66"],
        queries=[
            DNSQuery(
                qtype=evil,
                ok=False,
                failure=nxt,
                rcode=evil,
                answers=[DNSAnswer(rtype="A", value=nxt, ttl=60)],
            )
        ],
    )
    tcp = TCPStage(
        ok=False,
        failure=evil,
        duration_s=0.02,
        attempts=[TCPAttempt(address=nxt, port=443, ok=False, failure=evil, duration_s=0.02)],
        address=evil,
    )
    tls = TLSStage(
        ok=True,
        failure=None,
        duration_s=0.01,
        server_name=evil,
        version=nxt,
        certificate=TLSCertificate(subject_cn=evil, san=[nxt, JS_URL], issuer=evil),
    )
    http = HTTPStage(
        ok=False,
        failure=nxt,
        duration_s=0.05,
        url=JS_URL,
        final_url=JS_URL,
        status=200,
        headers={evil: nxt, "location": JS_URL, "x-block": IMG},
        body_length=10,
        title=evil,
        redirects=[
            HTTPHop(url=JS_URL, status=302, location=JS_URL),
            HTTPHop(url=f"http://block.test/{evil}", status=301, location=nxt),
        ],
        request_sent=True,
    )
    mine = Measurement(
        target=TARGET,
        vantage=VANTAGE,
        time=iso(NOW - timedelta(minutes=1 + i)),
        service=SERVICE,
        dns=dns,
        tcp=tcp,
        tls=tls,
        http=http,
        error=evil,
    )
    control = Measurement(
        target=TARGET,
        vantage=f"control{nxt}",
        time=iso(NOW - timedelta(minutes=1 + i)),
        service=SERVICE,
        dns=dns,
        http=http,
    )
    return Result(mine, Verdict.HTTP_BLOCKED, f"{evil} reason {nxt}", control).to_dict()


def hostile_status() -> dict[str, Any]:
    results = [
        result(SERVICE, TARGET, VANTAGE, "http_blocked", reason=f"title was {SCRIPT}"),
        result(SERVICE, f"dns://{JS_URL}", VANTAGE, "dns_blocked", reason=IMG),
        result(SERVICE, JS_URL, f"ctl{SCRIPT}", "ok", reason=JS_URL),
        result(JS_URL, JS_URL, VANTAGE, "ok", reason=ATTR),
        # a verdict the page does not know is shown by its own name: hostile too
        result(f"odd{IMG}", TARGET, VANTAGE, SCRIPT, reason=SCRIPT),
    ]
    vantages = [
        {"name": f"ctl{SCRIPT}", "control": True, "country": IMG, "timezone": SCRIPT},
        {"name": VANTAGE, "country": SCRIPT, "timezone": JS_URL, "up": False},
    ]
    return status_doc(results, vantages) | {"time": JS_URL}


def hostile_changes() -> list[Any]:
    return [
        change(SERVICE, TARGET, VANTAGE, "ok", NOW - timedelta(hours=3), NOW - timedelta(hours=1)),
        change(SERVICE, TARGET, VANTAGE, "http_blocked", NOW - timedelta(hours=1), previous="ok"),
        change(f"odd{IMG}", TARGET, VANTAGE, SCRIPT, NOW - timedelta(minutes=30), previous=IMG),
        change(JS_URL, JS_URL, VANTAGE, "ok", NOW - timedelta(hours=2)),
    ]


HOSTILE_WINDOW = {"windows": [{"explanation": list(EVIL)}]}


# --- reading the HTML back ---------------------------------------------------------------


@dataclass
class Markup(HTMLParser):
    """Every element and attribute of a document, and the text inside any script element."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    script_text: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    _in_script: int = 0

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "script":
            self._in_script += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script -= 1

    def handle_data(self, data: str) -> None:
        (self.script_text if self._in_script else self.text).append(data)


def markup(page: str) -> Markup:
    m = Markup()
    m.feed(page)
    m.close()
    return m


_URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "poster"}


def assert_nothing_live(page: str, benign: str) -> None:
    """No script but ours, no handler attribute, no javascript: URL, nothing a benign page lacks."""
    m, ok = markup(page), markup(benign)
    scripts = [a for tag, a in m.tags if tag == "script"]
    assert len(scripts) == 1, scripts
    assert scripts[0]["src"].startswith("/static/page.js?v=") and set(scripts[0]) == {
        "src",
        "defer",
    }
    assert "".join(m.script_text).strip() == ""
    for tag, attrs in m.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            if name in _URL_ATTRS:
                squashed = "".join(value.split()).lower()
                assert not squashed.startswith("javascript:"), (tag, name, value)
    assert {t for t, _ in m.tags} <= {t for t, _ in ok.tags}
    assert {n for _, a in m.tags for n in a} <= {n for _, a in ok.tags for n in a}


def benign_status() -> dict[str, Any]:
    """The same shape with harmless values: what element types and attributes a page has."""
    results = [
        result("svc", "https://x.test/", "v", "http_blocked"),
        result("svc", "dns://x.test", "v", "dns_blocked"),
        result("svc", "https://y.test/", "ctl", "ok"),
        result("other", "https://o.test/", "v", "ok"),
    ]
    vantages = [
        {"name": "ctl", "control": True, "country": "NL", "timezone": "Europe/Amsterdam"},
        {"name": "v", "country": "IR", "timezone": "Asia/Tehran", "up": False},
    ]
    return status_doc(results, vantages)


def benign_changes() -> list[Any]:
    return [
        change(
            "svc", "https://x.test/", "v", "ok", NOW - timedelta(hours=3), NOW - timedelta(hours=1)
        ),
        change(
            "svc", "https://x.test/", "v", "http_blocked", NOW - timedelta(hours=1), previous="ok"
        ),
    ]


def benign_record() -> dict[str, Any]:
    doc = json.loads(json.dumps(hostile_record(0)))
    text = json.dumps(doc)
    for evil in EVIL:
        text = text.replace(json.dumps(evil)[1:-1], "plain")
    out: dict[str, Any] = json.loads(text)
    return out


def benign_page() -> str:
    return render_page(
        benign_status(), benign_changes(), now=NOW, window={"windows": [{"explanation": ["a"]}]}
    )


def benign_drill() -> str:
    return render_target_page(
        benign_status(),
        benign_changes(),
        [Result.from_dict(benign_record())],
        service="svc",
        target="https://x.test/",
        vantage="v",
        now=NOW,
    )


# --- the pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("only_problems", [False, True])
def test_the_status_page_shows_hostile_values_as_text(only_problems: bool) -> None:
    page = render_page(
        hostile_status(),
        hostile_changes(),
        now=NOW,
        only_problems=only_problems,
        window=HOSTILE_WINDOW,
    )
    assert_nothing_live(page, benign_page())
    text = "".join(markup(page).text)
    # shown, as the text it is (not dropped, not run)
    assert SERVICE in text and VANTAGE in text and SCRIPT in text
    if not only_problems:
        assert JS_URL in text
    for evil in EVIL:
        assert evil in text  # the maintenance window's lines


def test_the_drill_down_shows_hostile_evidence_as_text() -> None:
    records = [Result.from_dict(hostile_record(i)) for i in range(len(EVIL))]
    page = render_target_page(
        hostile_status(),
        hostile_changes(),
        records,
        service=SERVICE,
        target=TARGET,
        vantage=VANTAGE,
        now=NOW,
    )
    assert_nothing_live(page, benign_drill())
    m = markup(page)
    text = "".join(m.text)
    for evil in EVIL:
        assert evil in text  # titles, reasons, failures, URLs, names: all shown as text
    assert f"control ({f'control{EVIL[1]}'})" in text
    # the redirect and final URLs are shown in <code>, never followed
    assert all(a.get("href", "").startswith(("/", "#")) for tag, a in m.tags if tag == "a")


def test_the_drill_down_of_an_unknown_hostile_target() -> None:
    page = render_target_page(
        status_doc([]), [], [], service=SCRIPT, target=JS_URL, vantage=IMG, now=NOW
    )
    assert_nothing_live(page, benign_drill())
    text = "".join(markup(page).text)
    assert SCRIPT in text and JS_URL in text and IMG in text


def test_the_text_summary_stays_plain_lines() -> None:
    status = hostile_status()
    status["results"].append(
        result("evil\n<script>x</script>\u202e", "https://e.test/", VANTAGE, "http_blocked")
    )
    lines = summary_text(status, now=NOW).splitlines()
    assert any(line.startswith("evil <script>x</script>: http_blocked") for line in lines)
    assert all("\u202e" not in line for line in lines)


# --- served: the same pages and the text and JSON views over HTTP ------------------------


Client = TestClient[Any, Any]


@pytest.fixture
async def hostile_client() -> AsyncIterator[Client]:
    source = FakeSource(
        hostile_status(), hostile_changes(), [hostile_record(i) for i in range(len(EVIL))]
    )
    async with TestServer(status_route(source), host="127.0.0.1", port=0) as server:
        client: Client
        async with TestClient(server) as client:
            yield client


async def test_served_views_of_hostile_values(hostile_client: Client) -> None:
    client = hostile_client
    r = await client.get("/")
    assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert_nothing_live(await r.text(), benign_page())

    r = await client.get(
        "/target", params={"service": SERVICE, "target": TARGET, "vantage": VANTAGE}
    )
    assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    page = await r.text()
    assert_nothing_live(page, benign_drill())
    assert JS_URL in "".join(markup(page).text)

    # the text and JSON views are not HTML, and say so, so no browser renders them as a page
    r = await client.get("/api/v1/summary.txt")
    assert r.content_type == "text/plain" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert SERVICE in await r.text()
    r = await client.get("/api/v1/timeline", params={"service": SERVICE})
    assert r.content_type == "application/json"
    doc = await r.json()
    assert {t["target"] for s in doc["services"] for t in s["targets"]} == {TARGET}
    assert {v["vantage"] for s in doc["services"] for v in s["vantages"]} == {VANTAGE}


# --- from serve's board: odd characters a config allows in target URLs -------------------

ODD_CONFIG = """
version: 1
vantages:
  - {name: control, control: true, resolver: 127.0.0.1:5353,
     country: NL, timezone: Europe/Amsterdam}
  - {name: censored, resolver: 127.0.0.1:5354, country: IR, timezone: Asia/Tehran}
  - {name: quiet, resolver: 127.0.0.1:5355}
canaries: [https://canary.lifeline.test/]
services:
  - name: open
    targets:
      - 'https://open.lifeline.test/"><img src=x onerror=alert(1)>'
      - 'https://open.lifeline.test/<script>alert(1)</script>'
      - "https://open.lifeline.test/?'onmouseover='alert(1)"
"""


def odd_board() -> Any:
    from exporter.scheduler import Board
    from probes.config import parse_config
    from probes.model import CANARY_SERVICE

    board = Board(parse_config(ODD_CONFIG))
    t = iso(NOW - timedelta(minutes=5))
    for service, target, vantage in board.keys():
        if vantage == "quiet":
            continue
        ok = vantage == "control" or service == CANARY_SERVICE
        m = Measurement(target=target, vantage=vantage, time=t, service=service)
        verdict = Verdict.OK if ok else Verdict.HTTP_BLOCKED
        board.publish(Result(m, verdict, f"block page titled {SCRIPT} at {target}"))
    return board


def test_the_page_from_serves_board_is_typed_and_says_what_the_status_document_says() -> None:
    from dataclasses import replace

    from exporter.page.view import status_from_document
    from exporter.server import _page_status, status_document

    board = odd_board()
    typed = _page_status(board)
    from_json = status_from_document(json.loads(json.dumps(status_document(board))))
    assert replace(typed, time=None) == replace(from_json, time=None)
    assert [v.name for v in typed.vantages] == ["control", "censored", "quiet"]
    assert {c.verdict for c in typed.cells if c.vantage == "censored"} >= {"http_blocked"}

    page = render_page(typed, [], now=NOW)
    assert_nothing_live(page, benign_page())
    text = "".join(markup(page).text)
    assert "https://open.lifeline.test/<script>alert(1)</script>" in text
    assert f"block page titled {SCRIPT}" in "".join(
        a.get("title", "") for _, a in markup(page).tags
    )
