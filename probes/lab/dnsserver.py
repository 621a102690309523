"""The lab's resolvers: honest, censoring, or mute, over UDP and TCP.

The policy is a function ``name -> DNSReply`` (see :mod:`probes.lab.rules`);
:func:`answer` turns a query's wire bytes into the reply's wire bytes (or
None for silence) and is I/O-free. :class:`DNSServer` is the thin driver: a
UDP endpoint and a TCP server (RFC 1035 two-byte length framing) on one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from probes.lab.netutil import IDLE_S, StreamServer
from probes.lab.rules import DNSReply

__all__ = ["DNSServer", "Policy", "answer"]

Policy = Callable[[str], DNSReply]

_TTL = 60
_RCODES = {
    "NOERROR": dns.rcode.NOERROR,
    "NXDOMAIN": dns.rcode.NXDOMAIN,
    "SERVFAIL": dns.rcode.SERVFAIL,
}


def answer(wire: bytes, policy: Policy) -> bytes | None:
    """The reply to one query, or None to stay silent (also for garbage)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None  # a response, not a query: never answer those (no loops)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        response.set_rcode(
            dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR
        )
        return response.to_wire()
    question = query.question[0]
    reply = policy(question.name.to_text(omit_final_dot=True))
    if reply.silent:
        return None
    response.set_rcode(_RCODES[reply.rcode])
    if reply.address is not None and question.rdtype == dns.rdatatype.A:
        response.answer.append(
            dns.rrset.from_text(
                question.name, _TTL, dns.rdataclass.IN, dns.rdatatype.A, reply.address
            )
        )
    # AAAA and other types of a name that exists: an empty NOERROR answer.
    return response.to_wire()


#: Replies a fixed-policy resolver remembers (a benchmark's names times two types).
MAX_REMEMBERED = 200_000


class _UDPResolver(asyncio.DatagramProtocol):
    def __init__(self, policy: Policy, remember: bool = False) -> None:
        self._policy = policy
        self._transport: asyncio.DatagramTransport | None = None
        # query bytes after the ID -> reply bytes after the ID (a fixed policy only)
        self._memo: dict[bytes, bytes] | None = {} if remember else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self._transport is None:
            return
        memo = self._memo
        if memo is not None and len(data) > 2:
            known = memo.get(data[2:])
            if known is not None:
                self._transport.sendto(data[:2] + known, addr)
                return
        reply = answer(data, self._policy)
        if reply is None:
            return
        if memo is not None and len(data) > 2 and len(memo) < MAX_REMEMBERED:
            memo[data[2:]] = reply[2:]
        self._transport.sendto(reply, addr)


class DNSServer:
    """One resolver: UDP and TCP on the same (pre-bound) port.

    ``fixed``: the policy never changes its answer for a name (a benchmark's
    plan, not the lab's rules, which flip), so each UDP reply is made once and
    replayed with the next query's ID: the far end should cost as little as a
    caching resolver does.
    """

    def __init__(
        self, udp: socket.socket, tcp: socket.socket, policy: Policy, *, fixed: bool = False
    ) -> None:
        self._udp_sock = udp
        self._policy = policy
        self._fixed = fixed
        self._tcp = StreamServer(tcp, self._serve_tcp)
        self._udp: asyncio.DatagramTransport | None = None
        self.address, self.port = udp.getsockname()[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UDPResolver(self._policy, self._fixed), sock=self._udp_sock
        )
        self._udp = transport
        await self._tcp.start()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Queries on one connection, each framed by its length; silence means no reply."""
        while True:
            try:
                async with asyncio.timeout(IDLE_S):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            reply = answer(wire, self._policy)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        else:
            with contextlib.suppress(OSError):
                self._udp_sock.close()
        await self._tcp.close()
