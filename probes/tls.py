"""The TLS stage: a handshake with SNI = the target's host, on the TCP stage's socket.

The certificate is verified against the system trust plus ``ca_file``; what the
server presented (names, issuer, validity) is recorded on success, the reason
on failure. The TLS connection stays open so that the HTTP request of an https
target travels on it: one connection per measurement, as a stateful censor
sees a browser's.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import socket
import ssl
import time
from datetime import datetime
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from probes.errors import StageError, mapped
from probes.evidence import TLSCertificate, TLSStage
from probes.failures import Failure, unknown
from probes.net import StageContext
from probes.timefmt import rfc3339
from probes.wire import Counter, ParkedProtocol, TLSOpening

__all__ = ["ParkedProtocol", "tls_stage"]

#: Names kept from a certificate's SAN list (some carry hundreds).
MAX_SAN = 32
#: Certificates whose parsed record is remembered, and the largest one that may be.
_MEMO_SIZE = 512
_MEMO_MAX_DER = 8192
#: The peer's chain as kept in the record: at most this many certificates, this much DER.
MAX_CHAIN = 8
MAX_CHAIN_BYTES = 32_768
#: ``_ssl.ENCODING_DER``: what the private chain's certificates are written in.
_ENCODING_DER = 2


async def tls_stage(ctx: StageContext) -> TLSStage:
    """Handshake on the open TCP connection; keep the TLS transport for HTTP."""
    conn = ctx.connection
    if conn is None:
        return TLSStage(False, unknown("no TCP connection to run TLS on"), 0.0)
    host = ctx.target.host
    started = time.monotonic()
    budget = ctx.deadline.remaining()
    # our own timeout below decides, not the TLS protocol's
    opening = TLSOpening(ctx.net.ssl_context, host, handshake_timeout=max(budget, 0.0) + 1.0)
    try:
        with mapped():
            transport = await _handshake(opening, conn.sock, budget)
    except StageError as exc:
        received = opening.counter.received
        failure = _refine(exc.failure, opening.counter)
        ctx.close()
        return TLSStage(
            False, failure, time.monotonic() - started, conn.address, host, bytes_received=received
        )
    conn.transport, conn.server_name, conn.counter = transport, host, opening.counter
    received = opening.counter.received
    return _success(transport, conn.address, host, time.monotonic() - started, received)


async def _handshake(opening: TLSOpening, sock: socket.socket, budget: float) -> asyncio.Transport:
    if budget <= 0:
        raise StageError(Failure.TIMEOUT, "no time left for TLS")
    async with asyncio.timeout(budget):
        return await opening.run(sock)


def _refine(failure: str, counter: Counter) -> str:
    """Tell EOF from reset by what the connection saw: the TLS protocols report both
    as 'lost' (an EOF in the handshake even as a ConnectionResetError)."""
    if failure not in (Failure.CONNECTION_RESET, Failure.EOF):
        return failure
    _, saw_eof, saw_reset = counter.ending()
    if saw_reset:
        return Failure.CONNECTION_RESET
    if saw_eof:
        return Failure.EOF
    return failure


def _success(
    transport: asyncio.Transport, address: str, host: str, duration: float, received: int
) -> TLSStage:
    tls = transport.get_extra_info("ssl_object")
    assert isinstance(tls, ssl.SSLObject)
    cipher = tls.cipher()
    der = tls.getpeercert(binary_form=True)
    chain, truncated = peer_chain(tls, der)
    return TLSStage(
        ok=True,
        failure=None,
        duration_s=duration,
        address=address,
        server_name=host,
        version=tls.version(),
        cipher=cipher[0] if cipher else None,
        alpn=tls.selected_alpn_protocol(),
        certificate=certificate_record(der) if der else None,
        bytes_received=received,
        chain=chain,
        chain_truncated=truncated,
    )


def peer_chain(tls: ssl.SSLObject, leaf: bytes | None) -> tuple[list[str], bool]:
    """The certificates the peer sent, leaf first, base64 DER, bounded; and whether cut.

    Python 3.13 has ``SSLObject.get_unverified_chain()`` (DER bytes); 3.10 to
    3.12 have the same call, private, on the object inside (certificate
    objects, written out as DER). Where neither answers, the leaf alone.
    """
    ders = _unverified_chain(tls) or ([leaf] if leaf else [])
    kept: list[str] = []
    size = 0
    for der in ders:
        if len(kept) >= MAX_CHAIN or size + len(der) > MAX_CHAIN_BYTES:
            return kept, True
        kept.append(base64.b64encode(der).decode("ascii"))
        size += len(der)
    return kept, False


def _unverified_chain(tls: ssl.SSLObject) -> list[bytes]:
    getter: Any = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    try:
        certs = getter() or []
        return [c if isinstance(c, bytes) else bytes(c.public_bytes(_ENCODING_DER)) for c in certs]
    except (ssl.SSLError, ValueError, TypeError, AttributeError):
        return []


def certificate_record(der: bytes) -> TLSCertificate:
    """What users ask of a certificate: whose, by whom, valid when.

    A target presents the same certificate measurement after measurement, so
    the parsed fields are remembered (exact bytes as the key, at most
    _MEMO_SIZE certificates of at most _MEMO_MAX_DER bytes each: a few MB at
    worst). Each call still gets a record of its own to keep or change.
    """
    fields = _remembered(der) if len(der) <= _MEMO_MAX_DER else _parsed(der)
    return TLSCertificate(
        subject_cn=fields.subject_cn,
        san=list(fields.san),
        issuer=fields.issuer,
        not_before=fields.not_before,
        not_after=fields.not_after,
        sha256=fields.sha256,
    )


class _Fields(NamedTuple):
    """A certificate's record, immutable, so that one parse can serve many measurements."""

    subject_cn: str | None
    san: tuple[str, ...]
    issuer: str
    not_before: str
    not_after: str
    sha256: str


def _parsed(der: bytes) -> _Fields:
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return _Fields(
        subject_cn=str(cns[0].value) if cns else None,
        san=tuple(_san(cert)),
        issuer=cert.issuer.rfc4514_string(),
        not_before=_rfc3339(cert.not_valid_before_utc),
        not_after=_rfc3339(cert.not_valid_after_utc),
        sha256=hashlib.sha256(der).hexdigest(),
    )


#: functools' memo is bounded and thread-safe (the lab measures from several loops).
_remembered = functools.lru_cache(maxsize=_MEMO_SIZE)(_parsed)


def _san(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = list(ext.value.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)]
    return names[:MAX_SAN]


def _rfc3339(moment: datetime) -> str:
    return rfc3339(moment)
