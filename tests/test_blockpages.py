# ruff: noqa: RUF001 (the Russian page is in Cyrillic)
"""Real block pages, rebuilt on loopback as the real OONI measurements show them.

- Indonesia, archive.org from AS23693 (OONI, 2025-05-27): the ISP answers with a
  302 to ``lamanlabuh.aduankonten.id``, whose page ("Trustpositif") says
  "SITUS DIBLOKIR" at byte 2,434 and links TrustPositif at byte 4,080.
- Russia, rutor.org from AS42668 (OONI, 2020-03-03): a 302 to the ISP's block
  page on a bare address (``http://89.223.47.135/index.html``), a 31 KB
  windows-1251 page whose RKN registry link sits at byte ~29,000.

Every server here is on 127.0.0.0/8 and every name is answered by a fake
resolver on loopback with the same address for both vantages, as in the real
measurements (the DNS answer was the site's own): the ISP's middlebox answers
what comes from the vantage's address (127.0.0.2), the origin what comes from
the control's; the block server's bare address stands in as 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.classify import classify
from probes.fingerprints import BodyScan, FingerprintSet
from probes.measure import measure
from probes.model import Fingerprints, ResolverSpec, SourceAddress, Target, Vantage
from probes.net import VantageNet
from probes.records import HTTPHop, HTTPStage, Measurement
from probes.verdicts import Verdict
from tests.fakes import LOOPBACK, FakeDNS

ISP_SOURCE = "127.0.0.2"  # the measured vantage's own address, behind the ISP's box

#: The Indonesian page's shape: a long <head> of styles, the title at ~1,960, the
#: announcement past 2 KiB, the TrustPositif link at ~4 KB (constructed, not copied).
_STYLE = "      .demo-wrap { position: relative; padding-left: 0px; }\n" * 31
TRUSTPOSITIF_PAGE = (
    '<!doctype html>\n<html lang="en">\n <head>\n  <meta charset="utf-8">\n  <style>\n'
    + _STYLE
    + "  </style>\n  <title>Trustpositif</title>\n </head>\n <body>\n"
    + '  <div class="container">'
    + " " * 380
    + "\n"
    + '   <h3 class="display-4 fw-bold mb-0">SITUS DIBLOKIR</h3>\n'
    + "   <h5>WEBSITE BLOCKED</h5>\n"
    + "   <p>"
    + "&nbsp;" * 150
    + "</p>\n"
    + '   <h5 class="mb-0">MAAF, AKSES KE SITUS INI DIBLOKIR OLEH PEMERINTAH INDONESIA</h5>\n'
    + "   <p>"
    + "&nbsp;" * 90
    + "</p>\n"
    + '   <a class="btn" href="https://trustpositif.komdigi.go.id/">CHECK DATABASE</a>\n'
    + "  </div>\n </body>\n</html>\n"
).encode()

ARCHIVE_PAGE = (
    b"<!doctype html><html><head><title>Internet Archive: Digital Library</title></head>"
    b"<body>" + b"<p>books, movies, software, music</p>" * 200 + b"</body></html>"
)


def _rkn_page() -> bytes:
    """A Word-made ISP block page in windows-1251, no charset in Content-Type."""
    head = (
        '<html xmlns:v="urn:schemas-microsoft-com:vml">\r\n<head>\r\n'
        '<meta http-equiv=Content-Type content="text/html; charset=windows-1251">\r\n'
        '<meta name=Generator content="Microsoft Word 12">\r\n<style>\r\n'
    )
    styles = "p.MsoNormal { margin: 0cm; font-family: Calibri; }\r\n" * 520
    body = (
        "</style>\r\n</head>\r\n<body>\r\n"
        "<p class=MsoNormal align=center><span style='color:red'>"
        "Сайт\r\nзаблокирован.</span></p>\r\n"
        "<p class=MsoNormal>Проверить на сайте\r\nРОСКОМНАДЗОРа "
        '<a href="http://eais.rkn.gov.ru/">http://eais.rkn.gov.ru/</a></p>\r\n'
        + "<p class=MsoNormal>&nbsp;</p>\r\n" * 60
        + "</body>\r\n</html>\r\n"
    )
    return (head + styles + body).encode("cp1251")


RKN_PAGE = _rkn_page()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class TwoFacedWeb:
    """The origin, behind an ISP middlebox that answers the vantage's requests itself."""

    isp: Handler
    origin: Handler
    port: int = 0
    seen: list[str] = field(default_factory=list)  # "address host path" of every request
    _runner: web.AppRunner | None = None

    async def start(self) -> TwoFacedWeb:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _route(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote
        self.seen.append(f"{peer} {request.host} {request.path}")
        return await (self.isp if peer == ISP_SOURCE else self.origin)(request)


@contextlib.asynccontextmanager
async def lab(
    isp: Handler, origin: Handler, names: list[str]
) -> AsyncIterator[tuple[TwoFacedWeb, VantageNet, VantageNet]]:
    """The web on both addresses, the ISP's resolver and the control's, and a net for each."""
    server = await TwoFacedWeb(isp, origin).start()
    isp_dns = await FakeDNS({n: ["A 127.0.0.1"] for n in names}).start()
    ctl_dns = await FakeDNS({n: ["A 127.0.0.1"] for n in names}).start()
    isp = Vantage(
        "isp", ResolverSpec("udp", LOOPBACK, isp_dns.port), source=SourceAddress(ipv4=ISP_SOURCE)
    )
    vantage = VantageNet(isp, ca_file=None)
    control = VantageNet(
        Vantage("ctl", ResolverSpec("udp", LOOPBACK, ctl_dns.port), control=True), ca_file=None
    )
    try:
        yield server, vantage, control
    finally:
        await vantage.aclose()
        await control.aclose()
        await isp_dns.close()
        await ctl_dns.close()
        await server.close()


async def judged(
    url: str, vantage: VantageNet, control: VantageNet, fps: FingerprintSet | None = None
) -> tuple[Measurement, Verdict, str]:
    fps = fps or FingerprintSet.build()
    target = Target.parse(url)
    obs, ctl = await asyncio.gather(
        measure(target, vantage.vantage, vantage, timeout=5, max_body_bytes=1 << 20,
                fingerprints=fps),
        measure(target, control.vantage, control, timeout=5, max_body_bytes=1 << 20,
                fingerprints=fps),
    )  # fmt: skip
    j = classify(obs, control=ctl, canaries=[], fingerprints=fps, throttle_ratio=0.25)
    return obs, j.verdict, j.reason


def page(body: bytes, content_type: str = "text/html") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


# --- Indonesia -------------------------------------------------------------------------


async def test_indonesia_redirect_to_the_trustpositif_host_is_http_blocked() -> None:
    async def isp(request: web.Request) -> web.StreamResponse:
        if request.host.startswith("lamanlabuh.aduankonten.id"):
            return await page(TRUSTPOSITIF_PAGE)(request)
        return web.Response(
            status=302,
            headers={
                "Cache-Control": "no-cache",
                "Location": f"http://lamanlabuh.aduankonten.id:{request.url.port}/",
                "Pragma": "no-cache",
            },
        )

    names = ["archive.org", "lamanlabuh.aduankonten.id"]
    async with lab(isp, page(ARCHIVE_PAGE), names) as (server, vantage, control):
        m, verdict, reason = await judged(f"http://archive.org:{server.port}/", vantage, control)
    assert verdict == Verdict.HTTP_BLOCKED, reason
    assert "TrustPositif" in reason
    h = m.http
    assert h is not None and h.ok and h.status == 302 and h.redirect_stopped
    assert [hop.location for hop in h.redirects] == [
        f"http://lamanlabuh.aduankonten.id:{server.port}/"
    ]
    assert h.redirects[0].headers is not None
    assert h.redirects[0].headers["pragma"] == "no-cache"
    # lifeline never connected to the block server
    assert not any("lamanlabuh" in s for s in server.seen), server.seen


async def test_indonesia_block_page_served_in_place_is_found_past_2_kib() -> None:
    assert TRUSTPOSITIF_PAGE.find(b"SITUS DIBLOKIR") > 2048
    assert TRUSTPOSITIF_PAGE.find(b"OLEH PEMERINTAH INDONESIA") > 2048
    async with lab(page(TRUSTPOSITIF_PAGE), page(ARCHIVE_PAGE), ["archive.org"]) as (
        server, vantage, control,
    ):  # fmt: skip
        m, verdict, reason = await judged(f"http://archive.org:{server.port}/", vantage, control)
    assert verdict == Verdict.HTTP_BLOCKED, reason
    assert m.http is not None and m.http.title == "Trustpositif"
    assert m.http.body_signatures == ["Indonesia TrustPositif block page"]


# --- Russia ------------------------------------------------------------------------------


async def test_russian_isp_redirect_to_its_block_page_on_a_bare_address() -> None:
    assert RKN_PAGE.find(b"http://eais.rkn.gov.ru/") > 20_000

    async def isp(request: web.Request) -> web.StreamResponse:
        if request.path == "/index.html":
            resp = web.StreamResponse(headers={"Content-Type": "text/html"})
            await resp.prepare(request)
            for i in range(0, len(RKN_PAGE), 1000):  # in pieces: markers cross chunk edges
                await resp.write(RKN_PAGE[i : i + 1000])
            await resp.write_eof()
            return resp
        return web.Response(
            status=302,
            headers={
                "Location": f"http://127.0.0.1:{request.url.port}/index.html",
                "Pragma": "no-cache",
                "Cache-Control": "max-age=0, no-cache, no-store, must-revalidate",
            },
        )

    origin = page(b"<html><head><title>RUTOR.ORG</title></head><body>torrents</body></html>")
    async with lab(isp, origin, ["rutor.org"]) as (server, vantage, control):
        m, verdict, reason = await judged(f"http://rutor.org:{server.port}/", vantage, control)
    assert verdict == Verdict.HTTP_BLOCKED, reason
    assert "RKN" in reason
    assert m.http is not None and m.http.final_url == f"http://127.0.0.1:{server.port}/index.html"
    assert m.http.body_signatures == ["Russia RKN block page"]
    # decoded by the page's own <meta charset>, as a browser shows it
    assert m.http.body_head is not None and "Сайт\r\nзаблокирован" in m.http.body_head


def test_redirect_to_the_russian_isps_block_address_is_blocking_without_the_page() -> None:
    """The real record's hop alone (as stored when the page was not fetched)."""
    http = HTTPStage(
        ok=True, failure=None, duration_s=0.2, url="http://rutor.org/",
        final_url="http://rutor.org/", status=302, redirect_stopped=True,
        headers={"location": "http://89.223.47.135/index.html", "pragma": "no-cache"},
        redirects=[HTTPHop("http://rutor.org/", 302, "http://89.223.47.135/index.html")],
    )  # fmt: skip
    assert FingerprintSet.build().match_http(http) == "redirect to a Russian ISP's RKN block page"


# --- the whole body, incrementally ---------------------------------------------------------


async def test_a_configured_pattern_is_found_at_the_end_of_a_megabyte() -> None:
    marker = b"blocked by order of the ministry"
    body = b"<html><body>" + b"x" * (1_000_000 - 12 - len(marker) - 14) + marker + b"</body></html>"

    async def isp(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        await resp.prepare(request)
        step = 4093  # a prime: the marker lands across a write boundary
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
        await resp.write_eof()
        return resp

    fps = FingerprintSet.build(Fingerprints(http_body_patterns=(r"blocked by order of the \w+",)))
    async with lab(isp, page(ARCHIVE_PAGE), ["news.lifeline.test"]) as (server, vantage, control):
        m, verdict, reason = await judged(
            f"http://news.lifeline.test:{server.port}/", vantage, control, fps
        )
    assert verdict == Verdict.HTTP_BLOCKED, reason
    assert m.http is not None and m.http.body_length == len(body)
    assert m.http.body_head is not None and len(m.http.body_head) == 65_536


@pytest.mark.parametrize("cut", range(0, 34))
def test_a_marker_cut_anywhere_between_two_chunks_is_found(cut: int) -> None:
    scan = BodyScan(FingerprintSet.build())
    text = "x" * 20_000 + "http://eais.rkn.gov.ru/" + "y" * 10
    at = 20_000 + cut
    scan.feed(text[:at])
    scan.feed(text[at:])
    scan.finish()
    assert scan.blocks == ["Russia RKN block page"]


def test_a_body_is_scanned_once_whatever_its_chunks() -> None:
    scan = BodyScan(FingerprintSet.build())
    for _ in range(100_000):
        scan.feed("ab")  # a trickle of tiny chunks is buffered, not rescanned
    scan.finish()
    assert scan.scanned_chars == 200_000 and scan.blocks == []


# --- stored records ---------------------------------------------------------------------


def test_a_stored_scan_result_is_rejudged_without_the_body() -> None:
    http = HTTPStage(
        ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
        body_head="<html>nothing here</html>", body_signatures=["Russia RKN block page"],
    )  # fmt: skip
    assert FingerprintSet.build().match_http(http) == "Russia RKN block page"
    # a name this set does not know (withdrawn, or from another config) does not count
    http.body_signatures = ["fingerprint someone.else_1"]
    assert FingerprintSet.build().match_http(http) is None


def test_an_old_record_without_the_new_fields_loads_and_is_rejudged() -> None:
    old = {
        "target": "http://archive.org/", "vantage": "isp", "time": "2025-05-27T23:31:08Z",
        "duration_s": 0.5, "service": "", "error": None, "expect_status": [], "throughput": False,
        "stages": {"http": {
            "ok": True, "failure": None, "duration_s": 0.4, "url": "http://archive.org/",
            "final_url": "http://lamanlabuh.aduankonten.id/", "status": 200,
            "headers": {"server": "nginx/1.24.0 (Ubuntu)"}, "body_length": 7044,
            "body_sha256": "0" * 64, "body_truncated": False, "body_head": "<html>...",
            "title": "Trustpositif", "request_sent": True, "throughput_bps": None,
            "transfer_s": None,
            "redirects": [{"url": "http://archive.org/", "status": 302,
                           "location": "http://lamanlabuh.aduankonten.id/", "address": None}],
        }},
    }  # fmt: skip
    m = Measurement.from_dict(json.loads(json.dumps(old)))
    h = m.http
    assert h is not None and h.body_signatures is None and h.headers_truncated is False
    assert h.redirects[0].headers is None and h.redirects[0].body_sha256 is None
    fps = FingerprintSet.build()
    assert fps.match_http(h) == "redirect to Indonesia's TrustPositif block page"


_ALL = FingerprintSet.build(Fingerprints(http_body_patterns=(r"blocked\s+by\s+order",)))
_PIECES = sorted({h for s in (*_ALL.block_pages, *_ALL.false_positives) for h in s.hints or ()})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=20)), max_size=6))
def test_the_prefilter_never_changes_a_match(parts: list[str]) -> None:
    text = "".join(p.upper() if i % 2 else p for i, p in enumerate(parts))
    http = HTTPStage(ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
                     body_head=text, title=text[:60])  # fmt: skip
    unfiltered = dataclasses.replace(_ALL, prefilter=None)
    assert _ALL.match_http(http) == unfiltered.match_http(http)
    scans = [fps.body_scan() for fps in (_ALL, unfiltered)]
    for scan in scans:
        scan.feed(text)
        scan.finish()
    assert scans[0].blocks == scans[1].blocks
    assert scans[0].false_positives == scans[1].false_positives


def test_a_chunk_edge_is_not_the_start_or_end_of_the_text() -> None:
    """``\\btrustpositif\\.kominfo\\.go\\.id\\b``: "xtrustpositif.kominfo.go.id" and
    "trustpositif.kominfo.go.idx" are not it, wherever the chunks are cut."""
    scan = BodyScan(FingerprintSet.build())
    word = "trustpositif.kominfo.go.id "
    scan.feed("a" * 20_000 + "x" + word + "b" * (scan.overlap - len(word)))  # the tail starts it
    scan.feed("c" * 20_000 + " trustpositif.kominfo.go.id")  # ends a block ...
    scan.feed("x" + " " * 20_000)  # ... and goes on: trustpositif.kominfo.go.idx
    scan.finish()
    assert scan.blocks == []
    end = BodyScan(FingerprintSet.build())
    end.feed(" " * 20_000 + " trustpositif.kominfo.go.id")  # the body's very end is its end
    end.finish()
    assert end.blocks == ["Indonesia TrustPositif block page"]


def test_a_head_is_matched_again_when_judged_with_another_set() -> None:
    """A record scanned with one set and judged with another (classify -c, a hub judging
    an agent's record) has its stored head matched: the scan's names are the old set's."""
    old = FingerprintSet.build()
    new = FingerprintSet.build(Fingerprints(http_body_patterns=(r"blocked\s+by\s+order",)))
    http = HTTPStage(
        ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
        body_head="<html><p>This site is blocked  by order 12.</p></html>", title="Notice",
        body_signatures=[], body_false_positives=[], body_scanned_with=old.digest,
    )  # fmt: skip
    assert new.match_http(http) == "configured pattern 'blocked\\\\s+by\\\\s+order'"
    # the same set's scan stands for the head; the title is still looked at
    scanned = dataclasses.replace(http, body_scanned_with=new.digest, title="blocked by order")
    assert new.match_http(scanned) == "configured pattern 'blocked\\\\s+by\\\\s+order'"


def test_a_live_scan_and_the_judge_agree_on_a_block_page_in_the_head() -> None:
    fps = FingerprintSet.build()
    text = '<html><iframe src="http://10.10.34.34?type=Invalid Site"></iframe></html>'
    scan = fps.body_scan()
    scan.feed(text)
    scan.finish()
    http = HTTPStage(
        ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200, body_head=text,
        body_signatures=scan.blocks, body_false_positives=scan.false_positives,
        body_scanned_with=scan.digest,
    )  # fmt: skip
    assert scan.blocks and fps.match_http(http) == scan.blocks[0]


_MANY = FingerprintSet.build(
    Fingerprints(http_body_patterns=tuple(f"sig{i:03d}-[a-z]+-marker" for i in range(150)))
)
_MANY_PIECES = sorted({h for s in _MANY.block_pages for h in s.hints or ()})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_MANY_PIECES), st.text(max_size=20)), max_size=6))
def test_the_prefilter_of_a_large_set_never_changes_a_match(parts: list[str]) -> None:
    """Over MAX_PLAIN_HINTS hints the prefilter is one trie pass, not one search per hint."""
    text = "".join(p.upper() if i % 2 else p for i, p in enumerate(parts)) + "-abc-marker"
    http = HTTPStage(ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
                     body_head=text)  # fmt: skip
    unfiltered = dataclasses.replace(_MANY, prefilter=None)
    assert _MANY.match_http(http) == unfiltered.match_http(http)
