"""The HTTP stage: GET the target like a browser would, following redirects by hand.

The GET is lifeline's own HTTP/1.1 client (:mod:`probes.http1`, llhttp through
httptools), which never resolves a name and never dials by itself: the client
below asks the DNS stage's answer (or, for a redirect to another host, the
vantage's resolver) and dials along the vantage's path
(:mod:`probes.httpconn`). The first request
rides on the connection the TCP and TLS stages observed, so one https
measurement is one connection, as a stateful censor sees a browser's.

The body is read in chunks after decompression and capped at max_body_bytes,
so a decompression bomb stays bounded. A body still arriving when the budget
runs out is a throughput sample, not a failure. Each chunk is decoded and
scanned for the fingerprints' body signatures as it arrives (the body is never
held whole; its first body_head_bytes are kept), redirect hops' bodies too; a
redirect to a known block-page host is recorded and not followed.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import hashlib
import html
import importlib.util
import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any, cast

from multidict import MultiMapping
from yarl import URL

from probes.dns import resolve_addresses
from probes.errors import StageError, mapped
from probes.evidence import DNSStage, HTTPHop, HTTPStage
from probes.failures import Failure
from probes.fingerprints import BodyScan, FingerprintSet
from probes.http1 import BodyDecoder, ResponseHead, ResponseReader, decoder_for, request_bytes
from probes.httpconn import Wire, adopt, dial
from probes.model import is_ip
from probes.net import OpenConnection, StageContext
from probes.tcp import MAX_ATTEMPTS

__all__ = [
    "MAX_REDIRECTS",
    "address_reach",
    "all_headers",
    "headers_of_interest",
    "http_stage",
    "next_url",
    "target_reach",
    "within_reach",
]

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HEADERS_OF_INTEREST = (
    "server", "content-type", "content-length", "content-encoding", "location", "via",
    "x-cache", "cf-ray", "x-served-by", "x-powered-by", "set-cookie", "cache-control",
)  # fmt: skip
#: Each header value kept is at most this long; all of them together at most MAX_HEADERS_TOTAL.
MAX_HEADER_VALUE = 8192
MAX_HEADERS_TOTAL = 65_536
TITLE_SCAN_BYTES = 65_536
#: A redirect's own body is read up to this (hashed, its title taken, scanned) ...
HOP_BODY_BYTES = 65_536
#: ... for at most this long: a redirect that never ends its body must not eat the budget.
HOP_READ_S = 1.0
#: Without a charset in Content-Type, a <meta charset> is looked for in this much of the
#: body's start (as browsers pre-scan it), before decoding begins.
SNIFF_BYTES = 1024
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE
)
MAX_TITLE = 200
#: The opening tag (attributes bounded, so many unclosed "<title" stay linear) and the end.
_TITLE_OPEN = re.compile(r"<title(?:\s[^>]{0,256})?>", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title", re.IGNORECASE)
#: Characters of title text looked at (a 1 MB title is cut, not unescaped whole).
_TITLE_SCAN_CHARS = 4096
_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0 Safari/537.36"
)


def _accept_encoding() -> str:
    """br only when it can be decoded (probes.http1 needs the brotli module for it)."""
    if importlib.util.find_spec("brotli") is None:
        return "gzip, deflate"
    return "gzip, deflate, br"


#: Looked up once at import: which modules are installed does not change while
#: lifeline runs, and find_spec walks sys.path (it was once per request).
_ACCEPT_ENCODING = _accept_encoding()


def request_headers() -> dict[str, str]:
    """What every request sends: enough of a browser not to be singled out."""
    return {
        "User-Agent": _USER_AGENT,
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language": "en-US,en;q=0.9",
        "Accept-Encoding": _ACCEPT_ENCODING,
    }


async def http_stage(ctx: StageContext) -> HTTPStage:
    """GET the target, follow up to MAX_REDIRECTS redirects, read the body (capped)."""
    started = time.monotonic()
    record = HTTPStage(ok=False, failure=None, duration_s=0.0, url=ctx.target.url)
    reach = target_reach(ctx)
    client = _Client(ctx, ctx.take_connection(), reach)
    fps = ctx.fingerprints if ctx.fingerprints is not None else FingerprintSet.build()
    scan = fps.body_scan()
    try:
        await _follow(ctx, client, record, reach, fps, scan)
    except StageError as exc:
        record.ok, record.failure = False, exc.failure
    finally:
        client.close()
    if scan.scanned_chars or record.body_length is not None:
        # what a browser was shown, kept even when the connection failed after it
        record.body_signatures = list(scan.blocks)
        record.body_false_positives = list(scan.false_positives)
        record.body_scanned_with = scan.digest or None
    record.request_sent = record.request_sent or client.request_sent
    record.duration_s = time.monotonic() - started
    return record


async def _follow(
    ctx: StageContext,
    client: _Client,
    record: HTTPStage,
    reach: frozenset[str],
    fps: FingerprintSet,
    scan: BodyScan,
) -> None:
    url = URL(ctx.target.url)  # yarl keeps parsed URLs: this is a cache hit, not a parse
    for _ in range(MAX_REDIRECTS + 1):
        with mapped():
            async with asyncio.timeout(ctx.deadline.remaining()):
                resp = await client.get(url)
        location = resp.head.headers.get("Location")
        if resp.head.status not in REDIRECT_STATUSES or not location:
            record.request_sent = True
            await _final(ctx, record, url, resp, scan)
            return
        hop = HTTPHop(str(url), resp.head.status, location[:2048], resp.address)
        hop.headers, hop.headers_truncated = all_headers(resp.head.headers)
        record.redirects.append(hop)
        body, text = await _read_hop(ctx, resp, hop, scan)
        client.release(resp)
        if _stops_at_block_host(url, location, fps):
            # never connect to a censor's server: this redirect is what we were shown
            record.request_sent = True
            _fill(ctx, record, url, resp, body, text)
            record.redirect_stopped = True
            return
        # a redirect may not lead where the configured target could not: another
        # scheme, or an address outside ``reach`` (refused before any resolve or dial)
        url = next_url(url, location, reach)
    raise StageError(Failure.HTTP_TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects")


def _stops_at_block_host(url: URL, location: str, fps: FingerprintSet) -> bool:
    """The Location leads to a known block-page host or address."""
    try:
        host = url.join(URL(location)).host
    except ValueError:
        return False
    return fps.block_host(host) is not None


async def _read_hop(
    ctx: StageContext, resp: _Response, hop: HTTPHop, scan: BodyScan
) -> tuple[_Body, _Text]:
    """A redirect's own body: bounded by HOP_BODY_BYTES and HOP_READ_S, hashed, scanned.

    A failure reading it (the server hung up after its headers) is not the
    stage's failure: the redirect was received.
    """
    body = _Body(keep=max(TITLE_SCAN_BYTES, ctx.body_head_bytes))
    text = _Text(resp.head.charset, scan)
    budget = min(HOP_READ_S, max(0.0, ctx.deadline.remaining()))
    try:
        async with asyncio.timeout(budget):
            await _read_into(resp, body, HOP_BODY_BYTES, text)
    except (TimeoutError, StageError, OSError, ValueError, EOFError):
        body.truncated = True
    text.finish()
    hop.body_length = body.length
    hop.body_sha256 = body.sha256.hexdigest()
    hop.title = _title(_decode(bytes(body.scan), text.charset))
    return body, text


def next_url(url: URL, location: str, reach: frozenset[str]) -> URL:
    """Where a Location header leads from ``url``; StageError(http_bad_redirect) when it
    may not be followed. Pure: no resolver, no dial."""
    shown = location[:2048]
    try:
        target = url.join(URL(location))
        host = target.host
    except ValueError as exc:  # yarl's parse errors (UnicodeError included)
        raise StageError(Failure.HTTP_BAD_REDIRECT, f"bad Location {shown!r}") from exc
    if target.scheme not in ("http", "https") or not host:
        raise StageError(Failure.HTTP_BAD_REDIRECT, f"redirect to {shown!r}")
    if is_ip(host) and not within_reach(host, reach):
        raise StageError(
            Failure.HTTP_BAD_REDIRECT, f"redirect to {host}: outside the target's reach"
        )
    return target


# --- where a redirect may lead ---------------------------------------------------


@functools.lru_cache(maxsize=8192)  # asked of every address, measurement after measurement
def address_reach(address: str) -> str | None:
    """The kind of network an address is in; None where no redirect may ever lead
    (link-local, e.g. the 169.254.169.254 metadata service; multicast; unspecified)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return None
    if ip.is_loopback:
        return "loopback"
    if ip.is_global:
        return "global"
    return "private"


def target_reach(ctx: StageContext) -> frozenset[str]:
    """The kinds of network the configured target itself is in (by its DNS answer).

    A redirect from a public site into 10.0.0.0/8 or to 127.0.0.1 is a way to make
    the vantage probe its own neighbourhood; a lab target on loopback may still
    redirect to another loopback name.
    """
    dns = ctx.measurement.record(DNSStage)
    addresses = list(dns.addresses) if dns is not None else []
    if ctx.target.host_is_ip:
        addresses.append(ctx.target.host)
    kinds = {address_reach(a) for a in addresses if is_ip(a)}
    return frozenset(k for k in kinds if k is not None) | {"global"}


def within_reach(address: str, reach: frozenset[str]) -> bool:
    return is_ip(address) and address_reach(address) in reach


async def _final(
    ctx: StageContext, record: HTTPStage, url: URL, resp: _Response, scan: BodyScan
) -> None:
    """Fill the record from the last response and its (capped) body."""
    text = _Text(resp.head.charset, scan)
    try:
        body = await _read_body(resp, ctx.max_body_bytes, ctx, text)
    finally:
        text.finish()
    _fill(ctx, record, url, resp, body, text)
    if ctx.target.throughput:
        record.transfer_s = body.transfer_s
        record.throughput_bps = body.length / body.transfer_s if body.transfer_s > 0 else None


def _fill(
    ctx: StageContext,
    record: HTTPStage,
    url: URL,
    resp: _Response,
    body: _Body,
    text: _Text,
) -> None:
    record.final_url = str(url)
    record.status = resp.head.status
    record.headers, record.headers_truncated = all_headers(resp.head.headers)
    record.ok, record.failure = True, None
    record.body_length = body.length
    record.body_sha256 = body.sha256.hexdigest()
    record.body_truncated = body.truncated
    record.body_head = _decode(bytes(body.scan[: ctx.body_head_bytes]), text.charset)
    record.title = _title(_decode(bytes(body.scan[:TITLE_SCAN_BYTES]), text.charset))


@dataclass(slots=True)
class _Body:
    length: int = 0
    truncated: bool = False
    transfer_s: float = 0.0
    sha256: Any = field(default_factory=hashlib.sha256)
    scan: bytearray = field(default_factory=bytearray)  # the first ``keep`` bytes
    keep: int = TITLE_SCAN_BYTES

    def add(self, chunk: bytes, cap: int) -> bytes:
        """Keep what fits under the cap; note that more came. Returns what was kept."""
        room = cap - self.length
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:room]
        self.length += len(chunk)
        self.sha256.update(chunk)
        if len(self.scan) < self.keep:
            self.scan += chunk[: self.keep - len(self.scan)]
        return chunk


class _Text:
    """The body decoded as it arrives, fed to the signature scan; never kept whole.

    The charset is the Content-Type's, else a ``<meta charset>`` in the first
    SNIFF_BYTES (as a browser pre-scans), else UTF-8; bytes that do not decode
    become U+FFFD, and a codec that cannot decode incrementally gives way to UTF-8.
    """

    def __init__(self, charset: str | None, scan: BodyScan) -> None:
        self.charset = charset
        self._scan = scan
        self._raw = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = None

    def add(self, data: bytes) -> None:
        if self._decoder is not None:
            self._feed(data)
            return
        self._raw += data
        if len(self._raw) >= SNIFF_BYTES:
            self._start()

    def finish(self) -> None:
        if self._decoder is None:
            self._start()
        self._feed(b"", final=True)
        self._scan.finish()

    def _start(self) -> None:
        if self.charset is None:
            found = _META_CHARSET.search(bytes(self._raw[:SNIFF_BYTES]))
            self.charset = found.group(1).decode("ascii") if found else None
        self._decoder = _incremental_decoder(self.charset)
        if self._decoder is None:
            self.charset, self._decoder = None, _incremental_decoder(None)
        raw, self._raw = bytes(self._raw), bytearray()
        self._feed(raw)

    def _feed(self, data: bytes, final: bool = False) -> None:
        assert self._decoder is not None
        try:
            text = self._decoder.decode(data, final)
        except (UnicodeError, ValueError, TypeError, LookupError):
            self.charset, self._decoder = None, _incremental_decoder(None)
            assert self._decoder is not None
            text = self._decoder.decode(data, final)
        if isinstance(text, str):
            self._scan.feed(text)


def _incremental_decoder(charset: str | None) -> codecs.IncrementalDecoder | None:
    """A lenient incremental decoder of a text encoding; None for anything else."""
    try:
        info = codecs.lookup(charset or "utf-8")
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.incrementaldecoder is None:
        return None
    try:
        return info.incrementaldecoder(errors="replace")
    except (TypeError, ValueError, LookupError):
        return None


async def _read_body(resp: _Response, cap: int, ctx: StageContext, text: _Text) -> _Body:
    """Read decompressed chunks until the end, the cap, or the deadline (each one scanned)."""
    body = _Body(keep=max(TITLE_SCAN_BYTES, ctx.body_head_bytes))
    started = time.monotonic()
    try:
        with mapped():
            async with asyncio.timeout(ctx.deadline.remaining()):
                await _read_into(resp, body, cap, text)
    except StageError as exc:
        if exc.failure != Failure.TIMEOUT or body.length == 0:
            raise
        body.truncated = True  # still arriving at the deadline: a throughput sample
    body.transfer_s = time.monotonic() - started
    return body


async def _read_into(resp: _Response, body: _Body, cap: int, text: _Text) -> None:
    """The body, decoded, into ``body`` and ``text`` until its end or ``cap``: the decoder
    is asked for one byte more than fits, so a bomb is cut, never inflated past it."""
    while not body.truncated:
        raw = await resp.reader.read()
        out = resp.decoder.feed(raw, cap - body.length + 1) if raw else resp.decoder.flush()
        if out:
            text.add(body.add(out, cap))
        if not raw:
            return


def all_headers(headers: MultiMapping[str]) -> tuple[dict[str, str], bool]:
    """Every header (lower-case names, repeated ones joined by ", ") and whether a cap cut
    any: each value at most MAX_HEADER_VALUE characters, all at most MAX_HEADERS_TOTAL."""
    out: dict[str, str] = {}
    total, truncated = 0, False
    for name, value in headers.items():
        key = name.lower()
        before = out.get(key)
        joined = value if before is None else f"{before}, {value}"
        if len(joined) > MAX_HEADER_VALUE:
            joined, truncated = joined[:MAX_HEADER_VALUE], True
        grow = len(joined) - (len(before) if before is not None else -len(key))
        if total + grow > MAX_HEADERS_TOTAL:
            truncated = True
            continue
        if before is not None and before == joined:
            continue
        out[key] = joined
        total += grow
    return out, truncated


def headers_of_interest(headers: MultiMapping[str]) -> dict[str, str]:
    """The headers that tell a censor's box from the origin, each at most MAX_HEADER_VALUE."""
    out: dict[str, str] = {}
    for name in HEADERS_OF_INTEREST:
        kept: list[str] = []
        size = 0
        for value in headers.getall(name, []):
            if size >= MAX_HEADER_VALUE:
                break
            kept.append(value[:MAX_HEADER_VALUE])
            size += len(kept[-1]) + 2
        if kept:
            out[name] = ", ".join(kept)[:MAX_HEADER_VALUE]
    return out


def _decode(data: bytes, charset: str | None) -> str:
    """Lenient decoding: a block page in a broken encoding must still be readable."""
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError):  # an unknown name, a NUL in it, or a codec (idna,
        return data.decode("utf-8", errors="replace")  # punycode) that cannot "replace"


def _title(text: str) -> str | None:
    """The page's <title>, whitespace folded, at most MAX_TITLE characters.

    Linear in the text: a title that never closes (or closes a megabyte later)
    is read up to _TITLE_SCAN_CHARS, as a browser's tab would show its start.
    """
    opening = _TITLE_OPEN.search(text)
    if opening is None:
        return None
    start = opening.end()
    closing = _TITLE_CLOSE.search(text, start, start + _TITLE_SCAN_CHARS)
    end = closing.start() if closing is not None else start + _TITLE_SCAN_CHARS
    title = " ".join(html.unescape(text[start:end]).split())
    return title[:MAX_TITLE]


# --- the client: every connection goes the vantage's way -------------------------


@dataclass(slots=True)
class _Response:
    """One response in flight: its head, its body still to read, where it came from."""

    head: ResponseHead
    reader: ResponseReader
    decoder: BodyDecoder
    transport: Wire
    key: tuple[bool, str, int]  # (tls, host, port): which later request may reuse it
    address: str  # the address its connection goes to (not the proxy's)


class _Client:
    """GETs along the vantage's path, the first on the connection TCP/TLS opened.

    Names are resolved only by the vantage's resolver (the target's own by the
    DNS stage's answer); a connection whose response was read to its end is kept
    for the next request to the same scheme, host and port, as a browser keeps
    it. Every transport made or taken over is aborted by :meth:`close`.
    """

    def __init__(
        self, ctx: StageContext, handoff: OpenConnection | None, reach: frozenset[str]
    ) -> None:
        self._ctx = ctx
        self._handoff = handoff
        self._known: dict[str, list[str]] = {ctx.target.host: _pinned_addresses(ctx, handoff)}
        self._reach = reach  # target_reach(ctx), made once per measurement
        self._made: list[Wire] = []
        self._kept: _Response | None = None  # a finished response's reusable connection
        self.request_sent = False  # the latest request was written to its connection

    async def get(self, url: URL) -> _Response:
        """Send GET ``url`` and read its response head (its body is read by the caller)."""
        self.request_sent = False
        host, port, tls = url.host or "", url.port or 0, url.scheme == "https"
        key = (tls, host, port)
        reader = ResponseReader()
        transport, address = await self._connection(key, reader)
        if transport.is_closing():
            raise StageError(Failure.CONNECTION_RESET, "cannot write to a closing transport")
        target = url.raw_path_qs or "/"
        transport.write(
            request_bytes(target, url.host_port_subcomponent or host, request_headers())
        )
        self.request_sent = True
        head = await reader.head()
        return _Response(head, reader, decoder_for(head), transport, key, address)

    def release(self, resp: _Response) -> None:
        """Done with ``resp``: keep its connection for reuse if it may be, else abort it."""
        if resp.reader.reusable and resp.head.keep_alive and not resp.transport.is_closing():
            self._kept = resp
        else:
            resp.transport.abort()

    def close(self) -> None:
        """Abort every connection of the stage (and the stages' one, if never used):
        whatever a hostile peer does, none outlives the measurement."""
        if self._handoff is not None:
            self._handoff.close()
            self._handoff = None
        self._kept = None
        made, self._made = self._made, []
        for transport in made:
            transport.abort()  # a no-op once closed

    async def _connection(
        self, key: tuple[bool, str, int], reader: ResponseReader
    ) -> tuple[Wire, str]:
        kept, self._kept = self._kept, None
        if kept is not None:
            if kept.key == key and not kept.transport.is_closing():
                kept.transport.set_protocol(reader)
                reader.connection_made(cast(asyncio.BaseTransport, kept.transport))
                return kept.transport, kept.address
            kept.transport.abort()
        tls, host, port = key
        addresses = (await self._addresses(host))[:MAX_ATTEMPTS]
        server_name = host.rstrip(".") if tls else None
        conn, self._handoff = self._handoff, None
        if conn is not None:
            fits = conn.address in addresses and conn.port == port
            if fits and (conn.transport is not None) == tls and conn.server_name == server_name:
                transport = await adopt(conn, lambda: reader)
                if transport is not None:
                    self._made.append(transport)
                    return transport, conn.address
            else:
                conn.close()
        transport, address = await dial(self._ctx, addresses, port, server_name, lambda: reader)
        self._made.append(transport)
        return transport, address

    async def _addresses(self, host: str) -> list[str]:
        """An IP literal itself; a name by the DNS stage's answer or the vantage's resolver."""
        if is_ip(host):
            return [host]
        name = host.lower().rstrip(".")
        if name not in self._known:
            self._known[name] = await self._redirect_addresses(name)
        return self._known[name]

    async def _redirect_addresses(self, name: str) -> list[str]:
        """A redirect's host, by the vantage's resolver; only addresses within reach."""
        found = await resolve_addresses(self._ctx.net, name, self._ctx.deadline)
        usable = [a for a in found if within_reach(a, self._reach)]
        if not usable:
            raise StageError(
                Failure.HTTP_BAD_REDIRECT,
                f"redirect to {name} ({', '.join(found[:4])}): outside the target's reach",
            )
        return usable


def _pinned_addresses(ctx: StageContext, handoff: OpenConnection | None) -> list[str]:
    """The DNS stage's addresses, the one TCP connected to first."""
    dns = ctx.measurement.record(DNSStage)
    addresses = list(dns.addresses) if dns is not None else []
    if handoff is not None and handoff.address in addresses:
        addresses.remove(handoff.address)
        addresses.insert(0, handoff.address)
    return addresses
