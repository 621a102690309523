"""Hostile servers: what a censor's middlebox (or a broken network) may answer instead.

lifeline measures from networks run by adversaries, so every parser we feed
from the wire must end a measurement with a clear failure string, in bounded
time and memory. This module is the corpus that says so: each :class:`Case`
names one hostile behaviour (a decompression bomb, a slowloris, a redirect to
the cloud metadata address, a DNS compression-pointer loop, a SOCKS proxy
that lies, ...) and the outcome a correct measurement records.

Everything runs on 127.0.0.0/8, on ports the kernel picks. Servers stream
what they send (100 MB of headers are never held in memory here) and every
connection is bounded (:mod:`probes.lab.netutil`). :class:`HostileCorpus`
runs on the caller's loop; :class:`HostileThread` runs it in a background
thread and writes a lifeline config that measures the whole corpus.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import ipaddress
import os
import socket
import ssl
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probes.failures import Failure
from probes.lab.background import BackgroundService
from probes.lab.netutil import BLACKHOLE_S, StreamServer, bind_same_port, hold
from probes.lab.safety import is_lab_address, lab_address
from probes.model import Vantage
from probes.net import CountingSocket, VantageNet

__all__ = [
    "CASES",
    "DIRECT_VANTAGE",
    "MAX_BODY_BYTES",
    "PROXIED_SERVICE",
    "TIMEOUT_S",
    "ZONE",
    "Case",
    "Expect",
    "HostileCorpus",
    "HostileThread",
    "Kind",
    "RecordingNet",
    "available",
    "case_named",
]

ZONE = "hostile.lifeline.test"
#: The budget of one measurement of the corpus, and its body cap.
TIMEOUT_S = 4.0
MAX_BODY_BYTES = 256 * 1024
#: The vantage of the generated config that measures every non-proxy case (through
#: a recording relay, so that no connection can leave 127.0.0.0/8 even by mistake).
DIRECT_VANTAGE = "hostile"
#: The service every proxy case's vantage measures (a well-behaved origin).
PROXIED_SERVICE = "via-proxy"
#: An address outside the lab that redirects point at; nothing may ever dial it.
PRIVATE_ADDRESS = "10.0.0.1"
METADATA_ADDRESS = "169.254.169.254"
_HOST = "127.0.0.1"
_BOMB_BYTES = 64 * 1024 * 1024  # decompressed size of each bomb
_HEADER_FLOOD_BYTES = 100 * 1024 * 1024
_SLOW_S = 1.0  # one byte per this many seconds
_RECORDED = 4096  # questions and connects remembered (bounded)


class Kind(StrEnum):
    """What a case is measured as."""

    HTTP = "http"  # http:// target on the case's server
    HTTPS = "https"  # https:// target (the case's server speaks TLS)
    TLS = "tls"  # tls:// target
    DNS = "dns"  # dns:// target: the hostile behaviour is the resolver's
    SOCKS = "socks5"  # the case is a vantage's SOCKS5 proxy
    CONNECT = "http-proxy"  # the case is a vantage's HTTP CONNECT proxy


@dataclass(frozen=True, slots=True)
class Expect:
    """The outcome a correct measurement records: the deciding stage and its failure.

    ``failure`` None means the stage succeeds; ``truncated`` asks the HTTP body
    to have been cut at the cap (True) or not (False); None does not care.
    """

    stage: str
    failure: str | None
    truncated: bool | None = None


Handler = Callable[["HostileCorpus", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile behaviour and what a measurement of it must record."""

    name: str
    kind: Kind
    expect: Expect
    why: str
    handler: Handler | None = None  # for stream cases; DNS cases are answered by name
    needs: str | None = None  # an optional module the case needs (e.g. "brotli")

    @property
    def host(self) -> str:
        return f"{self.name}.{ZONE}"


# --- HTTP behaviours -----------------------------------------------------------


async def _request_head(reader: asyncio.StreamReader) -> bytes:
    """Read (bounded) until the end of the request head."""
    data = b""
    async with asyncio.timeout(10):
        while b"\r\n\r\n" not in data and len(data) < 16384:
            more = await reader.read(4096)
            if not more:
                break
            data += more
    return data


def _response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


NORMAL_TITLE = "Hostile lab: a normal page"
NORMAL_PAGE = (
    f"<!doctype html><html><head><title>{NORMAL_TITLE}</title></head><body>".encode()
    + b"<p>nothing to see</p>" * 50
    + b"</body></html>"
)


async def _normal(corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await _request_head(r)
    w.write(
        _response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"),
             ("Content-Length", str(len(NORMAL_PAGE))), ("Connection", "close")],
            NORMAL_PAGE,
        )
    )  # fmt: skip
    await w.drain()


def _bomb_handler(encoding: str) -> Handler:
    async def serve(
        corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await _request_head(r)
        body = corpus.bombs[encoding]
        w.write(
            _response(
                "200 OK",
                [("Content-Type", "text/html"), ("Content-Encoding", encoding),
                 ("Content-Length", str(len(body))), ("Connection", "close")],
                body,
            )
        )  # fmt: skip
        await w.drain()

    return serve


async def _endless(corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await _request_head(r)
    w.write(_response("200 OK", [("Content-Type", "application/octet-stream")]))
    chunk = b"\xff" * 65536
    while True:  # until the client goes away (or the connection bound ends it)
        w.write(chunk)
        await w.drain()


async def _slow_headers(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    for byte in _response("200 OK", [("X-Slow", "a" * 4096)]):
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(_SLOW_S)


async def _slow_body(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    w.write(_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "100000")]))
    while True:
        w.write(b"<")
        await w.drain()
        await asyncio.sleep(_SLOW_S)


async def _header_flood(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """100 MB of headers, streamed: a line at a time, never held in memory."""
    await _request_head(r)
    w.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Flood: " + b"f" * 100 + b"\r\n"
    block = line * 512
    for _ in range(_HEADER_FLOOD_BYTES // len(block)):
        w.write(block)
        await w.drain()
    w.write(b"\r\n")
    await w.drain()


async def _endless_line(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    w.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    while True:
        w.write(b"e" * 65536)
        await w.drain()


def _redirect_handler(location: Callable[[HostileCorpus, bytes], str]) -> Handler:
    async def serve(
        corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        head = await _request_head(r)
        target = location(corpus, head)
        w.write(
            _response("302 Found", [("Location", target), ("Content-Length", "0"),
                                    ("Connection", "close")])
        )  # fmt: skip
        await w.drain()

    return serve


def _path(head: bytes) -> str:
    parts = head.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 2 else "/"


def _chain_location(corpus: HostileCorpus, head: bytes) -> str:
    """/hop/N redirects to /hop/N-1: a chain of a thousand."""
    path = _path(head)
    n = int(path.rsplit("/", 1)[1]) if path.startswith("/hop/") else 1000
    return f"/hop/{max(n - 1, 0)}"


def _elsewhere(corpus: HostileCorpus, head: bytes) -> str:
    return f"http://elsewhere.{ZONE}:{corpus.port_of('normal')}/"


async def _bad_utf8(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    body = b"<html><head><title>caf\xc3 \xff\xfe bad \xed\xa0\x80</title></head>"
    body += b"<body>\x80\x81</body>"
    w.write(
        _response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                             ("Content-Length", str(len(body))), ("Connection", "close")], body)
    )  # fmt: skip
    await w.drain()


async def _odd_charset(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """A charset whose codec cannot replace what it cannot decode."""
    await _request_head(r)
    body = b"<html><head><title>\xff odd charset</title></head></html>"
    headers = [("Content-Type", "text/html; charset=idna"), ("Content-Length", str(len(body)))]
    w.write(_response("200 OK", headers, body))
    await w.drain()


async def _garbage(corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await _request_head(r)
    w.write(bytes(range(256)) * 64 + os.urandom(4096))
    await w.drain()


async def _huge_title(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    size = 1024 * 1024
    w.write(
        _response("200 OK", [("Content-Type", "text/html"), ("Connection", "close"),
                             ("Content-Length", str(size + 40))])
    )  # fmt: skip
    w.write(b"<html><head><title>")
    for _ in range(size // 65536):
        w.write(b"T" * 65536)
        await w.drain()
    w.write(b"</title></head></html>" + b" " * 19)
    await w.drain()


async def _cookie_flood(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Headers of interest repeated to the parser's limit, each near its longest."""
    await _request_head(r)
    headers = [("Set-Cookie", "c=" + "v" * 8000)] * 100 + [("Content-Length", "2")]
    w.write(_response("200 OK", headers, b"ok"))
    await w.drain()


# --- TLS behaviours ------------------------------------------------------------


async def _tls_garbage(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Answer a ClientHello with bytes that are not a ServerHello."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await r.read(16384)
    w.write(b"\x16\x03\x03\x00\x40" + os.urandom(64) + b"HTTP/1.1 200 OK\r\n\r\n" + os.urandom(512))
    await w.drain()
    await hold(r, 5)


async def _tls_big_chain(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """A valid certificate whose chain is about 64 KB; then a normal page."""
    await w.start_tls(corpus.big_chain_context)
    await _normal(corpus, r, w)


# --- proxies -------------------------------------------------------------------


async def _socks_greeting(r: asyncio.StreamReader) -> None:
    async with asyncio.timeout(10):
        _, count = await r.readexactly(2)
        await r.readexactly(count)


async def _socks_request(r: asyncio.StreamReader) -> tuple[str, int]:
    async with asyncio.timeout(10):
        _, _, _, atyp = await r.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await r.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await r.readexactly(16)))
        else:
            (size,) = await r.readexactly(1)
            host = (await r.readexactly(size)).decode("ascii", "replace")
        (port,) = struct.unpack("!H", await r.readexactly(2))
    return host, port


async def _socks_wrong_version(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _socks_greeting(r)
    w.write(b"\x04\x00")
    await w.drain()
    await hold(r, 5)


async def _socks_garbage(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _socks_greeting(r)
    w.write(b"\x05\x00")
    await _socks_request(r)
    w.write(b"\xde\xad\xbe\xef" + os.urandom(60))
    await w.drain()
    await hold(r, 5)


async def _socks_half_reply(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _socks_greeting(r)
    w.write(b"\x05\x00")
    await _socks_request(r)
    w.write(b"\x05\x00\x00")  # then nothing: the connection closes mid-reply
    await w.drain()


async def _socks_bogus_bound(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _socks_greeting(r)
    w.write(b"\x05\x00")
    await _socks_request(r)
    w.write(b"\x05\x00\x00\x09" + os.urandom(32))  # success, with an address type that is none
    await w.drain()
    await hold(r, 5)


async def _connect_garbage(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    w.write(os.urandom(200) + b"\r\n\r\n")
    await w.drain()
    await hold(r, 5)


async def _connect_407(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    w.write(
        _response("407 Proxy Authentication Required",
                  [("Proxy-Authenticate", 'Basic realm="censor"'), ("Content-Length", "0")])
    )  # fmt: skip
    await w.drain()
    await hold(r, 5)


async def _connect_endless(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await _request_head(r)
    w.write(b"HTTP/1.1 200 Connection established\r\nX-Endless: ")
    while True:
        w.write(b"e" * 65536)
        await w.drain()


# --- the table -------------------------------------------------------------------

_OK_HTTP = Expect("http", None, truncated=False)
_CAPPED = Expect("http", None, truncated=True)
_PROTOCOL = Expect("http", Failure.HTTP_PROTOCOL_ERROR)
_BAD_REDIRECT = Expect("http", Failure.HTTP_BAD_REDIRECT)
_MISBEHAVING = Expect("dns", Failure.DNS_SERVER_MISBEHAVING)
_PROXY = Expect("tcp", Failure.PROXY_ERROR)


def _case(name: str, kind: Kind, expect: Expect, why: str, handler: Handler | None = None,
          needs: str | None = None) -> Case:  # fmt: skip
    return Case(name, kind, expect, why, handler, needs)


CASES: tuple[Case, ...] = (
    _case("normal", Kind.HTTP, _OK_HTTP, "a well-behaved origin: the reference", _normal),
    _case("gzip-bomb", Kind.HTTP, _CAPPED, "64 MB of zeros in 64 KB of gzip",
          _bomb_handler("gzip")),
    _case("deflate-bomb", Kind.HTTP, _CAPPED, "the same as zlib deflate", _bomb_handler("deflate")),
    _case("brotli-bomb", Kind.HTTP, _CAPPED, "the same as brotli", _bomb_handler("br"), "brotli"),
    _case("endless-body", Kind.HTTP, _CAPPED, "a body that never ends, fast", _endless),
    _case("slowloris-headers", Kind.HTTP, Expect("http", Failure.TIMEOUT),
          "one byte of headers per second: the deadline ends it", _slow_headers),
    _case("slowloris-body", Kind.HTTP, _CAPPED,
          "one byte of body per second: a throughput sample at the deadline", _slow_body),
    _case("header-flood", Kind.HTTP, _PROTOCOL, "100 MB of headers, streamed", _header_flood),
    _case("endless-header-line", Kind.HTTP, _PROTOCOL, "a header line without end",
          _endless_line),
    _case("cookie-flood", Kind.HTTP, _OK_HTTP, "100 Set-Cookie headers of 8 KB each",
          _cookie_flood),
    _case("redirect-loop", Kind.HTTP, Expect("http", Failure.HTTP_TOO_MANY_REDIRECTS),
          "a redirect to itself", _redirect_handler(lambda c, h: "/")),
    _case("redirect-chain", Kind.HTTP, Expect("http", Failure.HTTP_TOO_MANY_REDIRECTS),
          "a chain of 1,000 redirects", _redirect_handler(_chain_location)),
    _case("redirect-file", Kind.HTTP, _BAD_REDIRECT, "a redirect to file:",
          _redirect_handler(lambda c, h: "file:///etc/passwd")),
    _case("redirect-ftp", Kind.HTTP, _BAD_REDIRECT, "a redirect to ftp:",
          _redirect_handler(lambda c, h: f"ftp://files.{ZONE}/x")),
    _case("redirect-javascript", Kind.HTTP, _BAD_REDIRECT, "a redirect to javascript:",
          _redirect_handler(lambda c, h: "javascript:alert(document.cookie)")),
    _case("redirect-private", Kind.HTTP, _BAD_REDIRECT,
          "a redirect into a private network the target is not in",
          _redirect_handler(lambda c, h: f"http://{PRIVATE_ADDRESS}/admin")),
    _case("redirect-metadata", Kind.HTTP, _BAD_REDIRECT,
          "a redirect to the cloud metadata address",
          _redirect_handler(lambda c, h: f"http://{METADATA_ADDRESS}/latest/meta-data/")),
    _case("redirect-mapped", Kind.HTTP, _BAD_REDIRECT,
          "the metadata address written as IPv4-mapped IPv6",
          _redirect_handler(lambda c, h: "http://[::ffff:169.254.169.254]/")),
    _case("redirect-intranet", Kind.HTTP, _BAD_REDIRECT,
          "a redirect to a name the vantage's resolver maps into a private network",
          _redirect_handler(lambda c, h: f"http://intranet.{ZONE}/")),
    _case("redirect-elsewhere", Kind.HTTP, _OK_HTTP,
          "a redirect to another lab name, resolved by the vantage's resolver",
          _redirect_handler(_elsewhere)),
    _case("invalid-utf8", Kind.HTTP, _OK_HTTP, "a page in broken UTF-8", _bad_utf8),
    _case("odd-charset", Kind.HTTP, _OK_HTTP, "a page in charset=idna", _odd_charset),
    _case("binary-garbage", Kind.HTTP, _PROTOCOL, "bytes that are not HTTP at all", _garbage),
    _case("huge-title", Kind.HTTP, _CAPPED, "a 1 MB <title>", _huge_title),
    _case("tls-garbage", Kind.TLS, Expect("tls", Failure.SSL_FAILED_HANDSHAKE),
          "garbage instead of a ServerHello", _tls_garbage),
    _case("tls-big-chain", Kind.HTTPS, _OK_HTTP, "a valid certificate in a 64 KB chain",
          _tls_big_chain),
    _case("dns-truncated", Kind.DNS, _MISBEHAVING, "an answer cut short, without TC"),
    _case("dns-malformed", Kind.DNS, _MISBEHAVING, "garbage after a valid header"),
    _case("dns-wrong-id", Kind.DNS, Expect("dns", None),
          "a forged answer with a wrong ID first, then the right one"),
    _case("dns-wrong-id-only", Kind.DNS, Expect("dns", Failure.TIMEOUT),
          "only answers with a wrong ID: ignored until the deadline"),
    _case("dns-many-records", Kind.DNS, Expect("dns", None), "500 A records"),
    _case("dns-cname-loop", Kind.DNS, Expect("dns", Failure.DNS_NO_ANSWER),
          "CNAMEs that point at each other"),
    _case("dns-pointer-loop", Kind.DNS, _MISBEHAVING, "a compression pointer to itself"),
    _case("dns-wrong-class", Kind.DNS, Expect("dns", Failure.DNS_NO_ANSWER),
          "an A record of class CHAOS, whose rdata is not an IPv4 address"),
    _case("socks-wrong-version", Kind.SOCKS, _PROXY, "answers as SOCKS4", _socks_wrong_version),
    _case("socks-garbage", Kind.SOCKS, _PROXY, "a garbage CONNECT reply", _socks_garbage),
    _case("socks-half-reply", Kind.SOCKS, _PROXY, "closes in the middle of its reply",
          _socks_half_reply),
    _case("socks-bogus-bound", Kind.SOCKS, _PROXY,
          "replies success with a bound address of no known type", _socks_bogus_bound),
    _case("connect-garbage", Kind.CONNECT, _PROXY, "garbage instead of an HTTP reply",
          _connect_garbage),
    _case("connect-407", Kind.CONNECT, _PROXY, "407 Proxy Authentication Required",
          _connect_407),
    _case("connect-endless", Kind.CONNECT, _PROXY,
          "a reply header without end: refused after 16 KiB, none of it reaches HTTP",
          _connect_endless),
)  # fmt: skip


def available(case: Case) -> bool:
    """False when the case needs a module this machine lacks (brotli is optional)."""
    return case.needs is None or importlib.util.find_spec(case.needs) is not None


def case_named(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)


# --- DNS ----------------------------------------------------------------------------

_TTL = 60


def _dns_case(name: str) -> str | None:
    """The case a question is for (by its first label), if it is a DNS case."""
    label = name.removesuffix("." + ZONE)
    return label if label.startswith("dns-") else None


def dns_replies(wire: bytes) -> list[bytes]:
    """What the hostile resolver sends for one query (possibly several datagrams)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return []
    if query.flags & dns.flags.QR or len(query.question) != 1:
        return []
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    response = dns.message.make_response(query)
    case = _dns_case(name)
    if case is None:
        address = PRIVATE_ADDRESS if name == f"intranet.{ZONE}" else _HOST
        if name.endswith(ZONE) and question.rdtype == dns.rdatatype.A:
            response.answer.append(_rrset(question.name, "A", address))
        elif not name.endswith(ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return [response.to_wire()]
    return _hostile_dns(case, query, response)


def _rrset(owner: dns.name.Name, rtype: str, *values: str, rdclass: str = "IN") -> dns.rrset.RRset:
    return dns.rrset.from_text_list(owner, _TTL, rdclass, rtype, list(values))


def _hostile_dns(
    case: str, query: dns.message.Message, response: dns.message.Message
) -> list[bytes]:
    question = query.question[0]
    qname = question.name
    is_a = question.rdtype == dns.rdatatype.A
    if case == "dns-truncated":
        response.answer.append(_rrset(qname, "A", *[f"127.0.0.{i}" for i in range(1, 9)]))
        return [response.to_wire()[:-7]]
    if case == "dns-malformed":
        return [response.to_wire()[:12] + os.urandom(40)]
    if case in ("dns-wrong-id", "dns-wrong-id-only"):
        if is_a:
            response.answer.append(_rrset(qname, "A", _HOST))
        right = response.to_wire()
        forged = struct.pack("!H", (query.id + 1) & 0xFFFF) + right[2:]
        forged_lie = forged.replace(socket.inet_aton(_HOST), socket.inet_aton("127.0.0.99"))
        return [forged_lie] if case == "dns-wrong-id-only" else [forged_lie, right]
    if case == "dns-many-records":
        if is_a:
            response.answer.append(
                _rrset(qname, "A", *[f"127.0.{i // 250}.{i % 250 + 1}" for i in range(500)])
            )
        return [response.to_wire()]
    if case == "dns-cname-loop":
        other = dns.name.from_text(f"dns-cname-loop-b.{ZONE}")
        response.answer.append(_rrset(qname, "CNAME", other.to_text()))
        response.answer.append(_rrset(other, "CNAME", qname.to_text()))
        return [response.to_wire()]
    if case == "dns-wrong-class":
        if is_a:
            response.answer.append(_rrset(qname, "A", "chaos. 177401", rdclass="CH"))
        return [response.to_wire()]
    if case == "dns-pointer-loop":
        return [_pointer_loop(response)]
    return []


def _pointer_loop(response: dns.message.Message) -> bytes:
    """A reply whose one answer's owner name is a compression pointer to itself."""
    wire = bytearray(response.to_wire())
    wire[6:8] = struct.pack("!H", 1)  # ANCOUNT = 1
    offset = len(wire)
    wire += struct.pack("!H", 0xC000 | offset)  # the name: a pointer to this very spot
    wire += struct.pack("!HHIH", 1, 1, _TTL, 4) + socket.inet_aton(_HOST)
    return bytes(wire)


class _DNSDatagrams(asyncio.DatagramProtocol):
    def __init__(self, corpus: HostileCorpus) -> None:
        self._corpus = corpus
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._corpus.note_question(data)
        for reply in dns_replies(data):
            if self._transport is not None:
                self._transport.sendto(reply, addr)


# --- certificates ------------------------------------------------------------------


def _big_chain_context(directory: Path, host: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context whose chain is ~64 KB (a leaf with ~1,800 names, the CA twice),
    and the CA (PEM) that makes it valid for ``host``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile lab CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names += [x509.DNSName(f"n{i:04d}-padding.{ZONE}") for i in range(1800)]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca_pem
    cert_path, key_path = directory / "big-chain.pem", directory / "big-chain.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, ca_pem


def _bombs() -> dict[str, bytes]:
    """Each encoding's bomb: _BOMB_BYTES of zeros, compressed once at start, in pieces."""
    piece = bytes(1024 * 1024)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    df = zlib.compressobj(9)
    gz_parts, df_parts = [], []
    for _ in range(_BOMB_BYTES // len(piece)):
        gz_parts.append(gz.compress(piece))
        df_parts.append(df.compress(piece))
    bombs = {
        "gzip": b"".join(gz_parts) + gz.flush(),
        "deflate": b"".join(df_parts) + df.flush(),
    }
    try:
        import brotli  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return bombs
    compressor = brotli.Compressor(quality=5)
    parts = [compressor.process(piece) for _ in range(_BOMB_BYTES // len(piece))]
    bombs["br"] = b"".join(parts) + compressor.finish()
    return bombs


# --- the corpus -------------------------------------------------------------------------


class HostileCorpus:
    """Every hostile server of :data:`CASES`, plus a resolver and a recording relay.

    ``questions`` are the names the resolver was asked; ``connects`` are the
    destinations the relay was asked to CONNECT to (both bounded logs).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.questions: deque[str] = deque(maxlen=_RECORDED)
        self.connects: deque[str] = deque(maxlen=_RECORDED)
        self.bombs: dict[str, bytes] = {}
        self.ca_path = self.directory / "hostile-ca.pem"
        self.big_chain_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.resolver_port = 0
        self.relay_port = 0
        self._ports: dict[str, int] = {}
        self._servers: list[StreamServer] = []
        self._udp: asyncio.DatagramTransport | None = None

    def port_of(self, case: str) -> int:
        return self._ports[case]

    def note_question(self, wire: bytes) -> None:
        with contextlib.suppress(dns.exception.DNSException):
            query = dns.message.from_wire(wire)
            for q in query.question:
                self.questions.append(q.name.to_text(omit_final_dot=True).lower())

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self.bombs = await loop.run_in_executor(None, _bombs)
        self.big_chain_context, ca_pem = await loop.run_in_executor(
            None, _big_chain_context, self.directory, case_named("tls-big-chain").host
        )
        self.ca_path.write_bytes(ca_pem)
        try:
            for case in CASES:
                if case.handler is not None and available(case):
                    self._ports[case.name] = await self._serve(_bind_case(case, self))
            self.relay_port = await self._serve(self._relay)
            (udp,), (tcp,) = bind_same_port([_HOST], [socket.SOCK_DGRAM, socket.SOCK_STREAM])
            tcp.close()  # the hostile resolver answers over UDP only
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DNSDatagrams(self), sock=udp
            )
            self._udp = transport
            self.resolver_port = udp.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        while self._servers:
            await self._servers.pop().close()

    async def __aenter__(self) -> HostileCorpus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> int:
        ((sock,),) = bind_same_port([_HOST], [socket.SOCK_STREAM])
        server = StreamServer(sock, handler)
        self._servers.append(server)
        await server.start()
        return server.port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A SOCKS5 relay that records every destination and refuses any outside the lab."""
        await _socks_greeting(reader)
        writer.write(b"\x05\x00")
        host, port = await _socks_request(reader)
        self.connects.append(host)
        if not is_lab_address(host):
            writer.write(b"\x05\x02\x00\x01" + bytes(6))  # not allowed: decided before any connect
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(lab_address(host), port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            await writer.drain()
            return
        try:
            writer.write(b"\x05\x00\x00\x01" + socket.inet_aton(_HOST) + bytes(2))
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    # --- what the measurements use -------------------------------------------------

    def url(self, case: Case) -> str:
        """The target URL that measures ``case`` (the normal origin for proxy cases)."""
        if case.kind is Kind.DNS:
            return f"dns://{case.host}"
        if case.kind in (Kind.SOCKS, Kind.CONNECT):
            return self.url(case_named("normal"))
        port = self._ports[case.name]
        return f"{case.kind.value}://{case.host}:{port}" + ("" if case.kind is Kind.TLS else "/")

    def proxy_url(self, case: Case) -> str | None:
        """The proxy URL of the vantage that measures ``case`` (None: no proxy of its own)."""
        if case.kind is Kind.SOCKS:
            return f"socks5://{_HOST}:{self._ports[case.name]}"
        if case.kind is Kind.CONNECT:
            return f"http://{_HOST}:{self._ports[case.name]}"
        return None

    def config_document(self) -> dict[str, Any]:
        """A lifeline config measuring the whole corpus (no control: verdicts are about stages).

        The non-proxy cases are measured from :data:`DIRECT_VANTAGE`, whose TCP
        goes through the recording relay; each proxy case is a vantage of its own
        that measures :data:`PROXIED_SERVICE`.
        """
        resolver = f"{_HOST}:{self.resolver_port}"
        vantages: list[dict[str, Any]] = [
            {"name": DIRECT_VANTAGE, "resolver": resolver,
             "proxy": f"socks5://{_HOST}:{self.relay_port}"},
        ]  # fmt: skip
        services: list[dict[str, Any]] = []
        for case in CASES:
            if not available(case):
                continue
            proxy = self.proxy_url(case)
            if proxy is not None:
                vantages.append({"name": case.name, "resolver": resolver, "proxy": proxy})
            else:
                services.append({"name": case.name, "targets": [self.url(case)]})
        services.append({"name": PROXIED_SERVICE, "targets": [self.url(case_named("normal"))]})
        return {
            "version": 1,
            "defaults": {
                "interval": "5s",  # `serve` spreads first measurements over an interval
                "timeout": TIMEOUT_S,
                "max_body_bytes": MAX_BODY_BYTES,
                "ca_file": str(self.ca_path),
            },
            "vantages": vantages,
            "services": services,
            "storage": {"dir": str(self.directory / "data")},
        }

    def write_config(self) -> Path:
        path = self.directory / "hostile.yaml"
        path.write_text(yaml.safe_dump(self.config_document(), sort_keys=False), encoding="utf-8")
        return path


def _bind_case(case: Case, corpus: HostileCorpus) -> Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]:  # fmt: skip
    handler = case.handler
    assert handler is not None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            await handler(corpus, reader, writer)

    return serve


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    tasks = [
        asyncio.create_task(pipe(reader, up_writer)),
        asyncio.create_task(pipe(up_reader, writer)),
    ]
    try:
        async with asyncio.timeout(BLACKHOLE_S):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RecordingNet(VantageNet):
    """A vantage's network that remembers every dial and refuses any outside the lab.

    For in-process measurements of the corpus: it proves which addresses a
    measurement tried to reach, and guarantees that a bug (a redirect followed
    to 10.0.0.1, say) can never send a packet off the machine.
    """

    def __init__(self, vantage: Vantage, *, ca_file: str | None) -> None:
        super().__init__(vantage, ca_file=ca_file)
        self.dials: list[str] = []

    async def dial(self, address: str, port: int, budget: float) -> CountingSocket:
        self.dials.append(address)
        if not is_lab_address(address):
            raise ConnectionRefusedError(f"{address}: outside the lab (refused by RecordingNet)")
        return await super().dial(address, port, budget)


class HostileThread(BackgroundService[HostileCorpus]):
    """A :class:`HostileCorpus` on its own event loop in a background thread."""

    def __init__(self, directory: Path) -> None:
        super().__init__(HostileCorpus(directory), name="lifeline-hostile")
        self.corpus = self.service
        self.config_path = self.corpus.directory / "hostile.yaml"

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        self.corpus.write_config()
