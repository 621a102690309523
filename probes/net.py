"""Network state of one vantage, and what one measurement carries between stages.

A vantage is a network position: which resolver answers and which path the
packets take. :class:`VantageNet` holds what its measurements share (the SSL
context, the DoH session) and dials TCP the vantage's way: directly, bound to
``source_address`` if set, or through its proxy, always by IP address so that
DNS and TCP stay separate observations (CONTRACT §2).

:class:`StageContext` is what one measurement passes from stage to stage: the
target, the deadline, the records so far, and the open connection (TCP, then
TLS on it), so that the HTTP request travels on the connection that TCP and
TLS observed.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from python_socks import ProxyConnectionError, ProxyError, ProxyType
from python_socks.async_.asyncio import Proxy as SocksProxy

from probes.deadline import Deadline
from probes.defaults import DEFAULT_BODY_HEAD_BYTES
from probes.errors import FamilyUnavailable
from probes.failures import Failure
from probes.interfaces import InterfaceAddresses, interface_addresses
from probes.model import Proxy, Target, Vantage
from probes.wire import Counter, ParkedProtocol, readable, writable
from probes.wire import plain as wire_plain

if TYPE_CHECKING:
    import aiohttp

    from probes.fingerprints import FingerprintSet

_R = TypeVar("_R")
_P = TypeVar("_P", bound=asyncio.BaseProtocol)

__all__ = [
    "MeasuredSocket",
    "OpenConnection",
    "StageContext",
    "VantageNet",
    "family_name",
    "literal_family",
]

_PROXY_TYPES = {"socks5": ProxyType.SOCKS5}
#: How long an interface's addresses are taken as read (they change rarely, and a
#: measurement dials a few times).
INTERFACE_CACHE_S = 5.0
#: connect() errors raised before a packet leaves: this host cannot use the family.
_LOCAL_CONNECT_ERRORS = {
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,  # no route of that family here
    errno.EADDRNOTAVAIL: Failure.ADDRESS_NOT_AVAILABLE,
    errno.EAFNOSUPPORT: Failure.ADDRESS_FAMILY_NOT_SUPPORTED,
}
#: The most of an HTTP proxy's CONNECT reply head that is read before giving up.
MAX_CONNECT_HEAD = 16 * 1024
_HEAD_END = b"\r\n\r\n"


class MeasuredSocket(socket.socket):
    """The TCP socket a measurement dials (its own class: a leak check finds them).

    What it receives is counted above it, at the protocol layer
    (:class:`probes.wire.Counter`), so that the count, the EOF and the reset
    are the same whichever event loop reads the file descriptor.
    """

    @classmethod
    def adopt(cls, sock: socket.socket) -> MeasuredSocket:
        """Take over the file descriptor of a connected socket."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.setblocking(False)
        return new


@dataclass(slots=True)
class OpenConnection:
    """The connection a measurement's stages share: a socket, later a TLS transport.

    What the HTTP stage does with it, without touching the counting:
    :meth:`plain` (a transport on it with protocol P, for http) or
    :meth:`hand_over` (the TLS stage's transport given to protocol P, for
    https); a redirect hop's fresh socket goes through :func:`probes.wire.connect`.
    """

    address: str
    port: int
    sock: MeasuredSocket
    transport: asyncio.Transport | None = None  # set once TLS is up on ``sock``
    server_name: str | None = None  # SNI the TLS transport was made with
    #: what the connection received and how it ended (set once a transport reads it)
    counter: Counter | None = None

    async def plain(self, factory: Callable[[], _P]) -> tuple[asyncio.Transport, _P]:
        """A transport on this (plain) connection, read by ``factory()``'s protocol;
        the caller owns it (the connection is closed if it cannot be made)."""
        protocol = factory()
        try:
            transport, self.counter = await wire_plain(self.sock, protocol)
        except BaseException:
            self.close()
            raise
        return transport, protocol

    def hand_over(self, factory: Callable[[], _P]) -> tuple[asyncio.Transport, _P] | None:
        """The TLS transport, now read by ``factory()``'s protocol (with what arrived
        since the handshake); the caller owns it from now on. None, and the
        connection closed, when the server hung up meanwhile."""
        transport = self.transport
        parked = transport.get_protocol() if transport is not None else None
        fresh = isinstance(parked, ParkedProtocol) and not parked.lost
        if transport is None or transport.is_closing() or not fresh:
            self.close()
            return None
        assert isinstance(parked, ParkedProtocol)
        self.transport = None  # the taker aborts it from now on
        protocol = factory()
        parked.hand_over(transport, protocol)  # type: ignore[arg-type]
        return transport, protocol

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.sock.close()


class StageRecords(Protocol):
    """What a stage reads of its measurement so far (a ``probes.records.Measurement``).

    A protocol, not the class: the records build on the stage table, which
    builds on the stages, so the stages do not import the records back.
    """

    stages: dict[str, Any]

    def record(self, kind: type[_R]) -> _R | None: ...


class Pending(Protocol):
    """Evidence a stage goes on collecting while the next stages run."""

    async def finish(self) -> None:
        """Wait for the rest and write it into the stage's record."""

    async def aclose(self) -> None:
        """Stop collecting now (the measurement was cut short)."""


@dataclass(slots=True)
class StageContext:
    """What one measurement carries from stage to stage."""

    target: Target
    vantage: Vantage
    net: VantageNet
    deadline: Deadline
    measurement: StageRecords
    max_body_bytes: int
    connection: OpenConnection | None = None
    #: the signatures the HTTP stage scans each body for (None: the built-in ones)
    fingerprints: FingerprintSet | None = None
    #: how much of a body's start the HTTP record keeps (``defaults.body_head_bytes``)
    body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES
    #: Evidence still arriving after its stage returned (a DNS listening window):
    #: the later stages run meanwhile; :func:`probes.measure.measure` waits for it
    #: once they are done, or closes it when the measurement is cut short.
    pending: list[Pending] = field(default_factory=list)

    def take_connection(self) -> OpenConnection | None:
        """Hand the open connection over (the taker owns it from now on)."""
        conn, self.connection = self.connection, None
        return conn

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    async def settle(self) -> None:
        """Wait for every pending piece of evidence (each writes its record)."""
        while self.pending:
            await self.pending[0].finish()
            self.pending.pop(0)

    async def abandon(self) -> None:
        """Close what is still pending (after a failure or a cancellation)."""
        pending, self.pending = self.pending, []
        for p in pending:
            await p.aclose()


class VantageNet:
    """Per-vantage network state shared by its measurements: resolver client, dialer
    (direct with source_address, or through the vantage's proxy), shared SSL context
    (system trust + ca_file)."""

    def __init__(self, vantage: Vantage, *, ca_file: str | None) -> None:
        self.vantage = vantage
        self.ssl_context = _ssl_context(ca_file, ("http/1.1",))
        self.dot_ssl_context = _ssl_context(ca_file, ("dot",))
        self._doh_session: aiohttp.ClientSession | None = None
        self._interface: tuple[float, InterfaceAddresses] | None = None

    @property
    def via_proxy(self) -> bool:
        return self.vantage.proxy is not None

    def source_for(self, family: int) -> str | None:
        """The address to bind a socket of ``family`` to; None when the vantage does not bind.

        Raises FamilyUnavailable when the vantage binds but has no address of
        that family: sending such a socket out unbound would measure another
        network path than the vantage's.
        """
        source = self.vantage.source
        if source is None:
            return None
        name = family_name(family)
        if source.interface is None:
            address = source.ipv4 if family == socket.AF_INET else source.ipv6
            if address is None:
                raise FamilyUnavailable(
                    Failure.ADDRESS_FAMILY_NOT_SUPPORTED,
                    f"no {name} source address (source_address: {source})",
                )
            return address
        now = time.monotonic()
        if self._interface is None or now - self._interface[0] > INTERFACE_CACHE_S:
            self._interface = (now, interface_addresses(source.interface))
        found = self._interface[1]
        address = found.ipv4 if family == socket.AF_INET else found.ipv6
        if address is None:
            why = found.problem or f"interface {source.interface} has no usable {name} address"
            raise FamilyUnavailable(Failure.ADDRESS_FAMILY_NOT_SUPPORTED, why)
        return address

    def bind_source(self, sock: socket.socket) -> None:
        """Bind ``sock`` to the vantage's source address of its family, if it binds.

        A bind the host refuses (an address it does not have, a family it does
        not speak) is FamilyUnavailable: nothing was sent.
        """
        source = self.source_for(sock.family)
        if source is None:
            return
        try:
            sock.bind((source, 0))
        except OSError as exc:
            failure = _LOCAL_CONNECT_ERRORS.get(exc.errno or 0)
            if isinstance(exc, socket.gaierror) or failure is None:
                failure = Failure.ADDRESS_FAMILY_NOT_SUPPORTED
            raise FamilyUnavailable(failure, f"cannot bind to {source}: {exc}") from exc

    def local_addr(self, host: str) -> tuple[str, int] | None:
        """``local_addr`` for a library that connects to ``host`` (an IP literal) itself."""
        source = self.source_for(literal_family(host))
        return None if source is None else (source, 0)

    async def dial(self, address: str, port: int, budget: float) -> MeasuredSocket:
        """A connected TCP socket to ``address`` (an IP literal) along the vantage's path."""
        if self.vantage.proxy is None:
            return await self._dial_direct(address, port, budget)
        return await self._dial_proxy(address, port, budget)

    async def _dial_direct(self, address: str, port: int, budget: float) -> MeasuredSocket:
        """Bind, connect, wait. What fails before a packet leaves (no source of the
        family, a bind the host refuses, no route of the family here) is
        FamilyUnavailable; what fails after is the path's answer."""
        family = literal_family(address)
        self.source_for(family)  # raises before any socket exists: nothing to close
        try:
            sock = MeasuredSocket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                no_stack = f"this host has no {family_name(family)} stack"
                raise FamilyUnavailable(Failure.ADDRESS_FAMILY_NOT_SUPPORTED, no_stack) from exc
            raise
        try:
            sock.setblocking(False)
            self.bind_source(sock)
            code = sock.connect_ex((address, port))
            if code in _LOCAL_CONNECT_ERRORS:
                raise FamilyUnavailable(
                    _LOCAL_CONNECT_ERRORS[code],
                    f"no {family_name(family)} route to {address} here ({os.strerror(code)})",
                )
            if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                async with asyncio.timeout(budget):
                    await writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code != 0:
                raise OSError(code, os.strerror(code))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _dial_proxy(self, address: str, port: int, budget: float) -> MeasuredSocket:
        proxy = self.vantage.proxy
        assert proxy is not None
        if proxy.kind == "http":
            return await self._dial_http_proxy(proxy, address, port, budget)
        client = SocksProxy(
            _PROXY_TYPES[proxy.kind],
            proxy.host,
            proxy.port,
            username=proxy.username,
            password=proxy.password,
            rdns=False,
            loop=asyncio.get_running_loop(),
        )
        local = self.local_addr(proxy.host)
        sock = await client.connect(
            dest_host=address, dest_port=port, timeout=max(budget, 0.001), local_addr=local
        )
        return MeasuredSocket.adopt(sock)

    async def _dial_http_proxy(
        self, proxy: Proxy, address: str, port: int, budget: float
    ) -> MeasuredSocket:
        """A tunnel through an HTTP proxy, its CONNECT reply read whole and bounded.

        The reply head is read up to its blank line (at most MAX_CONNECT_HEAD
        bytes, within the budget) and nothing beyond it: a head without an end
        is the proxy's failure, and none of it may reach the HTTP stage as if
        the origin had sent it. python-socks reads one chunk and accepts a bare
        status line, which let exactly that happen. Failures are raised as
        python-socks' own exceptions, so they map as before (probes.errors).
        """
        async with asyncio.timeout(max(budget, 0.001)):
            try:
                sock = await self._dial_direct(proxy.host, proxy.port, budget)
            except TimeoutError:
                raise  # a proxy that does not answer is a timeout, as with python-socks
            except OSError as exc:  # refused, unreachable: the proxy itself
                raise ProxyConnectionError(f"cannot reach the proxy: {exc}") from exc
            try:
                loop = asyncio.get_running_loop()
                await loop.sock_sendall(sock, _connect_request(proxy, address, port))
                _check_connect_reply(await _connect_reply_head(sock))
            except BaseException:
                sock.close()
                raise
        return MeasuredSocket.adopt(sock)  # the tunnel: its transport counts what follows the reply

    def doh_session(self) -> aiohttp.ClientSession:
        """The session DoH queries share (created on first use, inside the loop)."""
        import aiohttp

        if self._doh_session is None or self._doh_session.closed:
            spec = self.vantage.resolver
            local = self.local_addr(spec.host) if spec.kind == "https" else None
            connector = aiohttp.TCPConnector(ssl=self.ssl_context, local_addr=local)
            self._doh_session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._doh_session

    async def aclose(self) -> None:
        if self._doh_session is not None:
            await self._doh_session.close()
            self._doh_session = None


def _connect_request(proxy: Proxy, address: str, port: int) -> bytes:
    """CONNECT to an IP literal (never a name: the proxy must not resolve for us)."""
    authority = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username and proxy.password is not None:
        credentials = f"{proxy.username}:{proxy.password}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connect_reply_head(sock: socket.socket) -> bytes:
    """The proxy's reply head, through its blank line, and not one byte more.

    What is available is peeked at, and only the head is taken off the socket,
    so whatever follows it stays there for the tunnel's user.
    """
    head = bytearray()
    while True:
        await readable(sock)
        try:
            peeked = sock.recv(MAX_CONNECT_HEAD - len(head), socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not peeked:
            raise ProxyError(f"the proxy closed during its CONNECT reply ({len(head)} bytes)")
        tail = bytes(head[-3:])
        end = (tail + peeked).find(_HEAD_END)
        take = len(peeked) if end < 0 else end + len(_HEAD_END) - len(tail)
        head += sock.recv(take)
        if end >= 0:
            return bytes(head)
        if len(head) >= MAX_CONNECT_HEAD:
            raise ProxyError(f"CONNECT reply head longer than {MAX_CONNECT_HEAD} bytes")


def _check_connect_reply(head: bytes) -> None:
    """Nothing but ``HTTP/1.x 200`` opens the tunnel (as python-socks judged it)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = line.partition(" ")
    code, _, reason = rest.strip().partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ProxyError(f"invalid CONNECT reply status line: {line[:80]!r}")
    if int(code) != 200:
        raise ProxyError(f"{code} {reason.strip()}"[:200], error_code=int(code))


def family_name(family: int) -> str:
    """``IPv4`` or ``IPv6``."""
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def literal_family(address: str) -> socket.AddressFamily:
    """The family of an IP literal; ValueError for anything else.

    A host name must never get here: sock_connect would resolve it with the
    system resolver. inet_pton is the cheap C check (this runs once per dial).
    """
    for family, text in ((socket.AF_INET, address), (socket.AF_INET6, address.split("%", 1)[0])):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return family
    raise ValueError(f"{address!r} is not an IP address")


def _ssl_context(ca_file: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    """The shared context for ``ca_file`` as it is on disk now (see _shared_context)."""
    return _shared_context(ca_file, _file_stamp(ca_file), alpn)


def _file_stamp(path: str | None) -> tuple[int, int, int] | None:
    """What tells a changed file (a rotated CA written to the same path) from the same one."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # loading it will raise the error the user should see
    return st.st_ino, st.st_size, st.st_mtime_ns


def _new_context(
    ca_file: str | None, stamp: tuple[int, int, int] | None, alpn: tuple[str, ...]
) -> ssl.SSLContext:
    """System trust plus the configured extra anchors.

    Web connections offer only HTTP/1.1 because that is what aiohttp speaks;
    DNS-over-TLS offers "dot" (RFC 7858 names no ALPN, but RFC 9461 does).
    ``stamp`` only keys the memo below.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


#: Loading the system trust store takes about a tenth of a second and blocks the
#: loop; every vantage (and every config reload) would load it twice. The
#: contexts are never changed once made, so vantages share them, one per CA file
#: as it is on disk (functools' memo is thread-safe: the lab runs several loops).
_shared_context = functools.lru_cache(maxsize=16)(_new_context)
