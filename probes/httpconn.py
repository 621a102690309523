"""The HTTP stage's transports: the stages' own connection taken over, or a new one.

Everything the HTTP stage (:mod:`probes.http`) knows about making a transport
is in these two functions: the TCP and TLS stages' connection given a new
protocol (:func:`adopt`, through :class:`~probes.net.OpenConnection`), and a
connection along the vantage's path, with TLS if wanted (:func:`dial`, for a
redirect to another host, through :func:`probes.wire.connect`). What each
connection receives is counted below the protocol (:mod:`probes.wire`), the
same way on any asyncio loop (uvloop too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

from probes import wire
from probes.errors import StageError, failure_of
from probes.failures import Failure
from probes.net import OpenConnection, StageContext
from probes.tcp import MAX_ATTEMPTS, race_connect

__all__ = ["Wire", "adopt", "dial"]


class Wire(Protocol):
    """What the HTTP stage uses of a transport: public calls every loop's transports
    have, plain or TLS (uvloop's TLS transport is no ``asyncio.Transport`` subclass)."""

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...


async def adopt(
    conn: OpenConnection, factory: Callable[[], asyncio.Protocol]
) -> Wire | None:
    """``conn`` as a transport owned by ``factory()``'s protocol; the taker owns it.

    A plain connection gets its transport made here; a TLS one is taken from the
    protocol that held it since the handshake, with what arrived meanwhile. None
    (and ``conn`` closed) when the server hung up in between: dial anew.
    """
    if conn.transport is None:
        transport, _ = await conn.plain(factory)
        return cast(Wire, transport)
    taken = conn.hand_over(factory)  # the caller aborts it from now on
    return None if taken is None else cast(Wire, taken[0])


async def dial(
    ctx: StageContext,
    addresses: list[str],
    port: int,
    server_name: str | None,
    factory: Callable[[], asyncio.Protocol],
) -> tuple[Wire, str]:
    """A new connection raced over ``addresses`` along the vantage's path (Happy
    Eyeballs, as the TCP stage races), TLS with SNI ``server_name`` on it when that
    is given; the transport and the address it goes to."""
    if not addresses:
        raise StageError(Failure.DNS_NO_ANSWER, "no address to connect to")
    sock, address = await race_connect(ctx, addresses[:MAX_ATTEMPTS], port)
    ssl = ctx.net.ssl_context if server_name is not None else None
    try:
        async with asyncio.timeout(ctx.deadline.remaining()):
            transport, _ = await wire.connect(sock, factory, ssl, server_name)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, Exception) and not isinstance(exc, StageError):
            raise StageError(failure_of(exc), str(exc)) from exc
        raise
    return cast(Wire, transport), address
