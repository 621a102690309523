"""Prometheus metrics of `lifeline serve` (CONTRACT §6) and of one `/probe`.

Every label value comes from the config (targets, vantages) or from a closed
set (verdicts, stages), so the number of series is bounded by the config, and
a scrape never measures anything.

Two renderers give the same bytes:

- :class:`LifelineCollector`, a prometheus_client collector that builds every
  family from the :class:`Board` at scrape time. It is the reference, and what
  an exotic Accept header (a name-escaping scheme other than underscores or
  UTF-8) gets.
- :class:`MetricsPage`, what `/metrics` normally serves. About 2 KB of the
  exposition per (service, target, vantage) (eleven `lifeline_verdict` lines,
  the timestamps, the stage durations) made the collector cost ~0.35 ms per
  series, seconds per scrape at tens of thousands of series, all of it
  blocking the event loop. The page renders what varies in a series (its
  label core, timestamps and stage lines, ~1 KB) once, when its entry changed
  since the last scrape; the eleven `lifeline_verdict` lines and the
  `lifeline_reachable` line are made from the core at scrape time, one
  ``bytes.join`` each. The small families (serve's own health, vantages,
  ratios, counters) still go through prometheus_client.

The page is never held whole (67 MB at 30,000 series, and aiohttp and asyncio
each copied it again on the way out): a scrape is an :class:`Exposition`, the
list of series as they were when it began, written a chunk at a time or
gzipped chunk by chunk (1/17 of the size at zlib level 1).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om_format
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.scheduler import Board, Entry, epoch
from probes import __version__
from probes.records import Result, Verdict

__all__ = [
    "Exposition",
    "LifelineCollector",
    "MetricsPage",
    "ProbeExposition",
    "encode",
    "probe_registry",
    "registry_for",
]

_KEY = ["service", "target", "vantage"]
Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


class LifelineCollector(Collector):
    """Yields lifeline's metric families from a :class:`Board` at scrape time (the reference)."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[Family]:
        board = self._board
        entries = board.ordered()
        yield from _head_metrics(board)
        yield from _verdict_metrics(entries)
        yield from _time_metrics(entries)
        yield _stage_durations(entries)
        yield from _tail_metrics(board, entries)


class _HeadCollector(Collector):
    """The families before the per-series ones: serve's health and the vantages."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[Family]:
        yield from _head_metrics(self._board)


class _TailCollector(Collector):
    """The families after the per-series ones: ratios per service, measurement counters."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[Family]:
        board = self._board
        yield from _tail_metrics(board, board.ordered())


def _head_metrics(board: Board) -> Iterator[Family]:
    yield from _self_metrics(board)
    yield from _lateness_metrics(board)
    yield from _vantage_metrics(board)


def _tail_metrics(board: Board, entries: list[Entry]) -> Iterator[Family]:
    yield _service_ratio(entries)
    total = CounterMetricFamily(
        "lifeline_measurements",
        "Measurements taken by the schedule, by the verdict they were judged to have.",
        labels=["service", "vantage", "verdict"],
    )
    for (service, vantage, verdict), n in sorted(board.measurements.items()):
        total.add_metric([service, vantage, verdict], n)
    yield total


def _lateness_metrics(board: Board) -> Iterator[Family]:
    lateness = board.lateness
    yield HistogramMetricFamily(
        "lifeline_measurement_lateness_seconds",
        "How long after its slot was due each scheduled measurement started "
        "(waiting for a place in the concurrency bounds).",
        buckets=[(_go(bound), n) for bound, n in lateness.cumulative()],
        sum_value=lateness.total,
    )
    yield CounterMetricFamily(
        "lifeline_late_measurements",
        "Scheduled measurements that started more than one interval after they were due.",
        value=lateness.late,
    )


def _self_metrics(board: Board) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    info = GaugeMetricFamily(
        "lifeline_build_info", "lifeline's version; always 1.", labels=["version"]
    )
    info.add_metric([__version__], 1)
    yield info
    yield CounterMetricFamily(
        "lifeline_skipped_measurements",
        "Scheduled measurements not taken because the previous round of their target overran.",
        value=board.skipped,
    )
    yield CounterMetricFamily(
        "lifeline_log_write_failures",
        "Probe-log records lost to disk errors.",
        value=board.log_failures(),
    )
    yield CounterMetricFamily(
        "lifeline_store_write_failures",
        "Batches of results the SQLite store failed to save.",
        value=board.store_failures,
    )
    yield GaugeMetricFamily(
        "lifeline_config_last_reload_successful",
        "1 if the last configuration (re)load succeeded.",
        value=1 if board.reload_ok else 0,
    )
    yield GaugeMetricFamily(
        "lifeline_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully.",
        value=board.reload_time,
    )
    yield GaugeMetricFamily(
        "lifeline_tasks",
        "asyncio tasks alive in serve's event loop (flat over time when nothing leaks).",
        value=board.tasks(),
    )
    yield GaugeMetricFamily(
        "lifeline_ready",
        "1 once every target has been measured from every vantage at least once.",
        value=1 if board.ready else 0,
    )
    if board.workers is not None:  # serve --workers N
        configured, running, restarts = board.workers()
        yield GaugeMetricFamily(
            "lifeline_measuring_workers",
            "Measuring worker processes serve was started with (--workers).",
            value=configured,
        )
        yield GaugeMetricFamily(
            "lifeline_measuring_workers_running",
            "Measuring worker processes running now.",
            value=running,
        )
        yield CounterMetricFamily(
            "lifeline_measuring_worker_restarts",
            "Measuring worker processes that ended and were started again.",
            value=restarts,
        )


def _vantage_metrics(board: Board) -> Iterator[GaugeMetricFamily]:
    info = GaugeMetricFamily(
        "lifeline_vantage_info",
        "Metadata of each configured vantage; always 1.",
        labels=["vantage", "control", "country", "timezone"],
    )
    up = GaugeMetricFamily(
        "lifeline_vantage_up", "0 when every canary of the vantage fails.", labels=["vantage"]
    )
    states = board.vantages_up()
    for v in board.config.vantages:
        info.add_metric(
            [v.name, "true" if v.control else "false", v.country or "", v.timezone or ""], 1
        )
        state = states.get(v.name)
        if state is not None:
            up.add_metric([v.name], 1 if state else 0)
    yield info
    yield up


def _verdict_metrics(entries: list[Entry]) -> Iterator[GaugeMetricFamily]:
    verdict = GaugeMetricFamily(
        "lifeline_verdict",
        "1 for the current verdict of each (service, target, vantage), 0 for the others.",
        labels=[*_KEY, "verdict"],
    )
    reachable = GaugeMetricFamily(
        "lifeline_reachable", "1 if the current verdict is ok.", labels=_KEY
    )
    for e in entries:
        key = [e.service, e.target, e.vantage]
        for v in Verdict:
            verdict.add_metric([*key, v.value], 1 if e.verdict == v.value else 0)
        reachable.add_metric(key, 1 if e.verdict == Verdict.OK.value else 0)
    yield verdict
    yield reachable


def _time_metrics(entries: list[Entry]) -> Iterator[GaugeMetricFamily]:
    since = GaugeMetricFamily(
        "lifeline_verdict_change_timestamp_seconds",
        "When the current verdict began (survives restarts).",
        labels=_KEY,
    )
    last = GaugeMetricFamily(
        "lifeline_last_measurement_timestamp_seconds",
        "When the latest measurement that carries the current verdict started.",
        labels=_KEY,
    )
    for e in entries:
        key = [e.service, e.target, e.vantage]
        since.add_metric(key, epoch(e.since))
        last.add_metric(key, epoch(e.time))
    yield since
    yield last


def _stage_durations(entries: list[Entry]) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(
        "lifeline_stage_duration_seconds",
        "Duration of each stage that ran in the latest published measurement.",
        labels=[*_KEY, "stage"],
    )
    for e in entries:
        for stage, seconds in e.durations:
            fam.add_metric([e.service, e.target, e.vantage, stage], seconds)
    return fam


def _service_ratio(entries: list[Entry]) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(
        "lifeline_service_reachable_ratio",
        "Share of a service's targets whose current verdict is ok, per vantage.",
        labels=["service", "vantage"],
    )
    counts: dict[tuple[str, str], list[int]] = {}
    ok_value = Verdict.OK.value
    for e in entries:
        c = counts.setdefault((e.service, e.vantage), [0, 0])
        c[0] += e.verdict == ok_value
        c[1] += 1
    for (service, vantage), (ok, n) in counts.items():
        fam.add_metric([service, vantage], ok / n)
    return fam


def registry_for(board: Board) -> CollectorRegistry:
    """The registry behind /metrics: lifeline's collector only (no process globals)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LifelineCollector(board))
    return registry


def encode(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Exposition in the format the scraper asked for (OpenMetrics or text 0.0.4)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# --- the incremental page ------------------------------------------------------------

Format = Literal["text", "openmetrics"]
_EOF = b"# EOF\n"
#: Name-escaping schemes under which our (legacy-valid) names come out unchanged.
_PLAIN_ESCAPING = (om_format.UNDERSCORES, om_format.ALLOWUTF8)
#: The per-series families, in the order the reference collector yields them.
_SERIES_FAMILIES: tuple[tuple[str, str, list[str]], ...] = (
    (
        "lifeline_verdict",
        "1 for the current verdict of each (service, target, vantage), 0 for the others.",
        [*_KEY, "verdict"],
    ),
    ("lifeline_reachable", "1 if the current verdict is ok.", _KEY),
    (
        "lifeline_verdict_change_timestamp_seconds",
        "When the current verdict began (survives restarts).",
        _KEY,
    ),
    (
        "lifeline_last_measurement_timestamp_seconds",
        "When the latest measurement that carries the current verdict started.",
        _KEY,
    ),
    (
        "lifeline_stage_duration_seconds",
        "Duration of each stage that ran in the latest published measurement.",
        [*_KEY, "stage"],
    ),
)
#: Series per chunk of a family written out: about 1 MB of `lifeline_verdict` lines.
CHUNK_SERIES = 1024
#: Series per chunk of a family gzipped (in a worker thread): about 5 MB. After each
#: chunk the thread waits for the GIL, which a busy event loop gives up only every
#: 5 ms: beside a busy thread, 30,000 series took 1.4 s in 1 MB chunks, 0.75 s in
#: these (0.2 s alone).
GZIP_CHUNK_SERIES = 4096
#: zlib level of a gzipped /metrics: 1 already shrinks the page ~17 times (its lines
#: repeat), at a quarter of the CPU of the default 6, which saves only 10% more.
GZIP_LEVEL = 1


def _format_of(encoder: object) -> Format | None:
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


def _label(value: str) -> str:
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
    """What one (service, target, vantage) adds to the page, made when its entry changed.

    Only the parts that vary are kept: the label core (shared by every line of
    the series, made once per key), the two timestamps' line ends, and the stage
    lines. The `lifeline_verdict` and `lifeline_reachable` lines are made from
    the core and the verdict at scrape time; ``size`` is the series' share of
    the page in bytes (for Content-Length).
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
                f'service="{_label(entry.service)}",target="{_label(entry.target)}",'
                f'vantage="{_label(entry.vantage)}"'
            ).encode()
        self.verdict = _VERDICT_JOINTS.get(entry.verdict, _NO_VERDICT_JOINTS)
        self.reachable = _REACHABLE if entry.verdict == _OK else _UNREACHABLE
        if before is not None and before.entry.since == entry.since:
            self.since = before.since
        else:
            self.since = f"}} {_go(epoch(entry.since))}\n".encode()
        self.last = f"}} {_go(epoch(entry.time))}\n".encode()
        if before is not None and before.entry.durations == entry.durations:
            self.stages = before.stages
        else:
            s, t, v = _label(entry.service), _label(entry.target), _label(entry.vantage)
            self.stages = "".join(
                f'lifeline_stage_duration_seconds{{service="{s}",stage="{stage}",target="{t}",'
                f'vantage="{v}"}} {_go(seconds)}\n'
                for stage, seconds in entry.durations
            ).encode()
        # 11 verdict lines, reachable, since and last: 14 times the core
        self.size = (
            14 * len(self.core) + _FIXED_SIZE + len(self.since) + len(self.last) + len(self.stages)
        )


def _verdict_chunk(series: Sequence[_Series]) -> bytes:
    return b"".join([x.core.join(x.verdict) for x in series])


def _reachable_chunk(series: Sequence[_Series]) -> bytes:
    return b"".join([x.core.join(x.reachable) for x in series])


def _since_chunk(series: Sequence[_Series]) -> bytes:
    return b"".join([_SINCE + x.core + x.since for x in series])


def _last_chunk(series: Sequence[_Series]) -> bytes:
    return b"".join([_LAST + x.core + x.last for x in series])


def _stages_chunk(series: Sequence[_Series]) -> bytes:
    return b"".join([x.stages for x in series])


_CHUNKERS = (_verdict_chunk, _reachable_chunk, _since_chunk, _last_chunk, _stages_chunk)


class Exposition:
    """One scrape of `/metrics`, fixed when the scrape began, written out in chunks.

    It holds the small families already encoded and, for the per-series ones,
    the list of series as they were (each immutable): the page itself is never
    held whole. :meth:`chunks` gives it about a megabyte at a time, and
    :meth:`gzipped` compresses it as it goes (zlib lets other threads run
    meanwhile, so it may run in one).
    """

    def __init__(
        self,
        content_type: str,
        parts: Sequence[bytes],
        series: Sequence[_Series] = (),
        headers: Sequence[bytes] = (),
        tail: Sequence[bytes] = (),
    ) -> None:
        self.content_type = content_type
        self._parts = parts  # before the per-series families (or the whole page)
        self._series = series
        self._headers = headers  # one per per-series family; none: no such families
        self._tail = tail
        #: The length of the page in bytes.
        self.length = (
            sum(map(len, parts))
            + sum(map(len, headers))
            + sum(x.size for x in series)
            + sum(map(len, tail))
        )

    def chunks(self, per_chunk: int = CHUNK_SERIES) -> Iterator[bytes]:
        """The page in order, ``per_chunk`` series of a family at a time."""
        yield from self._parts
        if self._headers:  # the per-series families
            series = self._series
            for header, chunk in zip(self._headers, _CHUNKERS, strict=True):
                yield header
                for i in range(0, len(series), per_chunk):
                    yield chunk(series[i : i + per_chunk])
        yield from self._tail

    def body(self) -> bytes:
        """The whole page in one piece (small pages, tests)."""
        return b"".join(self.chunks())

    def gzipped(self, level: int = GZIP_LEVEL) -> bytes:
        """The page gzipped (RFC 1952), made chunk by chunk."""
        z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out = [z.compress(chunk) for chunk in self.chunks(GZIP_CHUNK_SERIES)]
        out.append(z.flush())
        return b"".join(out)


class MetricsPage:
    """`/metrics` of a board, rendered incrementally (byte for byte what the collector gives).

    A series' varying parts are rendered once per change of its entry, lazily,
    at the next scrape; a scrape renders the small families and takes the list
    of series as it is (:class:`Exposition`). The page is written from that in
    chunks, never held whole. ``extra`` collectors (the hub's agent clocks)
    come last, as they did in the registry.
    """

    def __init__(self, board: Board, extra: Sequence[Collector] = ()) -> None:
        self._board = board
        self._head = CollectorRegistry(auto_describe=False)
        self._head.register(_HeadCollector(board))
        self._tail = CollectorRegistry(auto_describe=False)
        self._tail.register(_TailCollector(board))
        self.reference = registry_for(board)  # every family from scratch: exotic formats
        for collector in extra:
            self._tail.register(collector)
            self.reference.register(collector)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._ordered: list[_Series] = []
        self._seen_version = -1
        self._headers: dict[Format, list[bytes]] = {}

    def exposition(self, accept: str | None) -> Exposition:
        """This scrape's page, in the format the scraper asked for."""
        encoder, content_type = choose_encoder(accept or "")
        fmt = _format_of(encoder)
        if fmt is None:
            return Exposition(content_type, [encoder(self.reference)])
        head, tail = encoder(self._head), encoder(self._tail)
        if fmt == "openmetrics":
            head, tail = head.removesuffix(_EOF), tail.removesuffix(_EOF)
        self._refresh()
        end = [tail, _EOF] if fmt == "openmetrics" else [tail]
        return Exposition(content_type, [head], self._ordered, self._family_headers(fmt), end)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The whole page in the format the scraper asked for, and its content type."""
        page = self.exposition(accept)
        return page.body(), page.content_type

    def _refresh(self) -> None:
        """Re-render the series whose entries changed since the last scrape; drop gone ones."""
        board = self._board
        if board.version == self._seen_version:
            return
        old, fresh = self._series, {}
        entries = board.entries
        for key in board.keys():
            e = entries.get(key)
            if e is None:
                continue
            series = old.get(key)
            if series is None or series.entry is not e:
                series = _Series(e, series)
            fresh[key] = series
        self._series = fresh
        self._ordered = list(fresh.values())  # a new list: a scrape in progress keeps its own
        self._seen_version = board.version

    def _family_headers(self, fmt: Format) -> list[bytes]:
        """# HELP and # TYPE of each per-series family, as the library writes them."""
        headers = self._headers.get(fmt)
        if headers is None:
            headers = [
                _header(fmt, name, documentation, labels)
                for name, documentation, labels in _SERIES_FAMILIES
            ]
            self._headers[fmt] = headers
        return headers


def _header(fmt: Format, name: str, documentation: str, labels: Sequence[str]) -> bytes:
    """A gauge family's # HELP and # TYPE lines, written by the library itself."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([GaugeMetricFamily(name, documentation, labels=labels)]))
    encoder = om_format.generate_latest if fmt == "openmetrics" else text_format.generate_latest
    return bytes(encoder(registry)).removesuffix(_EOF)


def _go(value: float) -> str:
    """A sample value as both exposition formats write it (Go's float formatting)."""
    if type(value) is float and 0.0 <= value < 1e6:
        return repr(value)  # what floatToGoString gives there (no exponent to rewrite), faster
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class _Fixed(Collector):
    """Yields the families it was given (to have the library write their headers)."""

    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Family]:
        yield from self._families


# --- /probe ----------------------------------------------------------------------


#: One /probe family: name, help, label names, and (label values, value) per sample.
ProbeFamily = tuple[str, str, list[str], list[tuple[list[str], float]]]


def probe_registry(result: Result, duration_s: float) -> CollectorRegistry:
    """A fresh registry describing one /probe measurement, blackbox_exporter style."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProbeCollector(result, duration_s))
    return registry


def _probe_families(r: Result, duration_s: float) -> list[ProbeFamily]:
    """What one /probe answer says, in order: the blackbox-style families, then the verdict."""
    m = r.measurement
    http = m.http.duration_s if m.http is not None else 0.0
    transfer = (m.http.transfer_s or 0.0) if m.http is not None else 0.0
    dns = m.dns.duration_s if m.dns is not None else 0.0
    phases: list[tuple[list[str], float]] = [
        (["resolve"], dns),
        (["connect"], m.tcp.duration_s if m.tcp is not None else 0.0),
        (["tls"], m.tls.duration_s if m.tls is not None else 0.0),
        (["processing"], max(0.0, http - transfer)),
        (["transfer"], transfer),
    ]
    key = [m.service, m.target, m.vantage]
    return [
        (
            "probe_success",
            "1 if the verdict is ok (reachable and consistent).",
            [],
            [([], 1 if r.verdict is Verdict.OK else 0)],
        ),
        ("probe_duration_seconds", "How long the probe took.", [], [([], duration_s)]),
        ("probe_dns_lookup_time_seconds", "Duration of the DNS stage.", [], [([], dns)]),
        (
            "probe_http_status_code",
            "Status of the final HTTP response (0 if none).",
            [],
            [([], (m.http.status or 0) if m.http is not None else 0)],
        ),
        (
            "probe_http_duration_seconds",
            "Duration of each phase of the request.",
            ["phase"],
            phases,
        ),
        (
            "lifeline_verdict",
            "1 for this measurement's verdict, 0 for the others.",
            [*_KEY, "verdict"],
            [([*key, v.value], 1 if r.verdict is v else 0) for v in Verdict],
        ),
    ]


class _ProbeCollector(Collector):
    def __init__(self, result: Result, duration_s: float) -> None:
        self._result = result
        self._duration = duration_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, labels, samples in _probe_families(self._result, self._duration):
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for values, value in samples:
                family.add_metric(values, value)
            yield family


class ProbeExposition:
    """The answer to one /probe, written without building a registry per request.

    The families' headers are the library's own, made once per format; the
    samples are a few lines of formatting. Exotic Accept headers go through
    :func:`probe_registry`, which gives the same bytes.
    """

    def __init__(self) -> None:
        self._headers: dict[tuple[Format, str], bytes] = {}

    def render(self, result: Result, duration_s: float, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        fmt = _format_of(encoder)
        if fmt is None:
            return encoder(probe_registry(result, duration_s)), content_type
        out: list[bytes] = []
        for name, documentation, labels, samples in _probe_families(result, duration_s):
            header = self._headers.get((fmt, name))
            if header is None:
                header = self._headers[(fmt, name)] = _header(fmt, name, documentation, labels)
            out.append(header)
            order = sorted(range(len(labels)), key=labels.__getitem__)
            for values, value in samples:
                inner = ",".join(f'{labels[i]}="{_label(values[i])}"' for i in order)
                shown = f"{{{inner}}}" if inner else ""
                out.append(f"{name}{shown} {_go(value)}\n".encode())
        if fmt == "openmetrics":
            out.append(_EOF)
        return b"".join(out), content_type
