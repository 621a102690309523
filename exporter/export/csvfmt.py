"""`export --format csv`: one flat row per measurement, in :data:`CSV_COLUMNS` order."""

from __future__ import annotations

import csv
from typing import IO

from exporter.export.formats import ExportOptions, RowWriter
from probes.records import DNSStage, HTTPStage, Measurement, Result, TCPStage, TLSStage
from probes.stages import STAGES

__all__ = ["CSV_COLUMNS", "csv_row", "first_failure", "open_writer"]

CSV_COLUMNS: tuple[str, ...] = (
    "time", "service", "target", "vantage", "verdict", "reason", "duration_s", "error",
    "dns_ok", "dns_failure", "dns_resolver", "dns_addresses", "dns_duration_s",
    "tcp_ok", "tcp_failure", "tcp_address", "tcp_duration_s",
    "tls_ok", "tls_failure", "tls_version", "tls_duration_s",
    "http_ok", "http_failure", "http_status", "http_title", "http_body_length",
    "http_final_url", "http_throughput_bps", "http_duration_s",
    "control_first_failure", "control_dns_addresses", "control_http_status",
    "control_http_body_length", "lifeline_version",
)  # fmt: skip


def open_writer(out: IO[str], options: ExportOptions) -> RowWriter:
    """Writes the header now, then one row per record."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def write(result: Result) -> None:
        writer.writerow(csv_row(result))

    return write


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_row(result: Result) -> list[str]:
    """One flat CSV row (in :data:`CSV_COLUMNS` order) of a measurement record.

    Empty cells mean "not measured"; ``<stage>_ok`` is empty when the stage did not run.
    """
    m, control = result.measurement, result.control
    dns, tcp, tls, http = (
        m.record(DNSStage),
        m.record(TCPStage),
        m.record(TLSStage),
        m.record(HTTPStage),
    )
    c_http = control.record(HTTPStage) if control is not None else None
    c_dns = control.record(DNSStage) if control is not None else None
    values: list[object] = [
        m.time, m.service, m.target, m.vantage,
        result.verdict.value, result.reason, m.duration_s, m.error,
        *((dns.ok, dns.failure, dns.resolver, " ".join(dns.addresses), dns.duration_s)
          if dns is not None else (None,) * 5),
        *((tcp.ok, tcp.failure, tcp.address, tcp.duration_s) if tcp is not None else (None,) * 4),
        *((tls.ok, tls.failure, tls.version, tls.duration_s) if tls is not None else (None,) * 4),
        *((http.ok, http.failure, http.status, http.title, http.body_length, http.final_url,
           http.throughput_bps, http.duration_s) if http is not None else (None,) * 8),
        first_failure(control) if control is not None else None,
        (" ".join(c_dns.addresses) if c_dns is not None else "") if control is not None else None,
        c_http.status if c_http is not None else None,
        c_http.body_length if c_http is not None else None,
        result.version,
    ]  # fmt: skip
    return [_cell(v) for v in values]


def first_failure(measurement: Measurement) -> str:
    """'stage: failure' of the measurement's first failed stage, or 'none' (also the
    Parquet export's ``control_first_failure``)."""
    if measurement.error:
        return f"error: {measurement.error}"
    for name in STAGES.names:
        stage = measurement.stages.get(name)
        if stage is not None and not stage.ok:
            return f"{name}: {stage.failure}"
    return "none"
