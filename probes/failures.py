"""The closed vocabulary of stage failures (CONTRACT §2).

Names follow OONI's df-007 failure strings where OONI has a name, so records
can be compared with OONI data. Anything we cannot name is recorded as
``unknown_failure: <text>`` (see :func:`unknown`): the text is kept, never lost.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LOCAL_FAILURES", "Failure", "is_known", "unknown"]


class Failure(StrEnum):
    DNS_NXDOMAIN = "dns_nxdomain_error"
    DNS_NO_ANSWER = "dns_no_answer"
    DNS_SERVFAIL = "dns_servfail_error"
    DNS_REFUSED = "dns_refused_error"
    DNS_SERVER_MISBEHAVING = "dns_server_misbehaving"
    TIMEOUT = "generic_timeout_error"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_ABORTED = "connection_aborted"
    EOF = "eof_error"
    HOST_UNREACHABLE = "host_unreachable"
    NETWORK_UNREACHABLE = "network_unreachable"
    SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
    SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
    SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
    SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
    PROXY_ERROR = "proxy_error"
    HTTP_PROTOCOL_ERROR = "http_protocol_error"
    HTTP_TOO_MANY_REDIRECTS = "http_too_many_redirects"
    HTTP_BAD_REDIRECT = "http_bad_redirect"
    # stopped by us, not failed: a connection attempt cancelled because another won
    INTERRUPTED = "interrupted"
    # The vantage itself cannot use the address family (OONI's names for
    # EAFNOSUPPORT and EADDRNOTAVAIL): no source address of that family, a
    # source address the host no longer has, a family the kernel does not speak.
    ADDRESS_FAMILY_NOT_SUPPORTED = "address_family_not_supported"
    ADDRESS_NOT_AVAILABLE = "address_not_available"


#: Failures that only this host can cause, never the network or a censor: they
#: arise before a packet is sent (creating or binding the socket), so they say
#: the vantage cannot use a family, not that anything was blocked.
LOCAL_FAILURES = frozenset({Failure.ADDRESS_FAMILY_NOT_SUPPORTED, Failure.ADDRESS_NOT_AVAILABLE})


_KNOWN = frozenset(f.value for f in Failure)
UNKNOWN_PREFIX = "unknown_failure: "


def unknown(text: str) -> str:
    """The failure string for something we cannot name; keeps the text (bounded)."""
    text = " ".join(str(text).split())[:200] or "no detail"
    return UNKNOWN_PREFIX + text


def is_known(failure: str) -> bool:
    """True for a string of the vocabulary (including ``unknown_failure: …``)."""
    return failure in _KNOWN or failure.startswith(UNKNOWN_PREFIX)
