"""The status page's "Now" section: one line per ongoing incident, worst first, at the top."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

from exporter.page import render_page
from tests.test_page import NOW, change, result, squash, status_doc


class _Now(HTMLParser):
    """The text of each ``li`` of the Now section, and where the section begins."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[str] = []
        self.none = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag == "li" and "now-item" in cls:
            self._in = "item"
            self.items.append("")
        elif tag == "p" and "now-none" in cls:
            self._in = "none"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("li", "p"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "item":
            self.items[-1] += data
        elif self._in == "none":
            self.none += data


def now_of(page: str) -> _Now:
    parser = _Now()
    parser.feed(page)
    return parser


def test_now_lists_each_ongoing_incident_once_worst_first_with_where_and_since() -> None:
    one_h = NOW - timedelta(hours=1)
    results = [
        result("news", "https://news.test/", "censored", "dns_blocked", since=one_h),
        result("news", "dns://news.test", "censored", "dns_blocked", since=one_h),
        result("news", "https://news.test/", "control", "ok"),
        result("outage", "https://outage.test/", "control", "service_down", since=one_h),
        result("outage", "https://outage.test/", "censored", "service_down", since=one_h),
        result("geo", "https://geo.test/", "censored", "anomaly", since=one_h),
    ] + [
        result(s, f"https://{s}.test/", "shutdown", "vantage_down",
               since=NOW - timedelta(minutes=k))
        for k, s in enumerate(("news", "outage", "geo", "canaries"), start=20)
    ]  # fmt: skip
    # a third news target was blocked an hour before the others, until they were: it began then
    changes = [
        change("news", "tcp://news.test:443", "censored", "dns_blocked", NOW - timedelta(hours=2),
               one_h),
        change("news", "tcp://news.test:443", "censored", "ok", one_h, None),
    ]  # fmt: skip
    page = render_page(status_doc(results), changes, now=NOW)
    items = [squash(i) for i in now_of(page).items]
    assert len(items) == 4  # one shutdown, one DNS block, one anomaly, one outage
    down, dns, anomaly, outage = items
    assert down.startswith("▼ Vantage down: 3 services at shutdown (IR, 05:00 local time")
    assert "since 01:07 UTC, for 23m" in down  # the first target to go down
    assert "Asia/Tehran" in down and "4 targets" in down
    assert dns.startswith("✕ DNS blocked: news at censored (IR, 05:00 local time (Asia/Tehran))")
    assert "3 targets, since 2026-11-20 23:30 UTC, for 2h" in dns  # merged with the earlier one
    assert anomaly.startswith("? Anomaly: geo at censored")
    assert outage.startswith("▽ Service down: outage at every vantage (censored, control)")
    # at the top: before the headline counts and the matrix
    assert page.index('id="now"') < page.index('id="counts"') < page.index('id="matrix"')


def test_now_says_nothing_is_wrong_when_nothing_is() -> None:
    results = [result("news", "https://news.test/", v, "ok") for v in ("control", "censored")]
    changes = [
        change("news", "https://news.test/", "censored", "tcp_blocked",
               NOW - timedelta(hours=3), NOW - timedelta(hours=2)),
    ]  # fmt: skip
    now = now_of(render_page(status_doc(results), changes, now=NOW))
    assert now.items == []
    assert re.sub(r"\s+", " ", now.none).strip() == "Nothing is wrong now."
