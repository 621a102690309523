"""What `/metrics` serves: the exposition rendered per series, as results are published.

About 2 KB of the exposition per (service, target, vantage) (eleven
`lifeline_verdict` lines, the timestamps, the stage durations) made the
reference collector (:mod:`exporter.metrics`) cost ~0.35 ms per series,
seconds per scrape at tens of thousands of series, all of it blocking the
event loop. :class:`MetricsPage` renders what varies in a series (its label
core, timestamps and stage lines, ~1 KB) when its result is published (the
board calls it), and puts the series in place in flat lists of byte strings,
one per family, in config order (:class:`_Layout`). The eleven
`lifeline_verdict` lines and the `lifeline_reachable` line are the core
between constant joints, so they cost pointers, not bytes. A scrape is then a
``bytes.join`` of list slices per chunk, in the families' order, with their
HELP and TYPE once each. The small families (serve's own health, vantages,
ratios, counters) still go through prometheus_client. Both give the same
bytes (a test compares them).

The page is never held whole (67 MB at 30,000 series, and aiohttp and asyncio
each copied it again on the way out): a scrape is an :class:`Exposition`, a
copy of the lists as they were when it began, written a chunk at a time or
gzipped chunk by chunk (1/17 of the size at zlib level 1).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om_format
from prometheus_client.registry import Collector

from exporter.metrics import KEY, Family, HeadCollector, TailCollector, go_float, registry_for
from exporter.scheduler import Board, Entry, epoch
from probes.records import Verdict

Format = Literal["text", "openmetrics"]
EOF_LINE = b"# EOF\n"
#: Name-escaping schemes under which our (legacy-valid) names come out unchanged.
_PLAIN_ESCAPING = (om_format.UNDERSCORES, om_format.ALLOWUTF8)
#: The per-series families, in the order the reference collector yields them.
_SERIES_FAMILIES: tuple[tuple[str, str, list[str]], ...] = (
    (
        "lifeline_verdict",
        "1 for the current verdict of each (service, target, vantage), 0 for the others.",
        [*KEY, "verdict"],
    ),
    ("lifeline_reachable", "1 if the current verdict is ok.", KEY),
    (
        "lifeline_verdict_change_timestamp_seconds",
        "When the current verdict began (survives restarts).",
        KEY,
    ),
    (
        "lifeline_last_measurement_timestamp_seconds",
        "When the latest measurement that carries the current verdict started.",
        KEY,
    ),
    (
        "lifeline_stage_duration_seconds",
        "Duration of each stage that ran in the latest published measurement.",
        [*KEY, "stage"],
    ),
)
#: Series of `lifeline_verdict` per chunk written out (about 1.5 MB); a chunk of the
#: page is that many series' worth of pieces (23 each), the small families' merged in.
CHUNK_SERIES = 1024
#: Pieces per chunk gzipped (in a worker thread): about 4 MB, some 16 zlib calls for
#: 30,000 series (4,096 series of each family a chunk was 47). After each call the
#: thread waits for the GIL, which a busy event loop gives up only every 5 ms, so
#: fewer calls finish sooner; but one ``bytes.join`` of much more than this falls
#: out of the CPU's caches (30,000 series alone: 0.03 s of joins in 1<<13-piece
#: chunks, 0.06 s in these, 0.2 s in 1<<18).
GZIP_CHUNK_PIECES = 1 << 16
#: zlib level of a gzipped /metrics: 1 already shrinks the page ~17 times (its lines
#: repeat), at a quarter of the CPU of the default 6, which saves only 10% more.
GZIP_LEVEL = 1


def format_of(encoder: object) -> Format | None:
    """Which of our two fast formats an encoder from ``choose_encoder`` writes, if either."""
    if encoder is text_format.generate_latest:
        return "text"
    if not isinstance(encoder, partial):
        return None
    if encoder.keywords.get("escaping", om_format.UNDERSCORES) not in _PLAIN_ESCAPING:
        return None
    if encoder.func is om_format.generate_latest:
        return "openmetrics"
    if encoder.func is text_format.generate_latest:
        return "text"
    return None


def label_value(value: str) -> str:
    """A label value escaped as both exposition formats escape it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


#: The eleven `lifeline_verdict` values of one series: 1 for the current verdict.
_VERDICTS = tuple(v.value for v in Verdict)


def _verdict_joints(current: str | None) -> tuple[bytes, ...]:
    """What goes around a series' label core (``service=…,vantage="…"``) in its eleven lines.

    ``core.join(joints)`` is the series' whole `lifeline_verdict` block: the
    lines differ only by the verdict label and the value, so the block is made
    at scrape time from the core, in one call, instead of being kept.
    """
    ends = [f',verdict="{v}"}} {"1.0" if v == current else "0.0"}\n' for v in _VERDICTS]
    joints = ["lifeline_verdict{"]
    joints += [end + "lifeline_verdict{" for end in ends[:-1]]
    joints.append(ends[-1])
    return tuple(j.encode() for j in joints)


_VERDICT_JOINTS: dict[str, tuple[bytes, ...]] = {v: _verdict_joints(v) for v in _VERDICTS}
_NO_VERDICT_JOINTS = _verdict_joints(None)  # a verdict outside the set: every line 0
_REACHABLE = (b"lifeline_reachable{", b"} 1.0\n")
_UNREACHABLE = (b"lifeline_reachable{", b"} 0.0\n")
_SINCE = b"lifeline_verdict_change_timestamp_seconds{"
_LAST = b"lifeline_last_measurement_timestamp_seconds{"
_OK = Verdict.OK.value
#: A series' bytes besides its core, timestamps and stage lines (the same for every verdict).
_FIXED_SIZE = sum(map(len, (*_NO_VERDICT_JOINTS, *_REACHABLE, _SINCE, _LAST)))


class _Series:
    """What one (service, target, vantage) adds to the page, made when its result is published.

    Only the parts that vary are kept: the label core (shared by every line of
    the series, made once per key), the two timestamps' line ends, and the stage
    lines. The `lifeline_verdict` and `lifeline_reachable` lines are the core
    between constant joints, laid out as pieces (:meth:`pieces`) and joined at
    scrape time; ``size`` is the series' share of the page in bytes (for
    Content-Length).
    """

    __slots__ = ("core", "entry", "last", "reachable", "since", "size", "stages", "verdict")

    entry: Entry
    core: bytes
    verdict: tuple[bytes, ...]
    reachable: tuple[bytes, bytes]
    since: bytes
    last: bytes
    stages: bytes
    size: int

    def __init__(self, entry: Entry, before: _Series | None) -> None:
        self.entry = entry
        if before is not None:
            self.core = before.core
        else:
            self.core = (
                f'service="{label_value(entry.service)}",target="{label_value(entry.target)}",'
                f'vantage="{label_value(entry.vantage)}"'
            ).encode()
        self.verdict = _VERDICT_JOINTS.get(entry.verdict, _NO_VERDICT_JOINTS)
        self.reachable = _REACHABLE if entry.verdict == _OK else _UNREACHABLE
        if before is not None and before.entry.since == entry.since:
            self.since = before.since
        else:
            self.since = f"}} {go_float(epoch(entry.since))}\n".encode()
        self.last = f"}} {go_float(epoch(entry.time))}\n".encode()
        if before is not None and before.entry.durations == entry.durations:
            self.stages = before.stages
        else:
            s, t = label_value(entry.service), label_value(entry.target)
            v = label_value(entry.vantage)
            self.stages = "".join(
                f'lifeline_stage_duration_seconds{{service="{s}",stage="{stage}",target="{t}",'
                f'vantage="{v}"}} {go_float(seconds)}\n'
                for stage, seconds in entry.durations
            ).encode()
        # 11 verdict lines, reachable, since and last: 14 times the core
        self.size = (
            14 * len(self.core) + _FIXED_SIZE + len(self.since) + len(self.last) + len(self.stages)
        )

    def pieces(self) -> tuple[list[bytes], ...]:
        """The series' pieces of each per-series family, in order (see :class:`_Layout`)."""
        core = self.core
        verdict = [core] * 23  # 12 joints around 11 cores
        verdict[0::2] = self.verdict
        return (
            verdict,
            [self.reachable[0], core, self.reachable[1]],
            [_SINCE, core, self.since],
            [_LAST, core, self.last],
            [self.stages],
        )


#: Pieces per series in each per-series family's flat list (see :meth:`_Series.pieces`).
_WIDTHS = (23, 3, 3, 3, 1)


class _Layout:
    """The per-series families of the page as flat lists of byte strings, in config order.

    Series ``i`` holds ``_WIDTHS[f]`` pieces from ``i * _WIDTHS[f]`` on in
    family ``f``'s list (all ``b""`` before it was first published), so a
    published result replaces a few list items, and a chunk of the page is one
    slice and one ``bytes.join``: no Python loop per series at scrape time,
    which matters when the scrape is gzipped in a thread beside a busy event
    loop. The pieces are the series' shared parts (its core, the constants), so
    the lists cost pointers, not copies of the lines.
    """

    def __init__(self, keys: Sequence[tuple[str, str, str]]) -> None:
        self.index = {key: i for i, key in enumerate(keys)}
        self.series: list[_Series | None] = [None] * len(keys)
        self.flat: list[list[bytes]] = [[b""] * (w * len(keys)) for w in _WIDTHS]
        self.length = 0  # the per-series families' bytes, headers aside

    def put(self, i: int, series: _Series) -> None:
        old = self.series[i]
        self.series[i] = series
        self.length += series.size - (old.size if old is not None else 0)
        for flat, width, pieces in zip(self.flat, _WIDTHS, series.pieces(), strict=True):
            flat[i * width : (i + 1) * width] = pieces


class Exposition:
    """One scrape of `/metrics`, fixed when the scrape began, written out in chunks.

    It holds the small families already encoded and, for the per-series ones,
    copies of the flat lists of :class:`_Layout` as they were (pointers to
    immutable pieces): the page itself is never held whole. :meth:`chunks`
    gives it about a megabyte at a time, and :meth:`gzipped` compresses it as
    it goes (zlib lets other threads run meanwhile, so it may run in one).
    """

    def __init__(
        self,
        content_type: str,
        parts: Sequence[bytes],
        families: Sequence[list[bytes]] = (),
        headers: Sequence[bytes] = (),
        tail: Sequence[bytes] = (),
        series_length: int = 0,
    ) -> None:
        self.content_type = content_type
        self._parts = parts  # before the per-series families (or the whole page)
        self._families = families
        self._headers = headers  # one per per-series family; none: no such families
        self._tail = tail
        #: The length of the page in bytes.
        self.length = (
            sum(map(len, parts)) + sum(map(len, headers)) + series_length + sum(map(len, tail))
        )

    def chunks(self, per_chunk: int = CHUNK_SERIES * _WIDTHS[0]) -> Iterator[bytes]:
        """The page in order, about ``per_chunk`` pieces at a time (small parts merged in)."""
        pending = list(self._parts)
        for header, flat in zip(self._headers, self._families, strict=True):
            pending.append(header)
            for i in range(0, len(flat), per_chunk):
                pending += flat[i : i + per_chunk]
                if len(pending) >= per_chunk:
                    yield b"".join(pending)
                    pending = []
        pending += self._tail
        yield b"".join(pending)

    def body(self) -> bytes:
        """The whole page in one piece (small pages, tests)."""
        return b"".join(self.chunks())

    def gzipped(self, level: int = GZIP_LEVEL) -> bytes:
        """The page gzipped (RFC 1952), made chunk by chunk."""
        z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out = [z.compress(chunk) for chunk in self.chunks(GZIP_CHUNK_PIECES)]
        out.append(z.flush())
        return b"".join(out)


class MetricsPage:
    """`/metrics` of a board, pre-rendered per series (byte for byte what the collector gives).

    A series' lines are rendered when its result is published (the board calls
    :meth:`_published`) and put in place in the :class:`_Layout`; anything else
    that changes the board (a restore from the store, a new config) is seen by
    its version at the next scrape, which then lays the page out again, keeping
    the series whose entries did not change. A scrape renders the small
    families and copies the layout's lists (:class:`Exposition`); the page is
    written from that in chunks, never held whole. ``extra`` collectors (the
    hub's agent clocks) come last, as they did in the registry.
    """

    def __init__(self, board: Board, extra: Sequence[Collector] = ()) -> None:
        self._board = board
        self._head = CollectorRegistry(auto_describe=False)
        self._head.register(HeadCollector(board))
        self._tail = CollectorRegistry(auto_describe=False)
        self._tail.register(TailCollector(board))
        self.reference = registry_for(board)  # every family from scratch: exotic formats
        for collector in extra:
            self._tail.register(collector)
            self.reference.register(collector)
        self._layout = _Layout(())
        self._synced = -1  # the board's version the layout shows
        self._headers: dict[Format, list[bytes]] = {}
        self._sync()
        board.watch(self._published)

    def exposition(self, accept: str | None) -> Exposition:
        """This scrape's page, in the format the scraper asked for."""
        encoder, content_type = choose_encoder(accept or "")
        fmt = format_of(encoder)
        if fmt is None:
            return Exposition(content_type, [encoder(self.reference)])
        head, tail = encoder(self._head), encoder(self._tail)
        if fmt == "openmetrics":
            head, tail = head.removesuffix(EOF_LINE), tail.removesuffix(EOF_LINE)
        if self._synced != self._board.version:
            self._sync()
        layout = self._layout
        end = [tail, EOF_LINE] if fmt == "openmetrics" else [tail]
        families = [list(flat) for flat in layout.flat]  # this scrape's own: publishing goes on
        headers = self._family_headers(fmt)
        return Exposition(content_type, [head], families, headers, end, layout.length)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The whole page in the format the scraper asked for, and its content type."""
        page = self.exposition(accept)
        return page.body(), page.content_type

    def _published(self, key: tuple[str, str, str], entry: Entry) -> None:
        """Render one published entry's series and put it in place."""
        board = self._board
        if self._synced != board.version - 1:  # something else changed too: the next scrape syncs
            return
        self._synced = board.version
        layout = self._layout
        i = layout.index.get(key)
        if i is not None:
            layout.put(i, _Series(entry, layout.series[i]))

    def _sync(self) -> None:
        """Lay the page out again from the board; keep the series whose entries are unchanged."""
        board = self._board
        old = self._layout
        keys = board.keys()
        layout = _Layout(keys)
        entries = board.entries
        for i, key in enumerate(keys):
            e = entries.get(key)
            if e is None:
                continue
            j = old.index.get(key)
            series = old.series[j] if j is not None else None
            if series is None or series.entry is not e:
                series = _Series(e, series)
            layout.put(i, series)
        self._layout = layout
        self._synced = board.version

    def _family_headers(self, fmt: Format) -> list[bytes]:
        """# HELP and # TYPE of each per-series family, as the library writes them."""
        headers = self._headers.get(fmt)
        if headers is None:
            headers = [
                family_header(fmt, name, documentation, labels)
                for name, documentation, labels in _SERIES_FAMILIES
            ]
            self._headers[fmt] = headers
        return headers


def family_header(fmt: Format, name: str, documentation: str, labels: Sequence[str]) -> bytes:
    """A gauge family's # HELP and # TYPE lines, written by the library itself."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([GaugeMetricFamily(name, documentation, labels=labels)]))
    encoder = om_format.generate_latest if fmt == "openmetrics" else text_format.generate_latest
    return bytes(encoder(registry)).removesuffix(EOF_LINE)


class _Fixed(Collector):
    """Yields the families it was given (to have the library write their headers)."""

    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Family]:
        yield from self._families
