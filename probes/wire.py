"""What a measurement's connection received, counted at the protocol layer, on any loop.

A :class:`Counter` sits between the TCP transport and the protocol that reads
the connection (the TLS protocol of an https target, the HTTP protocol of a
plain one). It counts the bytes the transport hands up, sees the peer's EOF
(``eof_received``) and how the connection ended (``connection_lost``), so the
count covers the TLS handshake too: a handshake read in tiny pieces over
seconds is the mark of throttling, and EOF vs. reset tells two censors apart.
Every event loop calls a protocol the same way (asyncio's and uvloop's read the
file descriptor each in their own way), so the evidence does not depend on the
loop.

The three ways the stages open a transport on a connected socket:

- :func:`plain`: protocol P on the socket (an http target's request);
- :class:`TLSOpening`: TLS on the socket, its transport parked until the HTTP
  stage takes it over (the TLS stage; :meth:`ParkedProtocol.hand_over` gives
  it to P);
- :func:`connect`: either on a freshly dialled socket, handed to P at once (a
  redirect hop), as ``loop.create_connection(P, sock=..., ssl=...)`` would.

And the waits every loop has (``add_reader``/``add_writer``) for what not every
loop offers: a datagram sent and received on a non-blocking socket
(:func:`sendto`, :func:`recvfrom`: uvloop has no ``sock_sendto`` /
``sock_recvfrom``), a connect finishing, a proxy's reply arriving.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "Counter",
    "ParkedProtocol",
    "TLSOpening",
    "connect",
    "counting",
    "plain",
    "readable",
    "recvfrom",
    "sendto",
    "writable",
]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
#: Bytes a parked connection may buffer before HTTP takes it over.
PARK_LIMIT = 65_536


class Counter(asyncio.BaseProtocol):
    """What one TCP connection received and how the peer ended it.

    ``received`` counts every byte the transport handed up (the TLS handshake's
    too); ``saw_eof`` is the peer's FIN; ``saw_reset`` a connection that ended
    with ECONNRESET. A reset is told by the errno, never by the exception's
    type: both asyncio's and uvloop's TLS protocols report an EOF during the
    handshake as a ConnectionResetError without errno.
    """

    __slots__ = ("inner", "received", "saw_eof", "saw_reset")

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner: Any = inner
        self.received = 0
        self.saw_eof = False
        self.saw_reset = False

    def ending(self) -> tuple[int, bool, bool]:
        """(bytes received, peer sent EOF, peer reset)."""
        return self.received, self.saw_eof, self.saw_reset

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def eof_received(self) -> bool | None:
        self.saw_eof = True
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
            self.saw_reset = True
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _BufferedCounter(Counter, asyncio.BufferedProtocol):
    """Over a protocol that reads into its own buffer (the TLS protocols do)."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        self.inner.buffer_updated(nbytes)


class _StreamCounter(Counter, asyncio.Protocol):
    """Over a protocol that is handed each piece as bytes."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.inner.data_received(data)


def counting(inner: asyncio.BaseProtocol) -> Counter:
    """A counter in front of ``inner``, reading the way ``inner`` reads (uvloop's TLS
    protocol reads into its own buffer without being an ``asyncio.BufferedProtocol``)."""
    if callable(getattr(inner, "buffer_updated", None)):
        return _BufferedCounter(inner)
    return _StreamCounter(inner)


class ParkedProtocol(asyncio.Protocol):
    """Holds a TLS connection between the handshake and the HTTP request.

    Anything the server sends meanwhile is kept (bounded) and handed to the
    protocol that takes over, so nothing is silently dropped.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data[: max(0, PARK_LIMIT - len(self.buffer))]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def hand_over(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        """Make ``protocol`` the owner of ``transport``, replaying what arrived meanwhile."""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.buffer:
            protocol.data_received(bytes(self.buffer))
            self.buffer.clear()


async def plain(sock: socket.socket, protocol: _P) -> tuple[asyncio.Transport, Counter]:
    """A transport on the connected ``sock`` with ``protocol`` reading it, and its counter."""
    loop = asyncio.get_running_loop()
    counter = counting(protocol)
    transport, _ = await loop.create_connection(lambda: counter, sock=sock)
    return transport, counter


class TLSOpening:
    """One TLS handshake on a connected socket, with the counter under it.

    The TLS protocol is the loop's own (uvloop's where the loop is uvloop's,
    asyncio's otherwise), with the counter between it and the TCP transport;
    the TLS transport it makes is parked (:class:`ParkedProtocol`) until the
    HTTP stage takes it over. ``counter`` tells what was received and how the
    peer ended, whether the handshake succeeded or not.
    """

    def __init__(
        self, context: ssl.SSLContext, server_name: str, handshake_timeout: float | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.parked = ParkedProtocol()
        self._waiter: asyncio.Future[None] = loop.create_future()
        tls_protocol = _tls_protocol_class(loop)(
            loop,
            self.parked,
            context,
            self._waiter,
            server_side=False,
            server_hostname=server_name,
            ssl_handshake_timeout=handshake_timeout,
        )
        self.counter = counting(tls_protocol)

    async def run(self, sock: socket.socket) -> asyncio.Transport:
        """The handshake on ``sock``; the TLS transport. Whatever ends it otherwise
        (the handshake's failure, a cancellation) closes the connection."""
        loop = asyncio.get_running_loop()
        counter = self.counter
        raw, _ = await loop.create_connection(lambda: counter, sock=sock)
        try:
            await self._waiter
        except BaseException:
            raw.abort()
            raise
        transport = self.parked.transport
        if transport is None:  # cannot happen: the handshake's end hands it over
            raw.abort()
            raise ConnectionResetError("the TLS transport was not made")
        return transport


async def connect(
    sock: socket.socket,
    factory: Callable[[], _P],
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[asyncio.Transport, _P]:
    """``factory()``'s protocol on a freshly dialled ``sock``: over TLS with ``ssl_context``
    (SNI ``server_name``), else plain; counted either way (a redirect hop's connection).

    What ``loop.create_connection(factory, sock=sock, ssl=..., server_hostname=...)``
    makes, by the same path as the TLS and HTTP stages, under any loop.
    """
    if ssl_context is None:
        protocol = factory()
        transport, _ = await plain(sock, protocol)
        return transport, protocol
    opening = TLSOpening(ssl_context, server_name or "")
    transport = await opening.run(sock)
    protocol = factory()
    opening.parked.hand_over(transport, protocol)  # type: ignore[arg-type]
    return transport, protocol


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.BaseProtocol]:
    """The TLS protocol that belongs to ``loop``: uvloop's own in a uvloop loop."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        protocol: Callable[..., asyncio.BaseProtocol] = getattr(uvloop.loop, "SSLProtocol")  # noqa: B009
        return protocol
    from asyncio import sslproto

    return sslproto.SSLProtocol


async def readable(sock: socket.socket) -> None:
    """Until the socket has something to read (or its end, or an error)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: None if ready.done() else ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def writable(sock: socket.socket) -> None:
    """Until the socket can be written to (a connecting one: done connecting, either
    way: SO_ERROR says which)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: None if ready.done() else ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def sendto(sock: socket.socket, data: bytes, address: Any) -> None:
    """One datagram out on the non-blocking ``sock`` (waiting if its buffer is full)."""
    while True:
        try:
            sock.sendto(data, address)
            return
        except (BlockingIOError, InterruptedError):
            await writable(sock)


async def recvfrom(sock: socket.socket, size: int) -> tuple[bytes, Any]:
    """The next datagram on the non-blocking ``sock`` and its sender (OSError for an
    ICMP error the socket reports)."""
    while True:
        try:
            return sock.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            await readable(sock)
