"""What a measurement saw, stage by stage, and what it was judged to be.

Every stage returns a record, never a bare bool: ``ok``, ``failure`` (None on
success, else a string of :mod:`probes.failures`), ``duration_s`` and what it
saw. A :class:`Measurement` gathers the stage records of one target from one
vantage; a :class:`Result` adds the verdict and its reason. Records round-trip
through plain JSON (``to_dict`` / ``from_dict``) so stored logs can be replayed
and re-classified.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, cast

__all__ = [
    "SCHEMA",
    "DNSAnswer",
    "DNSQuery",
    "DNSStage",
    "EncodedRecord",
    "HTTPHop",
    "HTTPStage",
    "Measurement",
    "Result",
    "TCPAttempt",
    "TCPStage",
    "TLSCertificate",
    "TLSStage",
    "Verdict",
    "record_json",
]

#: Version of the record format; bumped when a field changes meaning.
SCHEMA = "lifeline.measurement/1"


class Verdict(StrEnum):
    """The closed set of CONTRACT §2, one per measurement."""

    OK = "ok"
    DNS_BLOCKED = "dns_blocked"
    TCP_BLOCKED = "tcp_blocked"
    TLS_BLOCKED = "tls_blocked"
    HTTP_BLOCKED = "http_blocked"
    THROTTLED = "throttled"
    ANOMALY = "anomaly"
    SERVICE_DOWN = "service_down"
    VANTAGE_DOWN = "vantage_down"
    UNREACHABLE = "unreachable"
    ERROR = "error"


# --- DNS ---------------------------------------------------------------------


@dataclass(slots=True)
class DNSAnswer:
    rtype: str  # "A", "AAAA", "CNAME"
    value: str
    ttl: int


@dataclass(slots=True)
class DNSQuery:
    """One question (A or AAAA) to the vantage's resolver."""

    qtype: str
    ok: bool
    failure: str | None
    rcode: str | None  # "NOERROR", "NXDOMAIN", ... None when no reply came
    answers: list[DNSAnswer] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass(slots=True)
class DNSStage:
    ok: bool
    failure: str | None
    duration_s: float
    name: str
    resolver: str  # which resolver answered, as configured ("udp://127.0.0.1:53", "system", ...)
    addresses: list[str] = field(default_factory=list)  # A then AAAA, de-duplicated, in order
    queries: list[DNSQuery] = field(default_factory=list)
    skipped: bool = False  # True for IP-literal hosts: addresses came from the URL


# --- TCP ---------------------------------------------------------------------


@dataclass(slots=True)
class TCPAttempt:
    address: str
    port: int
    ok: bool
    failure: str | None
    duration_s: float


@dataclass(slots=True)
class TCPStage:
    ok: bool
    failure: str | None  # the failure of the last attempt when every attempt failed
    duration_s: float
    attempts: list[TCPAttempt] = field(default_factory=list)
    address: str | None = None  # the address that connected
    port: int = 0
    via_proxy: bool = False


# --- TLS ---------------------------------------------------------------------


@dataclass(slots=True)
class TLSCertificate:
    subject_cn: str | None = None
    san: list[str] = field(default_factory=list)
    issuer: str | None = None
    not_before: str | None = None  # RFC 3339
    not_after: str | None = None
    sha256: str | None = None  # fingerprint of the leaf, hex


@dataclass(slots=True)
class TLSStage:
    ok: bool
    failure: str | None
    duration_s: float
    address: str | None = None
    server_name: str | None = None
    version: str | None = None  # "TLSv1.3"
    cipher: str | None = None
    alpn: str | None = None
    certificate: TLSCertificate | None = None
    # bytes received from the server before the failure (tiny reads over
    # seconds are the mark of handshake throttling)
    bytes_received: int | None = None


# --- HTTP --------------------------------------------------------------------


@dataclass(slots=True)
class HTTPHop:
    url: str
    status: int | None
    location: str | None = None
    address: str | None = None  # the address this hop connected to


@dataclass(slots=True)
class HTTPStage:
    ok: bool
    failure: str | None
    duration_s: float
    url: str = ""  # the URL requested first
    final_url: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # headers of interest, lower-case names
    body_length: int | None = None  # bytes after decompression, capped at max_body_bytes
    body_sha256: str | None = None
    body_truncated: bool = False  # stopped at max_body_bytes or at the deadline
    body_head: str | None = None  # the first KiB or so, decoded leniently (for fingerprints)
    title: str | None = None
    redirects: list[HTTPHop] = field(default_factory=list)
    request_sent: bool = False  # the failure (if any) came after the request was written
    # throughput sample (only for throughput targets): bytes/s over the body transfer
    throughput_bps: float | None = None
    transfer_s: float | None = None


# --- Measurement and result --------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """One target from one vantage at one time: the observations of every stage.

    A stage that did not run (not applicable to the scheme, or an earlier stage
    failed) is None.
    """

    target: str
    vantage: str
    time: str  # RFC 3339 UTC, when the measurement started
    duration_s: float = 0.0
    service: str = ""
    dns: DNSStage | None = None
    tcp: TCPStage | None = None
    tls: TLSStage | None = None
    http: HTTPStage | None = None
    error: str | None = None  # the measurement itself could not be made (verdict `error`)
    # what the target asked to be judged on (from the config), kept so that a
    # stored log can be re-classified without it
    expect_status: list[int] = field(default_factory=list)
    throughput: bool = False
    # set when a remote agent measured it (docs/agents.md): who, which version,
    # and how far the agent's clock (which dated ``time``) was ahead of the hub's
    agent: str | None = None
    agent_version: str | None = None
    clock_skew_s: float | None = None

    def stages(self) -> dict[str, DNSStage | TCPStage | TLSStage | HTTPStage | None]:
        return {"dns": self.dns, "tcp": self.tcp, "tls": self.tls, "http": self.http}

    def first_failure(self) -> tuple[str, str] | None:
        """(stage, failure) of the first stage that failed, or None."""
        for name, rec in self.stages().items():
            if rec is not None and not rec.ok:
                return name, rec.failure or "unknown_failure: no detail"
        return None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.first_failure() is None

    def to_dict(self) -> dict[str, Any]:
        return cast(dict[str, Any], _to_dict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return _from_dict(cls, data)


@dataclass(slots=True)
class Result:
    """A measurement with its verdict: one line of `check --format jsonl`."""

    measurement: Measurement
    verdict: Verdict
    reason: str
    control: Measurement | None = None  # the control's measurement it was judged against
    version: str = ""  # lifeline version that classified it

    def to_dict(self) -> dict[str, Any]:
        m = self.measurement
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "service": m.service,
            "target": m.target,
            "vantage": m.vantage,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "time": m.time,
            "duration_s": m.duration_s,
            "error": m.error,
            "expect_status": list(m.expect_status),
            "throughput": m.throughput,
            "stages": {k: (_to_dict(v) if v is not None else None) for k, v in m.stages().items()},
            "lifeline_version": self.version,
        }
        if m.agent is not None:  # only on agents' measurements: other records keep their shape
            out.update(agent=m.agent, agent_version=m.agent_version, clock_skew_s=m.clock_skew_s)
        out["control"] = self.control.to_dict() if self.control is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        stages = data.get("stages") or {}
        m = Measurement.from_dict(
            {
                "target": data["target"],
                "vantage": data["vantage"],
                "time": data["time"],
                "duration_s": data.get("duration_s", 0.0),
                "service": data.get("service", ""),
                "error": data.get("error"),
                "expect_status": data.get("expect_status") or [],
                "throughput": bool(data.get("throughput", False)),
                "agent": data.get("agent"),
                "agent_version": data.get("agent_version"),
                "clock_skew_s": data.get("clock_skew_s"),
                **{k: stages.get(k) for k in ("dns", "tcp", "tls", "http")},
            }
        )
        ctl = data.get("control")
        return cls(
            measurement=m,
            verdict=Verdict(data["verdict"]),
            reason=data.get("reason", ""),
            control=Measurement.from_dict(ctl) if ctl else None,
            version=data.get("lifeline_version", ""),
        )


# --- (de)serialisation helpers ------------------------------------------------

_T = TypeVar("_T")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _to_dict(obj: Any) -> Any:
    """Plain JSON-able data of a record (faster than dataclasses.asdict: no deep copies)."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    names = _FIELD_NAMES.get(cls)  # a record class seen before: the common case
    if names is not None:
        return {name: _to_dict(getattr(obj, name)) for name in names}
    if cls is list:
        return [_to_dict(x) for x in obj]
    if cls is dict:
        return {k: _to_dict(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: _to_dict(getattr(obj, name)) for name in _field_names(cls)}
    return obj


_NESTED: dict[tuple[type, str], type] = {}


_PLANS: dict[type, tuple[frozenset[str], tuple[tuple[str, type], ...]]] = {}


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build a record from its dict; unknown keys are ignored (forward compatible)."""
    plan = _PLANS.get(cls)  # (field names, nested fields): made once per class
    if plan is None:
        nested = tuple((key, sub) for (owner, key), sub in _NESTED.items() if owner is cls)
        plan = _PLANS[cls] = (frozenset(_field_names(cls)), nested)
    names, nested = plan
    kwargs = {key: value for key, value in data.items() if key in names}
    for key, sub in nested:
        value = kwargs.get(key)
        if value is not None:
            if isinstance(value, list):
                kwargs[key] = [_from_dict(sub, v) for v in value]
            else:
                kwargs[key] = _from_dict(sub, value)
    return cls(**kwargs)


_NESTED.update(
    {
        (Measurement, "dns"): DNSStage,
        (Measurement, "tcp"): TCPStage,
        (Measurement, "tls"): TLSStage,
        (Measurement, "http"): HTTPStage,
        (DNSStage, "queries"): DNSQuery,
        (DNSQuery, "answers"): DNSAnswer,
        (TCPStage, "attempts"): TCPAttempt,
        (TLSStage, "certificate"): TLSCertificate,
        (HTTPStage, "redirects"): HTTPHop,
    }
)


class EncodedRecord(dict[str, Any]):
    """A record (``Result.to_dict()``) that carries its own JSON text, made once.

    serve writes each record to the probe log and, when published, to the
    store, both as the same compact JSON: encoding it once halves the
    JSON work of every measurement. Treat it as read-only once made.
    """

    __slots__ = ("json",)

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record)
        self.json = _compact(record)


def record_json(record: dict[str, Any]) -> str:
    """The compact JSON of a record (UTF-8 text, no spaces): the log's and the store's form."""
    text = getattr(record, "json", None)
    return text if isinstance(text, str) else _compact(record)


def _compact(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
