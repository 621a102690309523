"""After a query's first UDP reply, keep listening: an on-path injector's forged
reply races the resolver's, so the real one arrives a little later on the same
socket (the mark of DNS injection, as OONI and Censored Planet read it).

:class:`Listening` holds the sockets the DNS stage keeps open after their first
reply, each for ``window_s`` after that reply (never past the measurement's
deadline), and collects every further reply for the same query ID from the
resolver's address. The stage's answers stay those of the first reply, as a
stub resolver's would; the later ones are evidence. :func:`injected_pair` is
the pure comparison the record and the classifier share.

Only UDP listens: over TCP, DoT and DoH one exchange carries one reply (an
injector resets or forges the stream instead), and the ``system`` resolver
shows no replies at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence

from probes import wire
from probes.deadline import Deadline
from probes.evidence import DNSAnswer, DNSQuery, DNSResponse

__all__ = ["MAX_LATER_RESPONSES", "Listening", "injected_pair", "reply_key", "reply_text"]

#: Further replies kept per query: a flood must not bloat the record.
MAX_LATER_RESPONSES = 8
_UDP_MAX_BYTES = 65_535

#: Reads one datagram as a reply to the query: its record, or None (not a reply to it).
ReadReply = Callable[[bytes, object], DNSQuery | None]


class Listening:
    """The sockets kept open after a first reply, and what arrives on them."""

    def __init__(self, window_s: float, deadline: Deadline) -> None:
        self.window_s = window_s
        self.deadline = deadline
        self._tasks: dict[str, asyncio.Task[list[DNSResponse]]] = {}

    def keep(self, qtype: str, sock: socket.socket, read: ReadReply) -> bool:
        """Listen on ``sock`` (which it then owns and closes) from now for the window.

        False (the caller keeps and closes the socket) when there is no time to listen.
        """
        first_at = time.monotonic()
        until = first_at + min(self.window_s, self.deadline.remaining())
        if until <= first_at or qtype in self._tasks:
            return False
        self._tasks[qtype] = asyncio.create_task(_listen(sock, read, first_at, until))
        return True

    @property
    def listening(self) -> bool:
        return bool(self._tasks)

    async def collect(self) -> dict[str, list[DNSResponse]]:
        """Wait for every window to end; the later replies by query type."""
        out: dict[str, list[DNSResponse]] = {}
        for qtype, task in self._tasks.items():
            with contextlib.suppress(Exception):
                out[qtype] = await task
        return out

    async def aclose(self) -> None:
        """Stop listening now (the stage was cut short); every socket is closed."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def _listen(
    sock: socket.socket, read: ReadReply, first_at: float, until: float
) -> list[DNSResponse]:
    out: list[DNSResponse] = []
    try:
        while len(out) < MAX_LATER_RESPONSES:
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    datagram, sender = await wire.recvfrom(sock, _UDP_MAX_BYTES)
            except TimeoutError:
                break
            except OSError:
                break  # an ICMP error on the socket: nothing more will come
            arrived = time.monotonic()
            record = read(datagram, sender)
            if record is not None:
                after = arrived - first_at
                out.append(DNSResponse(record.rcode, record.rcode_number, record.answers, after))
    finally:
        sock.close()
    return out


def reply_key(rcode: str | None, answers: Sequence[DNSAnswer]) -> tuple[str | None, frozenset[str]]:
    """What makes two replies the same: the rcode and the addresses (order and TTLs aside)."""
    return rcode, frozenset(a.value for a in answers if a.rtype in ("A", "AAAA"))


def injected_pair(query: DNSQuery) -> DNSResponse | None:
    """The first later reply whose answers differ from the query's first reply, else None.

    A resolver that sends the same answer twice (a retransmitted reply) is not
    an injection; a first reply whose addresses or rcode differ from a later
    one's is: the forged answer arrived first, the real one after it.
    """
    first = reply_key(query.rcode, query.answers)
    for later in query.later_responses:
        if reply_key(later.rcode, later.answers) != first:
            return later
    return None


def reply_text(rcode: str | None, answers: Sequence[DNSAnswer]) -> str:
    """A reply in a reason: its addresses, else its rcode ("NXDOMAIN") or "no address"."""
    addresses = sorted({a.value for a in answers if a.rtype in ("A", "AAAA")})
    if addresses:
        return ", ".join(addresses[:3]) + (
            f" and {len(addresses) - 3} more" if len(addresses) > 3 else ""
        )
    return "no address" if rcode in (None, "NOERROR") else rcode
