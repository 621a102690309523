"""`export --format parquet`: one flat, typed row per measurement, for a warehouse.

The columns are :data:`COLUMNS`: who, what and when, the verdict, the vantage's
network, then each stage's main observations, then the control's beside them.
Rows are buffered :data:`ROW_GROUP` at a time and written as one Parquet row
group each, so memory stays flat however many rows the store holds. The file
(its footer last) is written to a binary stream; `export` gives it stdout's.

pyarrow is an optional extra (``pip install 'lifeline[parquet]'``): it is
imported only when this format is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from exporter.export.csvfmt import first_failure
from exporter.export.formats import ExportOptions
from probes.records import DNSStage, HTTPStage, Result, TCPStage, TLSStage
from probes.timefmt import parse_rfc3339

__all__ = ["COLUMNS", "ROW_GROUP", "ParquetUnavailable", "open_writer"]

#: Records per row group (and the most held in memory at once).
ROW_GROUP = 10_000


class ParquetUnavailable(RuntimeError):
    """pyarrow is not installed."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # "string" "bool" "int32" "int64" "float64" "time" "strings"
    value: Callable[[Result], Any]


def _stage(kind: type[Any], attr: str, of_control: bool = False) -> Callable[[Result], Any]:
    def value(result: Result) -> Any:
        m = result.control if of_control else result.measurement
        rec = m.record(kind) if m is not None else None
        return getattr(rec, attr) if rec is not None else None

    return value


def _cert_sha256(result: Result) -> str | None:
    tls = result.measurement.record(TLSStage)
    return tls.certificate.sha256 if tls is not None and tls.certificate is not None else None


def _redirects(result: Result) -> int | None:
    http = result.measurement.record(HTTPStage)
    return len(http.redirects) if http is not None else None


def _control_failure(result: Result) -> str | None:
    return first_failure(result.control) if result.control is not None else None


def _m(attr: str) -> Callable[[Result], Any]:
    return lambda r: getattr(r.measurement, attr)


#: The columns, in order. Null means "not measured" (a stage that did not run, no control).
COLUMNS: tuple[Column, ...] = (
    Column("time", "time", lambda r: parse_rfc3339(r.measurement.time)),
    Column("service", "string", _m("service")),
    Column("target", "string", _m("target")),
    Column("vantage", "string", _m("vantage")),
    Column("verdict", "string", lambda r: r.verdict.value),
    Column("reason", "string", lambda r: r.reason),
    Column("duration_s", "float64", _m("duration_s")),
    Column("error", "string", _m("error")),
    Column("country", "string", _m("country")),
    Column("asn", "int64", _m("asn")),
    Column("network_name", "string", _m("network_name")),
    Column("agent", "string", _m("agent")),
    Column("dns_ok", "bool", _stage(DNSStage, "ok")),
    Column("dns_failure", "string", _stage(DNSStage, "failure")),
    Column("dns_resolver", "string", _stage(DNSStage, "resolver")),
    Column("dns_addresses", "strings", _stage(DNSStage, "addresses")),
    Column("dns_injection", "bool", _stage(DNSStage, "injection")),
    Column("dns_duration_s", "float64", _stage(DNSStage, "duration_s")),
    Column("tcp_ok", "bool", _stage(TCPStage, "ok")),
    Column("tcp_failure", "string", _stage(TCPStage, "failure")),
    Column("tcp_address", "string", _stage(TCPStage, "address")),
    Column("tcp_duration_s", "float64", _stage(TCPStage, "duration_s")),
    Column("tls_ok", "bool", _stage(TLSStage, "ok")),
    Column("tls_failure", "string", _stage(TLSStage, "failure")),
    Column("tls_server_name", "string", _stage(TLSStage, "server_name")),
    Column("tls_version", "string", _stage(TLSStage, "version")),
    Column("tls_certificate_sha256", "string", _cert_sha256),
    Column("tls_duration_s", "float64", _stage(TLSStage, "duration_s")),
    Column("http_ok", "bool", _stage(HTTPStage, "ok")),
    Column("http_failure", "string", _stage(HTTPStage, "failure")),
    Column("http_status", "int32", _stage(HTTPStage, "status")),
    Column("http_title", "string", _stage(HTTPStage, "title")),
    Column("http_body_length", "int64", _stage(HTTPStage, "body_length")),
    Column("http_body_sha256", "string", _stage(HTTPStage, "body_sha256")),
    Column("http_final_url", "string", _stage(HTTPStage, "final_url")),
    Column("http_redirects", "int32", _redirects),
    Column("http_throughput_bps", "float64", _stage(HTTPStage, "throughput_bps")),
    Column("http_duration_s", "float64", _stage(HTTPStage, "duration_s")),
    Column("control_first_failure", "string", _control_failure),
    Column("control_dns_addresses", "strings", _stage(DNSStage, "addresses", of_control=True)),
    Column("control_http_status", "int32", _stage(HTTPStage, "status", of_control=True)),
    Column("control_http_body_length", "int64", _stage(HTTPStage, "body_length", of_control=True)),
    Column("control_http_title", "string", _stage(HTTPStage, "title", of_control=True)),
    Column("lifeline_version", "string", lambda r: r.version),
)


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise ParquetUnavailable(
            "export --format parquet needs pyarrow: pip install 'lifeline[parquet]'"
        ) from None
    return pa, pq


def schema() -> Any:
    """The Arrow schema of :data:`COLUMNS`."""
    pa, _ = _arrow()
    types = {
        "string": pa.string(), "bool": pa.bool_(), "int32": pa.int32(), "int64": pa.int64(),
        "float64": pa.float64(), "time": pa.timestamp("us", tz="UTC"),
        "strings": pa.list_(pa.string()),
    }  # fmt: skip
    return pa.schema([pa.field(c.name, types[c.kind], nullable=c.name != "time") for c in COLUMNS])


class _KeepOpen:
    """The stream as pyarrow's sink, left open when the file is done (it may be stdout)."""

    closed = False

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self._written = out, 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class _Writer:
    """Buffers one row group of columns; writes it when full and the footer at close."""

    def __init__(self, out: IO[bytes]) -> None:
        self._pa, pq = _arrow()
        self._schema = schema()
        sink = _KeepOpen(out)
        self._writer = pq.ParquetWriter(sink, self._schema, compression="zstd")
        self._columns: list[list[Any]] = [[] for _ in COLUMNS]
        self._rows = 0

    def __call__(self, result: Result) -> None:
        for column, cell in zip(COLUMNS, self._columns, strict=True):
            value = column.value(result)
            if column.kind == "time":
                value = round(value * 1_000_000)
            cell.append(value)
        self._rows += 1
        if self._rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        arrays = [
            self._pa.array(values, type=field.type)
            for values, field in zip(self._columns, self._schema, strict=True)
        ]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))
        self._columns = [[] for _ in COLUMNS]
        self._rows = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def open_writer(out: IO[bytes], options: ExportOptions) -> _Writer:
    """A row writer on the binary stream ``out``; call its ``close()`` to end the file."""
    return _Writer(out)
