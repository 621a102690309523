"""Every exception a stage can meet maps to a failure of the closed vocabulary."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import aiohttp
import dns.exception
import dns.message
import dns.query
import dns.resolver
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from yarl import URL

from probes.errors import StageError, failure_of, mapped
from probes.failures import UNKNOWN_PREFIX, Failure, is_known

_KEY = aiohttp.client_reqrep.ConnectionKey(
    "a.test", 443, True, True, None, None, None, "a.test"
)  # fmt: skip
_INFO = aiohttp.RequestInfo(URL("http://a.test/"), "GET", CIMultiDictProxy(CIMultiDict()))


def _make(cls: type[BaseException], **kwargs: object) -> BaseException:
    """dnspython's exceptions are untyped; build them through their base type."""
    return cls(**kwargs)


def _cert_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


def _wrapped(inner: BaseException) -> RuntimeError:
    """An exception whose cause carries the meaning (as libraries re-raise)."""
    try:
        raise RuntimeError("wrapper") from inner
    except RuntimeError as exc:
        return exc


CASES: list[tuple[BaseException, str]] = [
    # dnspython
    (_make(dns.resolver.NXDOMAIN), Failure.DNS_NXDOMAIN),
    (_make(dns.resolver.NoAnswer), Failure.DNS_NO_ANSWER),
    (_make(dns.resolver.NoNameservers), Failure.DNS_SERVFAIL),
    (_make(dns.resolver.LifetimeTimeout, timeout=1.0, errors=[]), Failure.TIMEOUT),
    (_make(dns.exception.Timeout), Failure.TIMEOUT),
    (_make(dns.exception.FormError), Failure.DNS_SERVER_MISBEHAVING),
    (_make(dns.query.BadResponse), Failure.DNS_SERVER_MISBEHAVING),
    (_make(dns.query.UnexpectedSource), Failure.DNS_SERVER_MISBEHAVING),
    (_make(dns.message.ShortHeader), Failure.DNS_SERVER_MISBEHAVING),
    (_make(dns.message.Truncated, message=None), Failure.DNS_SERVER_MISBEHAVING),
    (_make(dns.resolver.YXDOMAIN), Failure.DNS_SERVER_MISBEHAVING),
    # the system resolver
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Failure.DNS_NXDOMAIN),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), Failure.TIMEOUT),
    (socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure"), Failure.DNS_SERVFAIL),
    # sockets
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Failure.CONNECTION_REFUSED),
    (ConnectionResetError(errno.ECONNRESET, "reset"), Failure.CONNECTION_RESET),
    (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), Failure.CONNECTION_ABORTED),
    (BrokenPipeError(errno.EPIPE, "pipe"), Failure.CONNECTION_RESET),
    (OSError(errno.EHOSTUNREACH, "No route to host"), Failure.HOST_UNREACHABLE),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Failure.NETWORK_UNREACHABLE),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), Failure.TIMEOUT),
    # the vantage's own limits: a source address of the other family, one the host lacks
    (
        socket.gaierror(-9, "Address family for hostname not supported"),
        Failure.ADDRESS_FAMILY_NOT_SUPPORTED,
    ),
    (OSError(errno.EAFNOSUPPORT, "not supported"), Failure.ADDRESS_FAMILY_NOT_SUPPORTED),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign address"), Failure.ADDRESS_NOT_AVAILABLE),
    (asyncio.CancelledError(), Failure.INTERRUPTED),  # an attempt cancelled by us
    (TimeoutError(), Failure.TIMEOUT),
    (asyncio.IncompleteReadError(b"", 10), Failure.EOF),
    # TLS
    (_cert_error(62), Failure.SSL_INVALID_HOSTNAME),
    (_cert_error(64), Failure.SSL_INVALID_HOSTNAME),
    (_cert_error(20), Failure.SSL_UNKNOWN_AUTHORITY),
    (_cert_error(19), Failure.SSL_UNKNOWN_AUTHORITY),
    (_cert_error(18), Failure.SSL_UNKNOWN_AUTHORITY),
    (_cert_error(10), Failure.SSL_INVALID_CERTIFICATE),
    (_cert_error(9), Failure.SSL_INVALID_CERTIFICATE),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), Failure.EOF),
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), Failure.EOF),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version"), Failure.SSL_FAILED_HANDSHAKE),
    # python-socks: SOCKS5 replies, the proxy itself, timeouts
    (ProxyError("refused", error_code=0x05), Failure.CONNECTION_REFUSED),
    (ProxyError("not allowed", error_code=0x02), Failure.CONNECTION_REFUSED),
    (ProxyError("net unreachable", error_code=0x03), Failure.NETWORK_UNREACHABLE),
    (ProxyError("host unreachable", error_code=0x04), Failure.HOST_UNREACHABLE),
    (ProxyError("ttl expired", error_code=0x06), Failure.TIMEOUT),
    (ProxyError("general failure", error_code=0x01), Failure.PROXY_ERROR),
    (ProxyError("command not supported", error_code=0x07), Failure.PROXY_ERROR),
    (ProxyError("forbidden", error_code=403), Failure.PROXY_ERROR),
    (ProxyError("malformed reply"), Failure.PROXY_ERROR),
    (ProxyConnectionError(errno.ECONNREFUSED, "Could not connect to proxy"), Failure.PROXY_ERROR),
    (ProxyTimeoutError("Proxy connection timed out: 3"), Failure.TIMEOUT),
    # aiohttp
    (aiohttp.ServerDisconnectedError(), Failure.EOF),
    (aiohttp.ServerTimeoutError("read timeout"), Failure.TIMEOUT),
    (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), Failure.CONNECTION_RESET),
    (aiohttp.ClientConnectionResetError("Cannot write to closing"), Failure.CONNECTION_RESET),
    (
        aiohttp.ClientConnectorError(_KEY, OSError(errno.ECONNREFUSED, "refused")),
        Failure.CONNECTION_REFUSED,
    ),
    (aiohttp.ClientConnectorCertificateError(_KEY, _cert_error(62)), Failure.SSL_INVALID_HOSTNAME),
    (aiohttp.ClientPayloadError("Response payload is not completed"), Failure.EOF),
    (aiohttp.TooManyRedirects(_INFO, ()), Failure.HTTP_TOO_MANY_REDIRECTS),
    (aiohttp.NonHttpUrlRedirectClientError("ftp://a.test/"), Failure.HTTP_BAD_REDIRECT),
    (aiohttp.InvalidURL("http://"), Failure.HTTP_BAD_REDIRECT),
    (aiohttp.ClientResponseError(_INFO, (), message="bad status"), Failure.HTTP_PROTOCOL_ERROR),
    # wrapped, and by text as the last resort
    (_wrapped(ConnectionResetError(errno.ECONNRESET, "reset")), Failure.CONNECTION_RESET),
    (StageError(Failure.EOF), Failure.EOF),
    (ConnectionResetError("Connection lost"), Failure.CONNECTION_RESET),
    (Exception("Connection reset by peer"), Failure.CONNECTION_RESET),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=lambda v: type(v).__name__)
def test_exception_maps_to_its_failure(exc: BaseException, expected: str) -> None:
    failure = failure_of(exc)
    assert failure == expected
    assert is_known(failure)


def test_every_failure_name_is_reachable_from_some_exception() -> None:
    """Only an rcode (not an exception) yields dns_refused_error; the rest are in the table."""
    named = {expected for _, expected in CASES}
    assert set(Failure) - named == {Failure.DNS_REFUSED}


def test_anything_else_is_unknown_with_its_text() -> None:
    failure = failure_of(ValueError("something odd"))
    assert failure.startswith(UNKNOWN_PREFIX) and "ValueError: something odd" in failure
    assert is_known(failure)


def test_mapped_reraises_with_the_cause_kept() -> None:
    original = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    with pytest.raises(StageError) as info, mapped():
        raise original
    assert info.value.failure == Failure.CONNECTION_REFUSED
    assert info.value.__cause__ is original


def test_mapped_lets_cancellation_through() -> None:
    with pytest.raises(asyncio.CancelledError), mapped():
        raise asyncio.CancelledError()
