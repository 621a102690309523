"""The one boundary where foreign exceptions become failure strings.

Stages call libraries (asyncio, ssl, dnspython, python-socks, aiohttp) that
each speak their own exception dialect. Everything they raise is translated
here, so the vocabulary of :mod:`probes.failures` is decided in one place and
tested in one place (tests/test_errors.py). The order is the one that keeps
meaning: exception type first, errno next, message text last; each layer of a
wrapped exception (``raise ... from``) is looked at before giving up.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import dns.exception
import dns.message
import dns.query
import dns.resolver
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from probes.failures import Failure, unknown

__all__ = ["FamilyUnavailable", "NotMeasurable", "StageError", "failure_of", "mapped"]


class StageError(Exception):
    """A stage failed in a way that already has its failure string."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(detail or failure)
        self.failure = failure


class FamilyUnavailable(StageError):
    """This vantage cannot use an address family here: a local limitation, not a failure
    of the path (no source address of that family, an address the host does not have,
    no route for the family). Raised before anything is sent."""


class NotMeasurable(Exception):
    """The measurement cannot be made at all (a config problem): verdict `error`."""


# SOCKS5 reply codes (RFC 1928 §6) that say something about the destination.
_SOCKS_REPLIES: dict[int, Failure] = {
    0x02: Failure.CONNECTION_REFUSED,  # not allowed by ruleset: a refusal by the path
    0x03: Failure.NETWORK_UNREACHABLE,
    0x04: Failure.HOST_UNREACHABLE,
    0x05: Failure.CONNECTION_REFUSED,
    0x06: Failure.TIMEOUT,  # TTL expired
}

# X509_V_ERR_* codes of OpenSSL that name the problem precisely.
_HOSTNAME_MISMATCH = {62, 64}  # hostname mismatch, IP address mismatch
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}  # no issuer / self-signed / untrusted chain

_ERRNOS: dict[int, Failure] = {
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ECONNRESET: Failure.CONNECTION_RESET,
    errno.EPIPE: Failure.CONNECTION_RESET,
    errno.ECONNABORTED: Failure.CONNECTION_ABORTED,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Failure.NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: Failure.TIMEOUT,
    errno.EAFNOSUPPORT: Failure.ADDRESS_FAMILY_NOT_SUPPORTED,
    errno.EADDRNOTAVAIL: Failure.ADDRESS_NOT_AVAILABLE,
}

_GAI_ERRORS: dict[int, Failure] = {
    socket.EAI_NONAME: Failure.DNS_NXDOMAIN,
    socket.EAI_AGAIN: Failure.TIMEOUT,
    socket.EAI_FAIL: Failure.DNS_SERVFAIL,
}
if hasattr(socket, "EAI_NODATA"):  # glibc only
    _GAI_ERRORS[socket.EAI_NODATA] = Failure.DNS_NO_ANSWER
# binding a socket of one family to an address of the other ("Address family for
# hostname not supported"): the vantage's own limitation
_GLIBC_EAI_ADDRFAMILY = -9 if sys.platform.startswith("linux") else None
_EAI_ADDRFAMILY = getattr(socket, "EAI_ADDRFAMILY", _GLIBC_EAI_ADDRFAMILY)
if _EAI_ADDRFAMILY is not None:  # Python leaves glibc's (-9) out of the socket module
    _GAI_ERRORS[_EAI_ADDRFAMILY] = Failure.ADDRESS_FAMILY_NOT_SUPPORTED
_GAI_ERRORS[socket.EAI_FAMILY] = Failure.ADDRESS_FAMILY_NOT_SUPPORTED

# Last resort: words in messages of libraries that raise bare exceptions.
_TEXTS: tuple[tuple[str, Failure], ...] = (
    ("connection reset", Failure.CONNECTION_RESET),
    ("connection refused", Failure.CONNECTION_REFUSED),
    ("connection lost", Failure.CONNECTION_RESET),
    ("timed out", Failure.TIMEOUT),
    ("timeout", Failure.TIMEOUT),
    ("unexpected eof", Failure.EOF),
    ("eof occurred", Failure.EOF),
    ("server disconnected", Failure.EOF),
    ("no route to host", Failure.HOST_UNREACHABLE),
    ("network is unreachable", Failure.NETWORK_UNREACHABLE),
)


def failure_of(exc: BaseException) -> str:
    """The failure string for an exception, looking through its causes."""
    chain = list(_chain(exc))
    for layer in chain:
        found = _by_type(layer) or _by_errno(layer)
        if found is not None:
            return found
    for layer in chain:
        found = _by_text(str(layer))
        if found is not None:
            return found
    return unknown(f"{type(exc).__name__}: {exc}")


@contextmanager
def mapped() -> Iterator[None]:
    """Re-raise anything a library raises as a StageError carrying its failure.

    Cancellation is not a failure and passes through untouched, as do our own
    StageError and NotMeasurable.
    """
    try:
        yield
    except (StageError, NotMeasurable):
        raise
    except Exception as exc:
        raise StageError(failure_of(exc), str(exc)) from exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (bounded, cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        inner = getattr(current, "os_error", None)  # aiohttp keeps the OSError here
        if isinstance(inner, BaseException) and id(inner) not in seen:
            yield inner
            seen.add(id(inner))
        current = current.__cause__ or current.__context__


def _by_type(exc: BaseException) -> str | None:
    """Mapping by exception type: the most reliable signal."""
    if isinstance(exc, StageError):
        return exc.failure
    for mapper in (_dns_type, _proxy_type, _aiohttp_type, _ssl_type, _asyncio_type):
        found = mapper(exc)
        if found is not None:
            return found
    return None


def _dns_type(exc: BaseException) -> str | None:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return Failure.DNS_NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return Failure.DNS_NO_ANSWER
    if isinstance(exc, dns.resolver.NoNameservers):
        return Failure.DNS_SERVFAIL
    if isinstance(exc, dns.exception.Timeout):  # includes LifetimeTimeout
        return Failure.TIMEOUT
    if isinstance(exc, dns.message.Truncated):
        return Failure.DNS_SERVER_MISBEHAVING
    if isinstance(exc, dns.exception.FormError | dns.query.UnexpectedSource):
        return Failure.DNS_SERVER_MISBEHAVING  # includes BadResponse, ShortHeader
    if isinstance(exc, dns.resolver.YXDOMAIN | dns.exception.TooBig):
        return Failure.DNS_SERVER_MISBEHAVING
    if isinstance(exc, socket.gaierror):
        return _GAI_ERRORS.get(exc.errno or 0)
    return None


def _proxy_type(exc: BaseException) -> str | None:
    if isinstance(exc, ProxyTimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, ProxyConnectionError):  # the proxy itself cannot be reached
        return Failure.PROXY_ERROR
    if isinstance(exc, ProxyError):
        code = getattr(exc, "error_code", None)
        if isinstance(code, int) and code in _SOCKS_REPLIES:
            return _SOCKS_REPLIES[code]
        return Failure.PROXY_ERROR
    return None


def _ssl_type(exc: BaseException) -> str | None:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code in _HOSTNAME_MISMATCH:
            return Failure.SSL_INVALID_HOSTNAME
        if code in _UNKNOWN_AUTHORITY:
            return Failure.SSL_UNKNOWN_AUTHORITY
        return Failure.SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Failure.EOF
    if isinstance(exc, ssl.SSLError):
        if "EOF" in (getattr(exc, "reason", None) or "") or "eof" in str(exc).lower():
            return Failure.EOF
        return Failure.SSL_FAILED_HANDSHAKE
    return None


def _aiohttp_type(exc: BaseException) -> str | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _ssl_type(exc.certificate_error)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.EOF
    if isinstance(exc, aiohttp.TooManyRedirects):
        return Failure.HTTP_TOO_MANY_REDIRECTS
    if isinstance(exc, aiohttp.RedirectClientError | aiohttp.NonHttpUrlClientError):
        return Failure.HTTP_BAD_REDIRECT
    if isinstance(exc, aiohttp.ClientResponseError):  # bad status line, headers, ...
        return Failure.HTTP_PROTOCOL_ERROR
    if isinstance(exc, aiohttp.ClientPayloadError) and exc.__cause__ is None:
        return Failure.EOF  # body ended before its announced length
    if isinstance(exc, aiohttp.InvalidURL):
        return Failure.HTTP_BAD_REDIRECT
    return None


def _asyncio_type(exc: BaseException) -> str | None:
    if isinstance(exc, asyncio.CancelledError):  # stopped by us (OONI: "interrupted")
        return Failure.INTERRUPTED
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return Failure.EOF
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return Failure.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return Failure.CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, ConnectionAbortedError):
        return Failure.CONNECTION_ABORTED
    return None


def _by_errno(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNOS.get(exc.errno)
    return None


def _by_text(text: str) -> str | None:
    low = text.lower()
    for needle, failure in _TEXTS:
        if needle in low:
            return failure
    return None
