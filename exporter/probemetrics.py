"""The metrics of one `/probe` answer, blackbox_exporter style, plus the verdict."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.metrics import KEY, go_float
from exporter.metricspage import EOF_LINE, Format, family_header, format_of, label_value
from probes.records import DNSStage, HTTPStage, Result, TCPStage, TLSStage, Verdict

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
    dns_rec, tcp, tls, http_rec = (
        m.record(DNSStage),
        m.record(TCPStage),
        m.record(TLSStage),
        m.record(HTTPStage),
    )
    http = http_rec.duration_s if http_rec is not None else 0.0
    transfer = (http_rec.transfer_s or 0.0) if http_rec is not None else 0.0
    dns = dns_rec.duration_s if dns_rec is not None else 0.0
    phases: list[tuple[list[str], float]] = [
        (["resolve"], dns),
        (["connect"], tcp.duration_s if tcp is not None else 0.0),
        (["tls"], tls.duration_s if tls is not None else 0.0),
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
            [([], (http_rec.status or 0) if http_rec is not None else 0)],
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
            [*KEY, "verdict"],
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
        fmt = format_of(encoder)
        if fmt is None:
            return encoder(probe_registry(result, duration_s)), content_type
        out: list[bytes] = []
        for name, documentation, labels, samples in _probe_families(result, duration_s):
            header = self._headers.get((fmt, name))
            if header is None:
                header = family_header(fmt, name, documentation, labels)
                self._headers[(fmt, name)] = header
            out.append(header)
            order = sorted(range(len(labels)), key=labels.__getitem__)
            for values, value in samples:
                inner = ",".join(f'{labels[i]}="{label_value(values[i])}"' for i in order)
                shown = f"{{{inner}}}" if inner else ""
                out.append(f"{name}{shown} {go_float(value)}\n".encode())
        if fmt == "openmetrics":
            out.append(EOF_LINE)
        return b"".join(out), content_type
