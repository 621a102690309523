"""The TCP stage: connect to the addresses the DNS stage found, along the vantage's path.

Connection attempts follow Happy Eyeballs (RFC 8305 §4-5): the addresses are
interleaved by family, IPv6 first (IPv6, IPv4, IPv6, ...; at most
MAX_ATTEMPTS); a new attempt starts every CONNECTION_ATTEMPT_DELAY_S while
the earlier ones are still trying, at once when they have all failed; the
first to connect wins, and the others are cancelled and closed. So a broken
IPv6 path costs a quarter of a second, not the measurement, and a blocked
address does not wait out the timeout before the next is tried.

Every attempt is recorded (address, family, when it started after the stage
began, how long it took, how it ended), so the record shows which family
failed even when the measurement succeeded. An attempt that cannot even
leave this host (no source address of the family, a family the host has no
route for: :class:`~probes.errors.FamilyUnavailable`) is recorded as
``family_unavailable``: the vantage's own limitation, never the path's.

aiohappyeyeballs (aiohttp's) does the same race but hands back only the
winning socket: it keeps no record of the attempts, dials no proxy, and
knows nothing of a measurement's deadline, so the race is written here.

Through a proxy the CONNECT names the IP address, never the host name, so that
the path's DNS and TCP behaviour stay separate observations. The connected
socket stays open for TLS and HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from dataclasses import dataclass, field

from probes.errors import FamilyUnavailable, StageError, mapped
from probes.evidence import DNSStage, TCPAttempt, TCPStage
from probes.failures import LOCAL_FAILURES, Failure, unknown
from probes.net import MeasuredSocket, OpenConnection, StageContext

__all__ = [
    "CONNECTION_ATTEMPT_DELAY_S",
    "MAX_ATTEMPTS",
    "MAX_EVERY_ADDRESS",
    "connect_every_address",
    "eyeballs_order",
    "race_connect",
    "tcp_stage",
]

#: Addresses tried per measurement: enough to see "every address fails" on both
#: families, few enough that a long answer list cannot exhaust the budget.
MAX_ATTEMPTS = 4
#: Addresses connected to after a failure with ``connect_every_address`` (bounded:
#: an answer of hundreds must not become hundreds of sockets).
MAX_EVERY_ADDRESS = 16
#: RFC 8305 §5's recommended Connection Attempt Delay.
CONNECTION_ATTEMPT_DELAY_S = 0.25

# TCPAttempt.outcome values
CONNECTED = "connected"
FAILED = "failed"
FAMILY_UNAVAILABLE = "family_unavailable"
CANCELLED = "cancelled"  # another attempt connected first


def eyeballs_order(addresses: list[str]) -> list[str]:
    """The addresses interleaved by family, IPv6 first, each family in answer order."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    out: list[str] = []
    for i in range(max(len(v6), len(v4))):
        out += v6[i : i + 1] + v4[i : i + 1]
    return out


@functools.lru_cache(maxsize=8192)  # asked of every attempt, measurement after measurement
def _family(address: str) -> str:
    return f"ipv{ipaddress.ip_address(address).version}"


@dataclass(slots=True)
class _Attempt:
    address: str
    started: float
    task: asyncio.Task[MeasuredSocket] | None  # None for one dialled in place
    record: TCPAttempt | None = None
    sock: MeasuredSocket | None = field(default=None, repr=False)


async def tcp_stage(ctx: StageContext) -> TCPStage:
    """Race the target's addresses (Happy Eyeballs); keep the winner's socket in ``ctx``."""
    started = time.monotonic()
    dns = ctx.measurement.record(DNSStage)
    addresses = eyeballs_order(dns.addresses if dns is not None else [])[:MAX_ATTEMPTS]
    port = ctx.target.port
    race = _Race(ctx, port, started)
    winner = await race.run_to_end(addresses)
    if winner is not None:
        assert winner.sock is not None
        ctx.close()
        ctx.connection = OpenConnection(address=winner.address, port=port, sock=winner.sock)
    attempts = [a.record for a in race.attempts if a.record is not None]
    return TCPStage(
        ok=winner is not None,
        failure=None if winner is not None else _failure(race.ended),
        duration_s=time.monotonic() - started,
        attempts=attempts,
        address=winner.address if winner is not None else None,
        port=port,
        via_proxy=ctx.net.via_proxy,
        families_unavailable=race.unavailable,
    )


async def connect_every_address(ctx: StageContext, stop: frozenset[str] = frozenset()) -> None:
    """After a failed measurement: connect to every address the race left unsettled.

    The vantage option ``connect_every_address`` (docs/config.md). Each address
    of the DNS answer that no attempt of the race connected to, failed at or
    found unusable (never tried, or cancelled) is connected to once, all at
    the same time within what is left of the deadline, and closed at once;
    each result goes into ``TCPStage.every_address``. It tells "this address
    is blocked" from "every address is" (IP blocking), and where TLS or HTTP
    failed, whether the other addresses answer at all. Known injected
    addresses (``stop``) are never connected to.
    """
    tcp, dns = ctx.measurement.record(TCPStage), ctx.measurement.record(DNSStage)
    if tcp is None or dns is None or ctx.deadline.remaining() <= 0:
        return
    settled = {a.address for a in tcp.attempts if a.outcome != CANCELLED}
    wanted = [a for a in eyeballs_order(dns.addresses) if a not in settled and a not in stop]
    race = _Race(ctx, tcp.port, time.monotonic())
    for address in wanted[:MAX_EVERY_ADDRESS]:
        race._start(address)
    try:
        while race._running():
            done, _ = await asyncio.wait({a.task for a in race._running() if a.task})
            race._settle(done, keep=False)
    finally:
        await race.stop()
    tcp.every_address = [a.record for a in race.attempts if a.record is not None]
    for family, why in race.unavailable.items():
        tcp.families_unavailable.setdefault(family, why)


async def race_connect(
    ctx: StageContext, addresses: list[str], port: int
) -> tuple[MeasuredSocket, str]:
    """A connected socket by the same race (for a redirect to another host): the socket
    and its address; StageError with the race's failure when none connects."""
    race = _Race(ctx, port, time.monotonic())
    winner = await race.run_to_end(eyeballs_order(addresses)[:MAX_ATTEMPTS])
    if winner is None or winner.sock is None:
        raise StageError(_failure(race.ended) or Failure.TIMEOUT, f"cannot connect to port {port}")
    return winner.sock, winner.address


class _Race:
    """The attempts of one stage: started in order, staggered, the first to connect wins."""

    def __init__(self, ctx: StageContext, port: int, started: float) -> None:
        self.ctx, self.port, self.started = ctx, port, started
        self.attempts: list[_Attempt] = []
        self.ended: list[TCPAttempt] = []  # failed attempts in the order they ended
        self.unavailable: dict[str, str] = {}  # family -> why this vantage cannot use it

    async def run_to_end(self, addresses: list[str]) -> _Attempt | None:
        """The race, and the losers stopped whatever happens."""
        try:
            return await self.run(addresses)
        finally:
            await self.stop()

    async def run(self, addresses: list[str]) -> _Attempt | None:
        if len(addresses) == 1:  # no race: dialled in place (a task costs ~25 µs)
            return await self._run_one(addresses[0])
        waiting = list(addresses)
        while True:
            if waiting:
                self._start(waiting.pop(0))
            running = {a.task for a in self._running() if a.task is not None}
            if not running:
                return None
            # the next start is due after the delay, or at once when an attempt fails
            timeout = CONNECTION_ATTEMPT_DELAY_S if waiting else None
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            winner = self._settle(done)
            if winner is not None:
                return winner

    async def _run_one(self, address: str) -> _Attempt | None:
        attempt = _Attempt(address, time.monotonic(), None)
        self.attempts.append(attempt)
        result: MeasuredSocket | BaseException
        try:
            result = await self._dial(address, self.ctx.deadline.remaining())
        except Exception as exc:  # each library's own kind; cancellation passes (stop())
            result = exc
        return attempt if self._finish(attempt, result, keep=True) else None

    def _start(self, address: str) -> None:
        budget = self.ctx.deadline.remaining()
        task = asyncio.create_task(self._dial(address, budget))
        self.attempts.append(_Attempt(address, time.monotonic(), task))

    async def _dial(self, address: str, budget: float) -> MeasuredSocket:
        if budget <= 0:
            raise StageError(Failure.TIMEOUT, "no time left")
        with mapped():
            return await self.ctx.net.dial(address, self.port, budget)

    def _running(self) -> list[_Attempt]:
        return [a for a in self.attempts if a.record is None]

    def _settle(
        self, done: set[asyncio.Task[MeasuredSocket]], keep: bool = True
    ) -> _Attempt | None:
        """Record the attempts that ended; the first (in start order) that connected wins
        (with ``keep=False`` none does: each connected socket is closed)."""
        winner = None
        for attempt in self.attempts:
            task = attempt.task
            if task is None or task not in done or attempt.record is not None:
                continue
            result = task.exception() or task.result()
            if self._finish(attempt, result, keep=keep and winner is None):
                winner = attempt
        return winner

    def _finish(
        self, attempt: _Attempt, result: MeasuredSocket | BaseException, keep: bool
    ) -> bool:
        """Record how ``attempt`` ended; True when it connected and its socket is kept."""
        if isinstance(result, MeasuredSocket):
            attempt.record = self._record(attempt, CONNECTED, None)
            if keep:
                attempt.sock = result
                return True
            result.close()  # connected in the same instant as the winner: not needed
            return False
        if isinstance(result, StageError):
            local = isinstance(result, FamilyUnavailable) or result.failure in LOCAL_FAILURES
            if local:
                self.unavailable.setdefault(_family(attempt.address), str(result)[:200])
            outcome = FAMILY_UNAVAILABLE if local else FAILED
            attempt.record = self._record(attempt, outcome, result.failure)
        else:  # not mapped: a bug of ours, kept as text
            failure = unknown(f"{type(result).__name__}: {result}")
            attempt.record = self._record(attempt, FAILED, failure)
        self.ended.append(attempt.record)
        return False

    def _record(self, attempt: _Attempt, outcome: str, failure: str | None) -> TCPAttempt:
        now = time.monotonic()
        return TCPAttempt(
            address=attempt.address,
            port=self.port,
            ok=outcome == CONNECTED,
            failure=failure,
            duration_s=now - attempt.started,
            family=_family(attempt.address),
            started_s=attempt.started - self.started,
            outcome=outcome,
        )

    async def stop(self) -> None:
        """Cancel the attempts still running (another won, or the stage was cancelled)."""
        running = self._running()
        tasks = [a.task for a in running if a.task is not None]
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, MeasuredSocket):  # connected just before the cancel
                result.close()
        for attempt in running:  # (one dialled in place closed its own socket)
            attempt.record = self._record(attempt, CANCELLED, Failure.INTERRUPTED)


def _failure(ended: list[TCPAttempt]) -> str | None:
    """The stage's failure: the last failure of the path; a local one only if all were local."""
    if not ended:
        return unknown("no address to connect to")  # cannot happen after a good DNS stage
    path = [a for a in ended if a.outcome != FAMILY_UNAVAILABLE]
    return (path or ended)[-1].failure
