"""Prometheus metrics of `lifeline serve` (CONTRACT §6) and of one `/probe`.

The collector reads the published board at scrape time and yields metric
families: a scrape never measures anything, and every label value comes from
the config (targets, vantages) or from a closed set (verdicts, stages), so
the number of series is bounded by the config.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.scheduler import Board, Entry, epoch
from probes import __version__
from probes.records import Result, Verdict

__all__ = ["LifelineCollector", "encode", "probe_registry", "registry_for"]

_KEY = ["service", "target", "vantage"]
STAGES = ("dns", "tcp", "tls", "http")


class LifelineCollector(Collector):
    """Yields lifeline's metric families from a :class:`Board` at scrape time."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        board = self._board
        entries = board.ordered()
        yield from _self_metrics(board)
        yield from _vantage_metrics(board)
        yield from _verdict_metrics(entries)
        yield from _time_metrics(entries)
        yield _stage_durations(entries)
        yield _service_ratio(entries)
        total = CounterMetricFamily(
            "lifeline_measurements",
            "Measurements taken by the schedule, by the verdict they were judged to have.",
            labels=["service", "vantage", "verdict"],
        )
        for (service, vantage, verdict), n in sorted(board.measurements.items()):
            total.add_metric([service, vantage, verdict], n)
        yield total


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


def _vantage_metrics(board: Board) -> Iterator[GaugeMetricFamily]:
    info = GaugeMetricFamily(
        "lifeline_vantage_info",
        "Metadata of each configured vantage; always 1.",
        labels=["vantage", "control", "country", "timezone"],
    )
    up = GaugeMetricFamily(
        "lifeline_vantage_up", "0 when every canary of the vantage fails.", labels=["vantage"]
    )
    for v in board.config.vantages:
        info.add_metric(
            [v.name, "true" if v.control else "false", v.country or "", v.timezone or ""], 1
        )
        state = board.vantage_up(v.name)
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
        if e.result is None:
            continue
        for stage, rec in e.result.measurement.stages().items():
            if rec is not None:
                fam.add_metric([e.service, e.target, e.vantage, stage], rec.duration_s)
    return fam


def _service_ratio(entries: list[Entry]) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(
        "lifeline_service_reachable_ratio",
        "Share of a service's targets whose current verdict is ok, per vantage.",
        labels=["service", "vantage"],
    )
    counts: dict[tuple[str, str], list[int]] = {}
    for e in entries:
        c = counts.setdefault((e.service, e.vantage), [0, 0])
        c[0] += e.verdict == Verdict.OK.value
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


# --- /probe ----------------------------------------------------------------------


def probe_registry(result: Result, duration_s: float) -> CollectorRegistry:
    """A fresh registry describing one /probe measurement, blackbox_exporter style."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProbeCollector(result, duration_s))
    return registry


class _ProbeCollector(Collector):
    def __init__(self, result: Result, duration_s: float) -> None:
        self._result = result
        self._duration = duration_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r, m = self._result, self._result.measurement
        yield GaugeMetricFamily(
            "probe_success",
            "1 if the verdict is ok (reachable and consistent).",
            value=1 if r.verdict is Verdict.OK else 0,
        )
        yield GaugeMetricFamily(
            "probe_duration_seconds", "How long the probe took.", value=self._duration
        )
        yield GaugeMetricFamily(
            "probe_dns_lookup_time_seconds",
            "Duration of the DNS stage.",
            value=m.dns.duration_s if m.dns is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "probe_http_status_code",
            "Status of the final HTTP response (0 if none).",
            value=(m.http.status or 0) if m.http is not None else 0,
        )
        phases = GaugeMetricFamily(
            "probe_http_duration_seconds",
            "Duration of each phase of the request.",
            labels=["phase"],
        )
        http = m.http.duration_s if m.http is not None else 0.0
        transfer = (m.http.transfer_s or 0.0) if m.http is not None else 0.0
        for phase, value in (
            ("resolve", m.dns.duration_s if m.dns is not None else 0.0),
            ("connect", m.tcp.duration_s if m.tcp is not None else 0.0),
            ("tls", m.tls.duration_s if m.tls is not None else 0.0),
            ("processing", max(0.0, http - transfer)),
            ("transfer", transfer),
        ):
            phases.add_metric([phase], value)
        yield phases
        verdict = GaugeMetricFamily(
            "lifeline_verdict",
            "1 for this measurement's verdict, 0 for the others.",
            labels=[*_KEY, "verdict"],
        )
        key = [m.service, m.target, m.vantage]
        for v in Verdict:
            verdict.add_metric([*key, v.value], 1 if r.verdict is v else 0)
        yield verdict
