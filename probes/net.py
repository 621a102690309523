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
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from python_socks import ProxyType
from python_socks.async_.asyncio import Proxy as SocksProxy

from probes.deadline import Deadline
from probes.model import Target, Vantage
from probes.records import Measurement

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CountingSocket", "OpenConnection", "StageContext", "VantageNet"]

_PROXY_TYPES = {"socks5": ProxyType.SOCKS5, "http": ProxyType.HTTP}


class CountingSocket(socket.socket):
    """A socket that counts what it receives and remembers how the peer ended.

    asyncio transports read through the socket object they were given, so the
    count covers the TLS handshake too: a handshake read in tiny pieces over
    seconds is the mark of throttling, and EOF vs. reset tells two censors apart.
    """

    def __init__(
        self,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,  # socket.socket's own parameter name
        proto: int = 0,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self.received = 0
        self.saw_eof = False
        self.saw_reset = False

    @classmethod
    def adopt(cls, sock: socket.socket) -> CountingSocket:
        """Take over the file descriptor of a connected socket."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.setblocking(False)
        return new

    def _count(self, n: int) -> int:
        self.received += n
        if n == 0:
            self.saw_eof = True
        return n

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            data = super().recv(bufsize, flags)
        except ConnectionResetError:
            self.saw_reset = True
            raise
        self._count(len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        try:
            n = super().recv_into(buffer, nbytes, flags)
        except ConnectionResetError:
            self.saw_reset = True
            raise
        return self._count(n)

    def ending(self) -> tuple[int, bool, bool]:
        """(bytes received, peer sent EOF, peer reset)."""
        return self.received, self.saw_eof, self.saw_reset


@dataclass(slots=True)
class OpenConnection:
    """The connection a measurement's stages share: a socket, later a TLS transport."""

    address: str
    port: int
    sock: CountingSocket
    transport: asyncio.Transport | None = None  # set once TLS is up on ``sock``
    server_name: str | None = None  # SNI the TLS transport was made with

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.sock.close()


@dataclass(slots=True)
class StageContext:
    """What one measurement carries from stage to stage."""

    target: Target
    vantage: Vantage
    net: VantageNet
    deadline: Deadline
    measurement: Measurement
    max_body_bytes: int
    connection: OpenConnection | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def take_connection(self) -> OpenConnection | None:
        """Hand the open connection over (the taker owns it from now on)."""
        conn, self.connection = self.connection, None
        return conn

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class VantageNet:
    """Per-vantage network state shared by its measurements: resolver client, dialer
    (direct with source_address, or through the vantage's proxy), shared SSL context
    (system trust + ca_file)."""

    def __init__(self, vantage: Vantage, *, ca_file: str | None) -> None:
        self.vantage = vantage
        self.ssl_context = _ssl_context(ca_file, ["http/1.1"])
        self.dot_ssl_context = _ssl_context(ca_file, ["dot"])
        self._doh_session: aiohttp.ClientSession | None = None

    @property
    def via_proxy(self) -> bool:
        return self.vantage.proxy is not None

    async def dial(self, address: str, port: int, budget: float) -> CountingSocket:
        """A connected TCP socket to ``address`` (an IP literal) along the vantage's path."""
        if self.vantage.proxy is None:
            return await self._dial_direct(address, port, budget)
        return await self._dial_proxy(address, port, budget)

    async def _dial_direct(self, address: str, port: int, budget: float) -> CountingSocket:
        family = _literal_family(address)
        sock = CountingSocket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.vantage.source_address:
                sock.bind((self.vantage.source_address, 0))
            async with asyncio.timeout(budget):
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _dial_proxy(self, address: str, port: int, budget: float) -> CountingSocket:
        proxy = self.vantage.proxy
        assert proxy is not None
        client = SocksProxy(
            _PROXY_TYPES[proxy.kind],
            proxy.host,
            proxy.port,
            username=proxy.username,
            password=proxy.password,
            rdns=False,
            loop=asyncio.get_running_loop(),
        )
        local = (self.vantage.source_address, 0) if self.vantage.source_address else None
        sock = await client.connect(
            dest_host=address, dest_port=port, timeout=max(budget, 0.001), local_addr=local
        )
        return CountingSocket.adopt(sock)

    def doh_session(self) -> aiohttp.ClientSession:
        """The session DoH queries share (created on first use, inside the loop)."""
        import aiohttp

        if self._doh_session is None or self._doh_session.closed:
            local = (self.vantage.source_address, 0) if self.vantage.source_address else None
            connector = aiohttp.TCPConnector(ssl=self.ssl_context, local_addr=local)
            self._doh_session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._doh_session

    async def aclose(self) -> None:
        if self._doh_session is not None:
            await self._doh_session.close()
            self._doh_session = None


def _literal_family(address: str) -> socket.AddressFamily:
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


def _ssl_context(ca_file: str | None, alpn: list[str]) -> ssl.SSLContext:
    """System trust plus the configured extra anchors.

    Web connections offer only HTTP/1.1 because that is what aiohttp speaks;
    DNS-over-TLS offers "dot" (RFC 7858 names no ALPN, but RFC 9461 does).
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.set_alpn_protocols(alpn)
    return ctx
