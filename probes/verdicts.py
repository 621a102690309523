"""The closed set of verdicts of CONTRACT §2."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Verdict"]


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
