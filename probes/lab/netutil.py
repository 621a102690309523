"""Sockets for the lab: binding on loopback, tracked connections, resets, bounds.

Every lab server is built from these pieces so that the same guarantees hold
everywhere: sockets are only bound on 127.0.0.0/8; every connection handler
is tracked and cancelled on stop; every connection has a lifetime bound; a
"reset" is a real RST (SO_LINGER 0), not a polite FIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from probes.lab.safety import lab_address

__all__ = [
    "BLACKHOLE_S",
    "IDLE_S",
    "MAX_CONNECTION_S",
    "Handler",
    "Listening",
    "StreamServer",
    "bind_same_port",
    "hold",
    "reset",
]

#: A connection with no traffic for this long is closed.
IDLE_S = 30.0
#: The longest a black hole (or a stall, or a mute proxy) holds a connection.
BLACKHOLE_S = 60.0
#: No connection lives longer than this, whatever it does (a throttled 1 MiB needs ~64 s).
MAX_CONNECTION_S = 150.0
_BIND_ATTEMPTS = 20
#: How long a finished connection may take to hand its last bytes to the peer.
_FLUSH_S = 5.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listening(NamedTuple):
    """One bound socket of the lab: (address, port, proto)."""

    address: str
    port: int
    proto: str  # "tcp" | "udp"


def _bound_socket(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((lab_address(address), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_same_port(
    addresses: Sequence[str], kinds: Sequence[socket.SocketKind]
) -> list[list[socket.socket]]:
    """Bind one port, chosen by the kernel, on every address and for every kind.

    Returns ``result[k][a]``: the socket of kind ``kinds[k]`` on ``addresses[a]``.
    The port is picked once (port 0 on the first socket) and reused; when an
    address already has it taken, everything is closed and another port tried.
    """
    for _ in range(_BIND_ATTEMPTS):
        opened: list[socket.socket] = []
        try:
            first = _bound_socket(addresses[0], 0, kinds[0])
            opened.append(first)
            port = first.getsockname()[1]
            result: list[list[socket.socket]] = []
            for kind in kinds:
                row: list[socket.socket] = []
                for address in addresses:
                    if not result and not row:
                        row.append(first)
                        continue
                    sock = _bound_socket(address, port, kind)
                    opened.append(sock)
                    row.append(sock)
                result.append(row)
            return result
        except OSError as exc:
            for sock in opened:
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no common free port on {', '.join(addresses)}")


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST, as a censor's middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hold(reader: asyncio.StreamReader, seconds: float = BLACKHOLE_S) -> None:
    """Swallow whatever the peer sends, answer nothing, until it gives up or ``seconds`` pass."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass


class StreamServer:
    """A TCP server on a pre-bound socket whose connections are tracked and bounded.

    ``asyncio.Server.close()`` leaves accepted connections running (Python
    3.11); this one cancels their handlers and aborts their transports, so
    stopping the lab leaves nothing behind.
    """

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self._sock = sock
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self._sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            async with asyncio.timeout(MAX_CONNECTION_S):
                await self._handler(reader, writer)
            writer.close()  # graceful: let what was written reach the peer
            async with asyncio.timeout(_FLUSH_S):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away or a bound ran out: both are normal endings
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Our own stop: end normally, so asyncio (3.11) does not log the cancellation.
        finally:
            writer.transport.abort()  # a no-op once closed; frees it when cancelled
            self._tasks.discard(task)
            self._writers.discard(writer)

    async def close(self) -> None:
        """Stop accepting, cancel every handler, close every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        else:
            self._sock.close()
