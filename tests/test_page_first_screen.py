"""The page's first screen is the answer: the headline counts the incidents, the legend sits
above the matrix, a down vantage is said once under ``?only=problems``, the timeline has
1 h / 6 h / 24 h / 7 d ranges and a fresh incident is no sliver, and each verdict has a
colour of its own (defined once, the same on cells and timeline bands)."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from exporter.page import render_page
from exporter.page.view import LOOKS
from tests.test_page import NOW, change, parse, result, squash, status_doc, summary_cells
from tests.test_page_now import now_of

CSS = Path(__file__).resolve().parent.parent / "exporter" / "static" / "page.css"


class _Text(HTMLParser):
    """The text of the first element with the given id."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted = wanted
        self.text = ""
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif dict(attrs).get("id") == self.wanted and not self.text:
            self._depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.text += data


def text_of(page: str, element_id: str) -> str:
    p = _Text(element_id)
    p.feed(page)
    return squash(p.text)


def incidents_status() -> dict[str, Any]:
    """A shutdown of one vantage (3 services), a DNS and a TLS block, an outage, the rest ok."""
    one_h = NOW - timedelta(hours=1)
    rows = [
        result("news", "https://news.test/", "censored", "dns_blocked", since=one_h),
        result("news", "dns://news.test", "censored", "dns_blocked", since=one_h),
        result("chat", "https://chat.test/", "censored", "tls_blocked", since=one_h),
        result("video", "https://video.test/", "censored", "dns_blocked", since=one_h),
        result("outage", "https://outage.test/", "censored", "service_down", since=one_h),
        result("outage", "https://outage.test/", "control", "service_down", since=one_h),
        result("quiet", "https://quiet.test/", "censored", "ok"),
    ]
    for s in ("news", "chat", "video", "quiet"):
        rows.append(result(s, f"https://{s}.test/", "control", "ok"))
    for s in ("news", "chat", "video", "outage", "quiet"):
        rows.append(result(s, f"https://{s}.test/", "shutdown", "vantage_down",
                           since=NOW - timedelta(minutes=30)))  # fmt: skip
    return status_doc(rows)


# --- the headline --------------------------------------------------------------------------


def test_the_headline_counts_the_incidents_worst_first_as_now_lists_them() -> None:
    page = render_page(incidents_status(), [], now=NOW)
    head = text_of(page, "headline")
    assert head == "1 shutdown, 3 blocked (2 DNS, 1 TLS), 1 outage"
    # the same incidents as the "Now" lines below it, one count per line
    items = [squash(i) for i in now_of(page).items]
    assert len(items) == 1 + 3 + 1
    assert [i.split(":")[0] for i in items] == [
        "▼ Vantage down", "✕ DNS blocked", "✕ DNS blocked", "✕ TLS blocked", "▽ Service down",
    ]  # fmt: skip
    # it is the first thing on the page: inside "Now", before the per-measurement counts
    assert page.index('id="h-now"') < page.index('id="headline"') < page.index('class="now-list"')
    assert page.index('id="headline"') < page.index('id="counts"')
    # the browser tab counts the same incidents (not the 11 measurements that are not ok)
    assert "<title>(5) lifeline status</title>" in page
    # each count wears its verdict's colour, the shutdown as the alarm
    assert re.search(r'<span class="v-vantage_down chip" data-verdict="vantage_down">', page)
    assert re.search(r'<span class="v-tls_blocked chip" data-verdict="tls_blocked">1 TLS', page)


def test_the_headline_of_a_quiet_page_and_of_an_empty_one() -> None:
    results = [result("news", "https://news.test/", v, "ok") for v in ("control", "censored")]
    assert text_of(render_page(status_doc(results), [], now=NOW), "headline") == "All reachable"
    empty = status_doc([]) | {"ready": False}
    assert text_of(render_page(empty, [], now=NOW), "headline") == "No results yet"


def test_the_headline_names_every_kind_once_in_plural() -> None:
    one_h = NOW - timedelta(hours=1)
    rows = [
        result(f"s{i}", f"https://s{i}.test/", "censored", v, since=one_h)
        for i, v in enumerate(
            ("http_blocked", "tcp_blocked", "tcp_blocked", "throttled", "anomaly", "anomaly",
             "unreachable", "error")
        )
    ]  # fmt: skip
    head = text_of(render_page(status_doc(rows), [], now=NOW), "headline")
    assert head == (
        "3 blocked (2 TCP, 1 HTTP), 1 throttled, 2 anomalies, 1 unreachable, 1 measurement error"
    )


# --- the legend ------------------------------------------------------------------------------


def test_the_legend_is_read_above_the_matrix_not_at_the_bottom() -> None:
    page = render_page(incidents_status(), [], now=NOW)
    assert page.index('id="now"') < page.index('id="legend"') < page.index('id="matrix"')
    legend = page[page.index('id="legend"') : page.index("</dl>", page.index('id="legend"'))]
    for verdict, k in LOOKS.items():
        assert f'class="v-{verdict} chip"' in legend and k.label in legend


# --- ?only=problems ------------------------------------------------------------------------


def test_only_problems_says_a_down_vantage_once_instead_of_in_every_row() -> None:
    page = render_page(incidents_status(), [], now=NOW, only_problems=True)
    cells = summary_cells(page)
    # no vantage_down cell in any row, no column for the down vantage
    assert {v for _, v in cells} == {"control", "censored"}
    assert not [c for c in cells.values() if c.attrs["data-verdict"] == "vantage_down"]
    assert [h.split()[0] for h in parse(page).col_heads] == ["service", "control", "censored"]
    # only what is wrong elsewhere is listed: "quiet" was down only at the down vantage
    assert {s for s, _ in cells} == {"news", "chat", "video", "outage"}
    # the down vantage is one line above the matrix
    notes = re.findall(r'<p class="v-vantage_down folded" data-v="([^"]*)">(.*?)</p>', page)
    assert [n for n, _ in notes] == ["shutdown"]
    note = squash(re.sub(r"<[^>]+>", "", notes[0][1]))
    assert note.startswith(
        "▼ shutdown (IR) is down: every canary fails, so all 5 services (5 targets) there are "
        "vantage_down for 30m · since 01:00 UTC."
    )
    assert page.index('class="v-vantage_down folded"') < page.index('id="matrix"')
    # the full page still shows the column, cell by cell
    full = summary_cells(render_page(incidents_status(), [], now=NOW))
    assert full[("quiet", "shutdown")].attrs["data-verdict"] == "vantage_down"
    # a vantage only partly down keeps its column: its other verdicts are news
    rows = [
        result("a", "https://a.test/", "shutdown", "vantage_down"),
        result("b", "https://b.test/", "shutdown", "dns_blocked"),
        result("a", "https://a.test/", "censored", "ok"),
        result("b", "https://b.test/", "censored", "ok"),
    ]
    page = render_page(status_doc(rows), [], now=NOW, only_problems=True)
    assert 'class="v-vantage_down folded"' not in page
    cells = summary_cells(page)
    assert cells[("a", "shutdown")].attrs["data-verdict"] == "vantage_down"
    assert cells[("b", "shutdown")].attrs["data-verdict"] == "dns_blocked"
    # a shutdown and nothing else: the note, and a matrix that says nothing else is wrong
    rows = [result(s, f"https://{s}.test/", v, "vantage_down" if v == "shutdown" else "ok")
            for s in ("a", "b") for v in ("control", "censored", "shutdown")]  # fmt: skip
    page = render_page(status_doc(rows), [], now=NOW, only_problems=True)
    assert summary_cells(page) == {}
    assert page.count('class="v-vantage_down folded"') == 1
    assert "Nothing is wrong: every service is ok from every vantage shown." in page
    assert "No results yet." not in page


# --- the timeline's ranges and a fresh incident ----------------------------------------------


def _range_links(page: str) -> list[tuple[str, str, bool]]:
    links = page[page.index('class="tl-links"') :]
    links = links[: links.index("</p>")]
    return [
        (href.replace("&amp;", "&"), label, "aria-current" in attrs)
        for href, attrs, label in re.findall(r'<a href="([^"]*)"([^>]*)>([^<]*)</a>', links)
    ]


def test_timeline_range_links_are_1h_6h_24h_7d_and_keep_only_problems() -> None:
    page = render_page(incidents_status(), [], now=NOW)
    assert _range_links(page) == [
        ("/?hours=1", "1 h", False),
        ("/?hours=6", "6 h", False),
        ("/", "24 h", True),  # the default
        ("/?hours=168", "7 d", False),
    ]
    page = render_page(incidents_status(), [], now=NOW, hours=1, only_problems=True)
    assert _range_links(page) == [
        ("/?hours=1&only=problems", "1 h", True),
        ("/?hours=6&only=problems", "6 h", False),
        ("/?only=problems", "24 h", False),
        ("/?hours=168&only=problems", "7 d", False),
    ]
    assert "Timeline, last 1h" in page
    assert '<a href="/?hours=1">show all services</a>' in page  # the range is kept


def test_a_fresh_incident_is_a_visible_band_on_the_default_timeline() -> None:
    fresh = NOW - timedelta(minutes=2)
    results = [result("tw", "https://tw.test/", "censored", "tls_blocked", since=fresh)]
    changes = [
        change("tw", "https://tw.test/", "censored", "ok", NOW - timedelta(days=2), fresh),
        change("tw", "https://tw.test/", "censored", "tls_blocked", fresh, previous="ok"),
    ]
    page = render_page(status_doc(results), changes, now=NOW)  # the default 24 h
    section = page[page.index('<section class="tl" data-s="tw">') :]
    section = section[: section.index("</section>")]
    rects = re.findall(r'<rect class="(v-[a-z_]+)" x="([0-9.]+)" y="0" width="([0-9.]+)"', section)
    assert [r[0] for r in rects] == ["v-ok", "v-tls_blocked"]  # the problem drawn on top
    _, x, width = rects[1]
    assert float(width) >= 15  # 1.5 % of the row, not 2 minutes of 24 hours (0.14 %)
    assert float(x) + float(width) == 1000  # it ends at "now"
    # its true times in its tip, and in words beside the band
    assert "TLS blocked 2026-11-21T01:28:00Z to 2026-11-21T01:30:00Z" in section
    assert '<span class="tl-what">TLS blocked from 01:28</span>' in section


# --- colours ---------------------------------------------------------------------------------


def _rules(css: str) -> dict[str, dict[str, str]]:
    """CSS rules as selector -> declarations (no nesting: one scheme's part of page.css)."""
    out: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        decls = dict(
            (k.strip(), v.strip())
            for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d)
        )
        for sel in selectors.split(","):
            out.setdefault(sel.strip(), {}).update(decls)
    return out


def test_each_verdict_has_one_colour_defined_once_shared_by_cells_and_bands() -> None:
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S)
    dark_at = css.index("@media (prefers-color-scheme: dark)")
    rules = _rules(css[:dark_at] + css[css.index("}", css.index("}", dark_at) + 1) + 1 :])
    dark = _rules(css[css.index("{", dark_at) + 1 :])[":root"]
    apart = [
        "dns_blocked", "tcp_blocked", "tls_blocked", "http_blocked", "throttled",
        "vantage_down", "service_down", "anomaly", "ok",
    ]  # fmt: skip
    for scheme in (rules[":root"], dark):
        colours: dict[str, str] = {}
        for verdict in LOOKS:
            rule = rules[f".v-{verdict}"]
            bg = re.fullmatch(r"var\((--[a-z_-]+)\)", rule["background"])
            assert bg, (verdict, rule)
            assert rule["fill"] == rule["background"]  # the timeline band is the cell's colour
            assert re.fullmatch(r"var\(--[a-z_-]+\)", rule["color"]), (verdict, rule)
            colours[verdict] = scheme[bg.group(1)].lower()
        # each blocking method its own colour; shutdowns, outages and blocks apart
        assert len({colours[v] for v in apart}) == len(apart), colours
