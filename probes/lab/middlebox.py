"""The censor's middlebox: a SOCKS5 proxy that blocks the way national filters do.

The censored vantage sends all its TCP through here. Per CONNECT, by
destination address, it refuses (SOCKS reply 0x05), resets (a real RST) or
black-holes; after a successful CONNECT it peeks at the client's first bytes
like a DPI box: a ClientHello is reset, stalled or throttled by SNI; a
plaintext request gets a block page, a 451 or a reset by Host. Everything
else is relayed. Upstream connections come from the "in-country" source
address, so origins see where the client is. Nothing here ever connects
outside 127.0.0.0/8 (:func:`probes.lab.safety.is_lab_address` is asked first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from enum import IntEnum

from probes.lab import clienthello
from probes.lab.netutil import BLACKHOLE_S, IDLE_S, hold, reset
from probes.lab.origins import block_page
from probes.lab.rules import Rulebook
from probes.lab.safety import is_lab_address, lab_address
from probes.lab.scenarios import Action

__all__ = ["THROTTLE_RATE", "Middlebox", "Reply", "TokenBucket", "mute_proxy"]

#: Bytes per second the throttle lets through (server to client), ~16 KiB/s.
THROTTLE_RATE = 16 * 1024
_THROTTLE_BURST = 16 * 1024
_THROTTLE_SLICE = 4096
_CHUNK = 65536
_HANDSHAKE_S = 10.0
_CONNECT_S = 5.0
_PEEK_S = 10.0
_MAX_PEEK = 16384 + 5 + 1024  # one TLS record, or a request head


class Reply(IntEnum):
    """SOCKS5 reply codes (RFC 1928 §6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_NOT_SUPPORTED = 0x08


class _Refused(Exception):
    """The SOCKS request cannot be served; carries the reply code to send."""

    def __init__(self, code: Reply) -> None:
        super().__init__(code.name)
        self.code = code


class TokenBucket:
    """Paces bytes to ``rate`` per second, allowing a ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = asyncio.get_running_loop().time()

    async def spend(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= count
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self._rate)


class _Activity:
    """When either direction of a relay last moved a byte (for the idle bound)."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


async def _read_while_active(reader: asyncio.StreamReader, activity: _Activity) -> bytes:
    """Read a chunk; give up only when neither direction moved for IDLE_S."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = activity.last + IDLE_S - loop.time()
        if remaining <= 0:
            raise TimeoutError("idle")
        try:
            async with asyncio.timeout(remaining):
                return await reader.read(_CHUNK)
        except TimeoutError:
            continue  # the other direction may have moved meanwhile: re-check


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    activity: _Activity,
    bucket: TokenBucket | None,
) -> None:
    while data := await _read_while_active(reader, activity):
        activity.touch()
        if bucket is None:
            writer.write(data)
            await writer.drain()
            continue
        for start in range(0, len(data), _THROTTLE_SLICE):
            piece = data[start : start + _THROTTLE_SLICE]
            await bucket.spend(len(piece))
            writer.write(piece)
            await writer.drain()
            activity.touch()
    if writer.can_write_eof():
        writer.write_eof()  # half-close: the other direction may still be talking


async def _relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    throttle: bool,
) -> None:
    """Copy both ways until both ends are done, one fails, or both idle for IDLE_S."""
    activity = _Activity()
    bucket = TokenBucket(THROTTLE_RATE, _THROTTLE_BURST) if throttle else None
    tasks = [
        asyncio.create_task(_pump(client[0], upstream[1], activity, None)),
        asyncio.create_task(_pump(upstream[0], client[1], activity, bucket)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds enough to decide: a whole TLS record or a whole request head."""
    if clienthello.is_tls_record(data):
        needed = clienthello.tls_record_length(data)
        return needed is not None and len(data) >= needed
    if len(data) < 3:
        return False  # cannot tell yet
    if data[:1].isalpha():
        return b"\r\n\r\n" in data
    return True  # neither TLS nor HTTP: nothing to inspect


async def _first_message(reader: asyncio.StreamReader) -> bytes:
    """What a DPI box looks at: the whole first TLS record, or an HTTP request head."""
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_PEEK_S):
            while len(data) < _MAX_PEEK and not _complete(data):
                more = await reader.read(_MAX_PEEK - len(data))
                if not more:
                    break
                data += more
    return data


def _http_response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_UNAVAILABLE = _http_response(
    "451 Unavailable For Legal Reasons",
    b"<html><head><title>451 Unavailable For Legal Reasons</title></head>"
    b"<body><h1>Unavailable For Legal Reasons</h1></body></html>\n",
)


class Middlebox:
    """The SOCKS5 censor. ``credentials`` (user, password) restricts auth; None accepts any."""

    def __init__(
        self,
        rules: Rulebook,
        source_address: str,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self._rules = rules
        self._source = lab_address(source_address)
        self._credentials = credentials

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: the SOCKS5 handshake, the CONNECT rule, then the DPI stage."""
        try:
            async with asyncio.timeout(_HANDSHAKE_S):
                if not await self._negotiate(reader, writer):
                    return
                host, port = await self._request(reader)
        except _Refused as refusal:
            await _send_reply(writer, refusal.code)
            return
        action = self._rules.connect_rule(host)
        if action is Action.REFUSE:
            await _send_reply(writer, Reply.CONNECTION_REFUSED)
        elif action is Action.RESET:
            reset(writer)
        elif action is Action.BLACKHOLE:
            await hold(reader, BLACKHOLE_S)
        else:
            await self._connect_and_inspect(reader, writer, host, port)

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Method selection (RFC 1928 §3) and, when chosen, username/password (RFC 1929)."""
        version, count = await reader.readexactly(2)
        if version != 5:
            return False
        methods = await reader.readexactly(count)
        if self._credentials is None and 0x00 in methods:
            writer.write(b"\x05\x00")
            return True
        if 0x02 not in methods:
            writer.write(b"\x05\xff")
            return False
        writer.write(b"\x05\x02")
        sub_version, user_length = await reader.readexactly(2)
        user = await reader.readexactly(user_length)
        (password_length,) = await reader.readexactly(1)
        password = await reader.readexactly(password_length)
        accepted = sub_version == 1 and (
            self._credentials is None
            or (user.decode(errors="replace"), password.decode(errors="replace"))
            == self._credentials
        )
        writer.write(b"\x01\x00" if accepted else b"\x01\x01")
        return accepted

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, int]:
        """The CONNECT request's destination, as a lab address (refused otherwise)."""
        version, command, _, address_type = await reader.readexactly(4)
        if version != 5:
            raise _Refused(Reply.GENERAL_FAILURE)
        if address_type == 0x01:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif address_type == 0x04:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif address_type == 0x03:
            (length,) = await reader.readexactly(1)
            host = self._resolve((await reader.readexactly(length)).decode(errors="replace"))
        else:
            raise _Refused(Reply.ADDRESS_NOT_SUPPORTED)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != 0x01:
            raise _Refused(Reply.COMMAND_NOT_SUPPORTED)
        if not is_lab_address(host):  # the safety rule: decided before any connect
            raise _Refused(Reply.NOT_ALLOWED)
        return lab_address(host), port

    def _resolve(self, name: str) -> str:
        """A name in a CONNECT: resolved as the censor's resolver would, never by the system."""
        answer = self._rules.censored(name)
        if answer.address is None:
            raise _Refused(Reply.HOST_UNREACHABLE)
        return answer.address

    async def _connect_and_inspect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        try:
            async with asyncio.timeout(_CONNECT_S):
                up_reader, up_writer = await asyncio.open_connection(
                    lab_address(host), port, local_addr=(self._source, 0)
                )
        except ConnectionRefusedError:
            await _send_reply(writer, Reply.CONNECTION_REFUSED)
            return
        except TimeoutError:
            await _send_reply(writer, Reply.TTL_EXPIRED)
            return
        except OSError:
            await _send_reply(writer, Reply.HOST_UNREACHABLE)
            return
        try:
            bound = up_writer.get_extra_info("sockname")
            await _send_reply(writer, Reply.SUCCEEDED, bound[0], bound[1])
            await self._inspect(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    async def _inspect(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """The DPI stage: decide on the first message, then act or relay."""
        first = await _first_message(reader)
        if not first:
            return
        throttle = False
        if clienthello.is_tls_record(first):
            action = self._rules.tls_rule(clienthello.sni(first))
            if action is Action.RESET:
                reset(writer)
                return
            if action is Action.STALL:
                up_writer.transport.abort()
                await hold(reader, BLACKHOLE_S)
                return
            throttle = action is Action.THROTTLE
        else:
            action = self._rules.http_rule(clienthello.http_host(first))
            if action is Action.RESET:
                reset(writer)
                return
            if action in (Action.BLOCKPAGE, Action.UNAVAILABLE):
                blocked = action is Action.BLOCKPAGE
                writer.write(_http_response("200 OK", block_page()) if blocked else _UNAVAILABLE)
                await writer.drain()
                return
        up_writer.write(first)
        await up_writer.drain()
        await _relay((reader, writer), (up_reader, up_writer), throttle=throttle)


async def _send_reply(
    writer: asyncio.StreamWriter, code: Reply, address: str = "0.0.0.0", port: int = 0
) -> None:
    packed = socket.inet_aton(address) if is_lab_address(address) else bytes(4)
    writer.write(bytes([5, code, 0, 1]) + packed + struct.pack("!H", port))
    await writer.drain()


async def mute_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The shutdown vantage's proxy: it accepts the connection and never says a word."""
    await hold(reader, BLACKHOLE_S)
