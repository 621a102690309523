"""The hostile cases: each behaviour, the server code that plays it, and the outcome expected.

Each :class:`Case` names one hostile behaviour (a decompression bomb, a
slowloris, a redirect to the cloud metadata address, a DNS compression-pointer
loop, a SOCKS proxy that lies, ...) and what a correct measurement records.
Stream cases carry their handler here; DNS cases are answered by name in
:mod:`tests.hostile.corpus`, which runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from probes.failures import Failure
from probes.lab.netutil import hold

if TYPE_CHECKING:
    from tests.hostile.corpus import HostileCorpus

__all__ = [
    "CASES",
    "DIRECT_VANTAGE",
    "HOST",
    "MAX_BODY_BYTES",
    "METADATA_ADDRESS",
    "PRIVATE_ADDRESS",
    "PROXIED_SERVICE",
    "TIMEOUT_S",
    "ZONE",
    "Case",
    "Expect",
    "Handler",
    "Kind",
    "available",
    "case_named",
    "socks_greeting",
    "socks_request",
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
#: Where every server of the corpus listens.
HOST = "127.0.0.1"
_HEADER_FLOOD_BYTES = 100 * 1024 * 1024
_SLOW_S = 1.0  # one byte per this many seconds


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


async def socks_greeting(r: asyncio.StreamReader) -> None:
    async with asyncio.timeout(10):
        _, count = await r.readexactly(2)
        await r.readexactly(count)


async def socks_request(r: asyncio.StreamReader) -> tuple[str, int]:
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
    await socks_greeting(r)
    w.write(b"\x04\x00")
    await w.drain()
    await hold(r, 5)


async def _socks_garbage(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await socks_greeting(r)
    w.write(b"\x05\x00")
    await socks_request(r)
    w.write(b"\xde\xad\xbe\xef" + os.urandom(60))
    await w.drain()
    await hold(r, 5)


async def _socks_half_reply(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await socks_greeting(r)
    w.write(b"\x05\x00")
    await socks_request(r)
    w.write(b"\x05\x00\x00")  # then nothing: the connection closes mid-reply
    await w.drain()


async def _socks_bogus_bound(
    corpus: HostileCorpus, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await socks_greeting(r)
    w.write(b"\x05\x00")
    await socks_request(r)
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
