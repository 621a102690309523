"""The status page as a responder sees it: rendered from constructed status and timeline data,
and served by a small aiohttp app with a fake PageSource (no store, no probes)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.page import add_page_routes, render_page, render_target_page, summary_text, timeline
from exporter.store import VerdictChange
from exporter.window import RegionState, rank_windows, to_json
from probes.records import Result, Verdict

NOW = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)

VANTAGES: list[dict[str, Any]] = [
    {"name": "control", "control": True, "country": "NL", "timezone": "Europe/Amsterdam"},
    {"name": "censored", "control": False, "country": "IR", "timezone": "Asia/Tehran"},
    {"name": "shutdown", "control": False, "country": "IR", "timezone": "Asia/Tehran"},
]


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def result(
    service: str,
    target: str,
    vantage: str,
    verdict: str,
    *,
    since: datetime = NOW - timedelta(hours=1, minutes=20),
    reason: str = "",
) -> dict[str, Any]:
    meta = next((v for v in VANTAGES if v["name"] == vantage), {})
    return {
        "service": service,
        "target": target,
        "vantage": vantage,
        "verdict": verdict,
        "reason": reason or f"{verdict} because of the test",
        "since": iso(since),
        "time": iso(NOW - timedelta(seconds=20)),
        "country": meta.get("country"),
        "timezone": meta.get("timezone"),
    }


def status_doc(
    results: list[dict[str, Any]], vantages: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "schema": "lifeline.status/1",
        "time": iso(NOW),
        "results": results,
        "vantages": VANTAGES if vantages is None else vantages,
    }


def change(
    service: str,
    target: str,
    vantage: str,
    verdict: str,
    since: datetime,
    until: datetime | None = None,
    previous: str | None = None,
) -> VerdictChange:
    return VerdictChange(
        service=service,
        target=target,
        vantage=vantage,
        verdict=verdict,
        previous=previous,
        since=iso(since),
        until=iso(until) if until else None,
        reason=f"{verdict} from the timeline",
    )


def lab_like_status(services: int = 4, vantages: int = 3) -> dict[str, Any]:
    """A services x vantages grid; odd services are dns_blocked at the second vantage."""
    vs = [{"name": f"v{j}", "country": "IR", "timezone": "Asia/Tehran"} for j in range(vantages)]
    results = []
    for i in range(services):
        for j in range(vantages):
            verdict = "dns_blocked" if (i % 2 and j == 1) else "ok"
            r = result(f"svc{i:04d}", f"https://svc{i}.example.test/", f"v{j}", verdict)
            results.append(r)
    return status_doc(results, vs)


# --- reading the rendered HTML back ---------------------------------------------------


@dataclass
class Cell:
    attrs: dict[str, str]
    text: str = ""
    links: list[str] = field(default_factory=list)


class _Cells(HTMLParser):
    """Collects the matrix cells (td with data-s) with text and links, and every script tag."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[Cell] = []
        self.scripts: list[dict[str, str]] = []
        self.row_heads: list[str] = []
        self.col_heads: list[str] = []
        self._cell: Cell | None = None
        self._depth = 0
        self._th: list[str] | None = None
        self._th_scope = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts.append(a)
        if tag == "td" and "data-s" in a:
            self._cell = Cell(a)
            self._depth = 0
        elif self._cell is not None:
            self._depth += 1
            if tag == "a":
                self._cell.links.append(a.get("href", ""))
        if tag == "th":
            self._th, self._th_scope = [], a.get("scope", "")

    def handle_endtag(self, tag: str) -> None:
        if self._cell is not None:
            if tag == "td" and self._depth == 0:
                self.cells.append(self._cell)
                self._cell = None
            else:
                self._depth -= 1
        if tag == "th" and self._th is not None:
            text = " ".join("".join(self._th).split())
            (self.row_heads if self._th_scope == "row" else self.col_heads).append(text)
            self._th = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data
        if self._th is not None:
            self._th.append(data)


def parse(page: str) -> _Cells:
    p = _Cells()
    p.feed(page)
    p.close()
    return p


def summary_cells(page: str) -> dict[tuple[str, str], Cell]:
    return {
        (c.attrs["data-s"], c.attrs["data-v"]): c
        for c in parse(page).cells
        if "data-t" not in c.attrs
    }


def target_cells(page: str) -> dict[tuple[str, str, str], Cell]:
    return {
        (c.attrs["data-s"], c.attrs["data-t"], c.attrs["data-v"]): c
        for c in parse(page).cells
        if "data-t" in c.attrs
    }


def squash(text: str) -> str:
    return " ".join(text.split())


# --- the matrix ------------------------------------------------------------------------


def test_every_verdict_is_shown_in_words_with_its_own_class() -> None:
    results = [result(v.value, f"https://{v.value}.test/", "censored", v.value) for v in Verdict]
    cells = summary_cells(render_page(status_doc(results), [], now=NOW))
    words = {
        "ok": "OK",
        "dns_blocked": "DNS blocked",
        "tcp_blocked": "TCP blocked",
        "tls_blocked": "TLS blocked",
        "http_blocked": "HTTP blocked",
        "throttled": "Throttled",
        "anomaly": "Anomaly",
        "service_down": "Service down",
        "vantage_down": "Vantage down",
        "unreachable": "Unreachable",
        "error": "Error",
    }
    assert set(words) == {v.value for v in Verdict}
    for verdict, label in words.items():
        cell = cells[(verdict, "censored")]
        assert cell.attrs["data-verdict"] == verdict
        assert f"v-{verdict}" in cell.attrs["class"].split()
        assert label in cell.text
        assert cell.links == [
            f"/target?service={verdict}&target=https%3A%2F%2F{verdict}.test%2F&vantage=censored"
        ]
    # a vantage without a result for a service says so, rather than showing nothing
    assert "not measured" in cells[("ok", "control")].text


def test_a_cell_is_the_worst_of_its_targets_and_expands_per_target() -> None:
    results = [
        result("twitter", "https://twitter.test/", "censored", "ok"),
        result(
            "twitter",
            "dns://twitter.test",
            "censored",
            "dns_blocked",
            since=NOW - timedelta(minutes=5),
        ),
        result("twitter", "tcp://twitter.test:443", "censored", "service_down"),
        result("twitter", "https://twitter.test/", "control", "ok"),
        result("twitter", "dns://twitter.test", "control", "ok"),
        result("twitter", "tcp://twitter.test:443", "control", "service_down"),
    ]
    page = render_page(status_doc(results), [], now=NOW)
    cell = summary_cells(page)[("twitter", "censored")]
    assert cell.attrs["data-verdict"] == "dns_blocked"
    assert "DNS blocked" in cell.text and "1/3" in cell.text
    assert cell.links == [
        "/target?service=twitter&target=dns%3A%2F%2Ftwitter.test&vantage=censored"
    ]
    assert "5m" in cell.text  # since the blocked target's verdict began
    assert summary_cells(page)[("twitter", "control")].attrs["data-verdict"] == "service_down"
    per_target = target_cells(page)
    assert {k: c.attrs["data-verdict"] for k, c in per_target.items() if k[2] == "censored"} == {
        ("twitter", "https://twitter.test/", "censored"): "ok",
        ("twitter", "dns://twitter.test", "censored"): "dns_blocked",
        ("twitter", "tcp://twitter.test:443", "censored"): "service_down",
    }
    # the expand control works without JavaScript: a fragment link to the service's tbody
    assert 'href="#s-twitter" aria-controls="s-twitter" aria-expanded="false">3 targets</a>' in page
    assert '<tbody id="s-twitter"' in page


def test_matrix_is_a_semantic_table_with_headers_and_caption() -> None:
    page = render_page(lab_like_status(3, 3), [], now=NOW)
    p = parse(page)
    assert "<caption>" in page
    assert p.row_heads == [
        "svc0000 https://svc0.example.test/",
        "svc0001 https://svc1.example.test/",
        "svc0002 https://svc2.example.test/",
    ]
    assert [h.split()[0] for h in p.col_heads[:4]] == ["service", "v0", "v1", "v2"]
    # every cell is a link (keyboard focusable) to its drill-down
    assert all(c.links and c.links[0].startswith("/target?") for c in p.cells)


def test_hostile_strings_are_escaped_everywhere() -> None:
    evil_service = "<script>alert(1)</script>"
    evil_reason = '"><img src=x onerror=alert(2)>'
    evil_target = 'https://x.test/"onmouseover="alert(3)'
    evil_vantage = "<b>v</b>"
    results = [result(evil_service, evil_target, evil_vantage, "http_blocked", reason=evil_reason)]
    vantages = [{"name": evil_vantage, "country": "<i>IR</i>", "timezone": "<svg onload=alert(4)>"}]
    changes = [
        change(
            evil_service,
            evil_target,
            evil_vantage,
            "ok",
            NOW - timedelta(hours=2),
            NOW - timedelta(hours=1),
        ),
        change(
            evil_service,
            evil_target,
            evil_vantage,
            "http_blocked",
            NOW - timedelta(hours=1),
            previous="ok",
        ),
    ]
    page = render_page(status_doc(results, vantages), changes, now=NOW)
    for raw in (
        "<script>alert",
        "<img src=x",
        '"onmouseover="',
        "<b>v</b>",
        "<i>IR",
        "<svg onload",
    ):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    p = parse(page)
    # the only script is ours, loaded from the package and deferred
    assert p.scripts == [{"src": p.scripts[0]["src"], "defer": ""}]
    assert p.scripts[0]["src"].startswith("/static/page.js")
    cell = p.cells[0]
    assert cell.attrs["data-s"] == evil_service and cell.attrs["data-v"] == evil_vantage
    # plain text keeps the hostile string harmless and on one line
    text = summary_text(status_doc(results, vantages), now=NOW)
    assert "<script>alert(1)</script>: http_blocked" in text


def test_hostile_strings_are_escaped_on_the_drill_down() -> None:
    record = measurement_record(
        title="<script>steal()</script>", reason="title was <script>x</script>"
    )
    page = render_target_page(
        status_doc([]),
        [],
        [Result.from_dict(record)],
        service="twitter",
        target="https://twitter.test/",
        vantage="censored",
        now=NOW,
    )
    assert "<script>steal" not in page and "<script>x" not in page
    assert "&lt;script&gt;steal()&lt;/script&gt;" in page
    assert [s["src"].split("?")[0] for s in parse(page).scripts] == ["/static/page.js"]


def test_vantage_heads_show_country_and_local_time() -> None:
    results = [result("open", "https://open.test/", v["name"], "ok") for v in VANTAGES]
    extra = [
        {"name": "mars", "country": "XX", "timezone": "Mars/Olympus_Mons"},
        {"name": "sneaky", "country": "XX", "timezone": "../../../etc/passwd"},
    ]
    page = render_page(status_doc(results, VANTAGES + extra), [], now=NOW)
    heads = parse(page).col_heads
    # 01:30 UTC is 05:00 in Tehran (UTC+03:30, no DST since 2022) and 02:30 in Amsterdam in November
    assert "censored IR · 05:00 Asia/Tehran (UTC+03:30)" in heads
    assert "control control NL · 02:30 Europe/Amsterdam (UTC+01:00)" in heads
    tehran = '<time class="local" data-tz="Asia/Tehran" datetime="2026-11-21T05:00:00+03:30">'
    assert tehran + "05:00</time>" in page
    assert "mars XX · Mars/Olympus_Mons (unknown zone)" in heads
    assert "sneaky XX · ../../../etc/passwd (unknown zone)" in heads
    # the control column comes first
    assert heads[1].startswith("control")


def test_since_is_relative_and_absolute_utc() -> None:
    results = [
        result(
            "a",
            "https://a.test/",
            "censored",
            "dns_blocked",
            since=NOW - timedelta(hours=1, minutes=20),
        ),
        result(
            "b",
            "https://b.test/",
            "censored",
            "tcp_blocked",
            since=NOW - timedelta(days=3, hours=2),
        ),
        result("c", "https://c.test/", "censored", "ok", since=NOW - timedelta(seconds=45)),
        result("d", "https://d.test/", "censored", "ok", since=NOW - timedelta(minutes=12)),
    ]
    cells = summary_cells(render_page(status_doc(results), [], now=NOW))
    assert "for 1h20m · since 00:10 UTC" in squash(cells[("a", "censored")].text)
    assert "for 3d2h · since 2026-11-17 23:30 UTC" in squash(cells[("b", "censored")].text)
    assert "for 45s" in squash(cells[("c", "censored")].text)
    assert "for 12m" in squash(cells[("d", "censored")].text)


def test_overview_says_whether_it_is_getting_worse() -> None:
    results = [
        result(
            "a", "https://a.test/", "censored", "dns_blocked", since=NOW - timedelta(minutes=20)
        ),
        result(
            "b", "https://b.test/", "censored", "tls_blocked", since=NOW - timedelta(minutes=10)
        ),
        result("c", "https://c.test/", "censored", "ok"),
    ]
    changes = [
        change(
            "a",
            "https://a.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=5),
            NOW - timedelta(minutes=20),
        ),
        change(
            "a",
            "https://a.test/",
            "censored",
            "dns_blocked",
            NOW - timedelta(minutes=20),
            previous="ok",
        ),
        change(
            "b",
            "https://b.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=5),
            NOW - timedelta(minutes=10),
        ),
        change(
            "b",
            "https://b.test/",
            "censored",
            "tls_blocked",
            NOW - timedelta(minutes=10),
            previous="ok",
        ),
        change("c", "https://c.test/", "censored", "ok", NOW - timedelta(hours=5)),
    ]
    page = render_page(status_doc(results), changes, now=NOW)
    assert "Getting worse: 2 not ok now, 0 an hour ago. 2 verdict changes in the last hour." in page
    assert "<title>(2) lifeline status</title>" in page
    # recent changes, newest first, with what they replaced
    recent = page[page.index('id="changes"') :]
    assert recent.index(">b<") < recent.index(">a<")
    assert "OK → " in recent


def test_a_dead_vantage_and_a_first_round_in_progress_are_said_in_words() -> None:
    results = [
        result("a", "https://a.test/", "shutdown", "vantage_down"),
        result("a", "dns://a.test", "shutdown", "vantage_down"),
        result("a", "https://a.test/", "censored", "ok"),
        result("a", "dns://a.test", "censored", "ok"),
    ]
    vantages = [dict(v, up=v["name"] != "shutdown") for v in VANTAGES]
    doc = status_doc(results, vantages) | {"ready": False}
    page = render_page(doc, [], now=NOW)
    heads = parse(page).col_heads
    assert "▼ down: every canary fails" in next(h for h in heads if h.startswith("shutdown"))
    assert "down" not in next(h for h in heads if h.startswith("censored"))
    assert "The first round of measurements is still running" in page
    # every target agrees: no "n/total" count to read
    assert squash(summary_cells(page)[("a", "shutdown")].text).startswith(
        "▼ Vantage down for 1h20m"
    )
    # nothing on record from an hour ago: no trend is claimed
    assert "2 not ok now; no verdicts on record from an hour ago." in page


def test_only_problems_hides_services_that_are_ok_everywhere() -> None:
    page = render_page(lab_like_status(4, 3), [], now=NOW, only_problems=True)
    assert {s for s, _ in summary_cells(page)} == {"svc0001", "svc0003"}


def test_without_javascript_the_page_is_complete_and_refreshes_itself() -> None:
    page = render_page(lab_like_status(4, 3), [], now=NOW, poll_s=5)
    head = page[: page.index("</head>")]
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in head
    assert head.count("<link") == 1 and "defer" in head
    assert len(summary_cells(page)) == 12
    assert 'style="' not in page and "<style" not in page  # the CSP allows no inline style either


# --- the text summary -----------------------------------------------------------------


def test_summary_text_is_a_pasteable_snapshot() -> None:
    results = [
        result("twitter", "https://twitter.test/", "censored", "dns_blocked"),
        result("twitter", "https://twitter.test/", "control", "ok"),
        result(
            "telegram", "https://t.test/", "censored", "throttled", since=NOW - timedelta(minutes=7)
        ),
        result("telegram", "https://t.test/", "control", "ok"),
    ]
    results += [
        result(s, "https://x.test/", "shutdown", "vantage_down") for s in ("twitter", "telegram")
    ]
    text = summary_text(status_doc(results), now=NOW)
    assert text.splitlines() == [
        "lifeline status 2026-11-21 01:30 UTC — 4 of 6 service x vantage not ok",
        "shutdown (IR): vantage_down for all services since 00:10 UTC (1h20m)",
        "twitter: dns_blocked at censored (IR) since 00:10 UTC (1h20m)",
        "telegram: throttled at censored (IR) since 01:23 UTC (7m)",
        "everything else ok (2)",
    ]


def test_summary_text_cannot_be_forged_by_a_hostile_name() -> None:
    results = [
        result("evil\nlifeline status: all ok\u202e", "https://e.test/", "censored", "http_blocked")
    ]
    lines = summary_text(status_doc(results), now=NOW).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("evil lifeline status: all ok: http_blocked at censored")
    assert "\u202e" not in lines[1]


def test_summary_of_a_quiet_day() -> None:
    results = [result("open", "https://open.test/", "censored", "ok")]
    assert summary_text(status_doc(results), now=NOW).splitlines()[-1] == "all ok (1)"


# --- the timeline ------------------------------------------------------------------------


def test_timeline_bands_show_onset_and_recovery_worst_of_targets() -> None:
    t0 = NOW - timedelta(hours=30)  # began before the window: clipped to its start
    changes = [
        change("tw", "https://tw.test/", "censored", "ok", t0, NOW - timedelta(hours=3)),
        change(
            "tw",
            "https://tw.test/",
            "censored",
            "dns_blocked",
            NOW - timedelta(hours=3),
            NOW - timedelta(hours=1),
            previous="ok",
        ),
        change(
            "tw",
            "https://tw.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=1),
            previous="dns_blocked",
        ),
        change("tw", "dns://tw.test", "censored", "ok", NOW - timedelta(hours=2)),
        change("tw", "dns://tw.test", "control", "ok", NOW - timedelta(hours=2)),
        change("other", "https://o.test/", "censored", "tcp_blocked", NOW - timedelta(hours=2)),
    ]
    doc = timeline(changes, now=NOW, hours=24, service="tw")
    assert doc["schema"] == "lifeline.timeline/1"
    assert (doc["start"], doc["end"]) == ("2026-11-20T01:30:00Z", "2026-11-21T01:30:00Z")
    assert [s["service"] for s in doc["services"]] == ["tw"]
    bands = {v["vantage"]: v["bands"] for v in doc["services"][0]["vantages"]}
    assert bands["censored"] == [
        {"verdict": "ok", "start": "2026-11-20T01:30:00Z", "end": "2026-11-20T22:30:00Z"},
        {"verdict": "dns_blocked", "start": "2026-11-20T22:30:00Z", "end": "2026-11-21T00:30:00Z"},
        {"verdict": "ok", "start": "2026-11-21T00:30:00Z", "end": "2026-11-21T01:30:00Z"},
    ]
    # a gap (no data before the first verdict) stays a gap
    assert bands["control"] == [
        {"verdict": "ok", "start": "2026-11-20T23:30:00Z", "end": "2026-11-21T01:30:00Z"}
    ]
    per_target = {(t["target"], t["vantage"]): t["bands"] for t in doc["services"][0]["targets"]}
    assert per_target[("dns://tw.test", "censored")] == [
        {"verdict": "ok", "start": "2026-11-20T23:30:00Z", "end": "2026-11-21T01:30:00Z"}
    ]
    assert len(timeline(changes, now=NOW, hours=24)["services"]) == 2


def test_timeline_is_drawn_as_svg_bands_on_the_page() -> None:
    results = [result("tw", "https://tw.test/", "censored", "dns_blocked")]
    changes = [
        change(
            "tw",
            "https://tw.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=12),
            NOW - timedelta(hours=6),
        ),
        change(
            "tw",
            "https://tw.test/",
            "censored",
            "dns_blocked",
            NOW - timedelta(hours=6),
            previous="ok",
        ),
    ]
    page = render_page(status_doc(results), changes, now=NOW, hours=24)
    section = page[page.index('<section class="tl" data-s="tw">') :]
    section = section[: section.index("</section>")]
    assert '<rect class="v-ok" x="500.00" y="0" width="250.00" height="10">' in section
    assert '<rect class="v-dns_blocked" x="750.00" y="0" width="250.00" height="10">' in section
    assert "DNS blocked 2026-11-20T19:30:00Z to 2026-11-21T01:30:00Z" in section
    assert 'aria-label="censored: OK from 13:30; DNS blocked from 19:30"' in section


# --- the drill-down -----------------------------------------------------------------------


def measurement_record(
    *, title: str = "Twitter", reason: str = "DNS answered NXDOMAIN"
) -> dict[str, Any]:
    """A Result.to_dict()-shaped record: blocked DNS at the vantage, a clean run at the control."""
    return {
        "schema": "lifeline.measurement/1",
        "service": "twitter",
        "target": "https://twitter.test/",
        "vantage": "censored",
        "verdict": "dns_blocked",
        "reason": reason,
        "time": iso(NOW - timedelta(minutes=1)),
        "duration_s": 1.2,
        "error": None,
        "stages": {
            "dns": {
                "ok": True,
                "failure": None,
                "duration_s": 0.01,
                "name": "twitter.test",
                "resolver": "udp://127.0.0.1:5353",
                "addresses": ["127.0.0.66"],
                "queries": [
                    {
                        "qtype": "A",
                        "ok": True,
                        "failure": None,
                        "rcode": "NOERROR",
                        "answers": [{"rtype": "A", "value": "127.0.0.66", "ttl": 60}],
                    }
                ],
            },
            "tcp": {
                "ok": False,
                "failure": "connection_reset",
                "duration_s": 0.02,
                "via_proxy": True,
                "attempts": [
                    {
                        "address": "127.0.0.66",
                        "port": 443,
                        "ok": False,
                        "failure": "connection_reset",
                        "duration_s": 0.02,
                    }
                ],
            },
            "tls": None,
            "http": None,
        },
        "control": {
            "target": "https://twitter.test/",
            "vantage": "control",
            "time": iso(NOW - timedelta(minutes=1)),
            "dns": {
                "ok": True,
                "failure": None,
                "duration_s": 0.01,
                "name": "twitter.test",
                "resolver": "udp://127.0.0.1:5300",
                "addresses": ["127.0.0.10"],
                "queries": [],
            },
            "tcp": {
                "ok": True,
                "failure": None,
                "duration_s": 0.01,
                "address": "127.0.0.10",
                "port": 443,
                "attempts": [],
            },
            "tls": {
                "ok": True,
                "failure": None,
                "duration_s": 0.01,
                "version": "TLSv1.3",
                "server_name": "twitter.test",
                "certificate": {
                    "subject_cn": "twitter.test",
                    "san": ["twitter.test"],
                    "issuer": "Lab CA",
                },
            },
            "http": {
                "ok": True,
                "failure": None,
                "duration_s": 0.05,
                "status": 200,
                "title": title,
                "body_length": 5120,
                "body_truncated": False,
            },
        },
    }


def test_drill_down_shows_stage_evidence_against_the_control() -> None:
    results = [
        result(
            "twitter",
            "https://twitter.test/",
            "censored",
            "dns_blocked",
            reason="DNS answered 127.0.0.66, a known injected address",
        )
    ]
    changes = [
        change(
            "twitter",
            "https://twitter.test/",
            "censored",
            "ok",
            NOW - timedelta(hours=3),
            NOW - timedelta(hours=1),
        ),
        change(
            "twitter",
            "https://twitter.test/",
            "censored",
            "dns_blocked",
            NOW - timedelta(hours=1),
            previous="ok",
        ),
    ]
    older = measurement_record(title="Old")
    older["time"] = iso(NOW - timedelta(minutes=30))
    page = render_target_page(
        status_doc(results),
        changes,
        [Result.from_dict(older), Result.from_dict(measurement_record())],
        service="twitter",
        target="https://twitter.test/",
        vantage="censored",
        now=NOW,
    )
    text = squash(page)
    assert "DNS answered 127.0.0.66, a known injected address" in text
    assert '<code>127.0.0.66</code> <em class="diff">not in the other column</em>' in page
    assert "<code>127.0.0.10</code> <em" in page  # the control's answer, not seen at the vantage
    assert "failed: <code>connection_reset</code>" in page
    assert "<code>127.0.0.66:443</code> connection_reset" in page
    assert "<dt>status</dt><dd>200</dd>" in page and "<dt>title</dt><dd>Twitter</dd>" in page
    assert "<dt>body size</dt><dd>5120 bytes</dd>" in page
    assert "<dt>version</dt><dd>TLSv1.3</dd>" in page
    assert "control (control)" in page
    # newest measurement first, and the verdict history
    assert page.index("01:29 UTC") < page.index("01:00 UTC")
    assert "OK → " in page


# --- served by aiohttp with a fake source ---------------------------------------------------


_REGION = RegionState(
    "censored", "Asia/Tehran", "IR", blocked=3, total=4, shutdown_recent=False, recent_changes=1
)
#: A real `lifeline window` document for one region in trouble.
WINDOW_DOC = to_json(
    rank_windows([_REGION], duration=timedelta(hours=1), now=NOW, top=3), [_REGION]
)


class FakeSource:
    """A PageSource over in-memory data; tests change ``results`` to simulate news."""

    def __init__(
        self,
        status: dict[str, Any],
        changes: Sequence[VerdictChange] = (),
        records: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.doc = status
        self.rows = list(changes)
        self.records = list(records)
        self.asked: list[dict[str, Any]] = []

    async def status(self) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self.doc))  # as a server would serialise it
        return copy

    async def changes(self, *, since: str | None) -> list[VerdictChange]:
        self.asked.append({"since": since})
        return [r for r in self.rows if since is None or r.until is None or r.until >= since]

    async def measurements(
        self, *, service: str, target: str, vantage: str, limit: int
    ) -> list[Result]:
        self.asked.append(
            {"service": service, "target": target, "vantage": vantage, "limit": limit}
        )
        mine = [
            Result.from_dict(r)
            for r in self.records
            if (r["service"], r["target"], r["vantage"]) == (service, target, vantage)
        ]
        return mine[-limit:]

    async def window(self) -> dict[str, Any] | None:
        return WINDOW_DOC


Client = TestClient[Any, Any]


def status_route(source: FakeSource) -> web.Application:
    """The app a test serves: the page routes plus a stand-in for server.py's /api/v1/status."""
    app = web.Application()

    async def status(request: web.Request) -> web.Response:
        return web.json_response(await source.status())

    app.router.add_get("/api/v1/status", status)
    add_page_routes(app, source, poll_s=0.5)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Client, FakeSource]]:
    results = [
        result("twitter", "https://twitter.test/", "censored", "dns_blocked"),
        result("twitter", "https://twitter.test/", "control", "ok"),
    ]
    source = FakeSource(
        status_doc(results),
        [
            change(
                "twitter",
                "https://twitter.test/",
                "censored",
                "dns_blocked",
                NOW - timedelta(hours=1),
            )
        ],
        [measurement_record()],
    )
    async with TestServer(status_route(source), host="127.0.0.1", port=0) as server:
        client: Client
        async with TestClient(server) as client:
            yield client, source


async def test_served_page_assets_and_apis(
    served: tuple[Client, FakeSource],
) -> None:
    client, source = served
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert summary_cells(page)[("twitter", "censored")].attrs["data-verdict"] == "dns_blocked"
    assert source.asked[0]["since"] is not None  # only the window's changes are asked for

    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        r = await client.get(f"/static/{name}")
        assert r.status == 200 and r.content_type == kind
        again = await client.get(f"/static/{name}", headers={"If-None-Match": r.headers["ETag"]})
        assert again.status == 304
    for bad in ("/static/other.js", "/static/..%2Fpage.py", "/static/page.js%00"):
        assert (await client.get(bad)).status == 404

    r = await client.get(
        "/target",
        params={"service": "twitter", "target": "https://twitter.test/", "vantage": "censored"},
    )
    assert r.status == 200 and "127.0.0.66" in await r.text()
    assert source.asked[-1] == {
        "service": "twitter",
        "target": "https://twitter.test/",
        "vantage": "censored",
        "limit": 10,
    }
    assert (await client.get("/target", params={"service": "twitter"})).status == 400
    r = await client.get(
        "/target", params={"service": "nope", "target": "x", "vantage": "censored"}
    )
    assert r.status == 404

    r = await client.get("/api/v1/timeline", params={"service": "twitter", "hours": "6"})
    doc = await r.json()
    assert doc["services"][0]["vantages"][0]["bands"][0]["verdict"] == "dns_blocked"
    for hours in ("abc", "0", "-1", "100000"):
        assert (await client.get("/api/v1/timeline", params={"hours": hours})).status == 400

    r = await client.get("/api/v1/summary.txt")
    assert r.content_type == "text/plain"
    assert "twitter: dns_blocked at censored (IR) since" in await r.text()


async def test_page_shows_the_least_harmful_maintenance_window(
    served: tuple[Client, FakeSource],
) -> None:
    client, _ = served
    page = await (await client.get("/")).text()
    section = page[page.index('id="h-window"') :]
    best = WINDOW_DOC["windows"][0]
    assert "Least harmful maintenance window" in page
    assert html.escape(best["explanation"][0]) in section
    assert "Asia/Tehran" in section and " UTC = " in section


# --- scale -------------------------------------------------------------------------------------


def test_render_grows_linearly_with_services() -> None:
    """500x10 against 50x10: a quadratic page would take ~100 times as long, a linear one ~10."""

    def best_of(status: dict[str, Any], rounds: int = 3) -> float:
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            render_page(status, [], now=NOW)
            best = min(best, time.perf_counter() - t)
        return best

    small, large = lab_like_status(50, 10), lab_like_status(500, 10)
    best_of(small, 1)  # warm up
    ratio = best_of(large) / best_of(small)
    assert ratio < 30, f"render time grew {ratio:.1f}x for 10x the services"
    assert len(summary_cells(render_page(large, [], now=NOW))) == 5000
