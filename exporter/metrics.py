"""Prometheus metrics of `lifeline serve` (CONTRACT §6): the reference collector.

Every label value comes from the config (targets, vantages) or from a closed
set (verdicts, stages), so the number of series is bounded by the config, and
a scrape never measures anything.

Two renderers give the same bytes:

- :class:`LifelineCollector` (here), a prometheus_client collector that builds
  every family from the :class:`Board` at scrape time. It is the reference,
  and what an exotic Accept header (a name-escaping scheme other than
  underscores or UTF-8) gets.
- :class:`exporter.metricspage.MetricsPage`, what `/metrics` normally serves:
  the per-series lines rendered once per change (see that module).

One `/probe`'s metrics are in :mod:`exporter.probemetrics`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.scheduler import Board, Entry, epoch
from probes import __version__
from probes.records import Verdict

__all__ = ["LifelineCollector", "encode", "go_float", "registry_for"]

KEY = ["service", "target", "vantage"]
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


class HeadCollector(Collector):
    """The families before the per-series ones: serve's health and the vantages."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[Family]:
        yield from _head_metrics(self._board)


class TailCollector(Collector):
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
        buckets=[(go_float(bound), n) for bound, n in lateness.cumulative()],
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
        labels=[*KEY, "verdict"],
    )
    reachable = GaugeMetricFamily(
        "lifeline_reachable", "1 if the current verdict is ok.", labels=KEY
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
        labels=KEY,
    )
    last = GaugeMetricFamily(
        "lifeline_last_measurement_timestamp_seconds",
        "When the latest measurement that carries the current verdict started.",
        labels=KEY,
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
        labels=[*KEY, "stage"],
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


def go_float(value: float) -> str:
    """A sample value as both exposition formats write it (Go's float formatting)."""
    if type(value) is float and 0.0 <= value < 1e6:
        return repr(value)  # what floatToGoString gives there (no exponent to rewrite), faster
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]
