"""The TCP stage: connect to the addresses the DNS stage found, along the vantage's path.

Each address is tried in order (at most MAX_ATTEMPTS) until one connects; every
attempt is recorded. Through a proxy the CONNECT names the IP address, never
the host name, so that the path's DNS and TCP behaviour stay separate
observations. The connected socket stays open for TLS and HTTP.
"""

from __future__ import annotations

import time

from probes.errors import StageError, mapped
from probes.evidence import DNSStage, TCPAttempt, TCPStage
from probes.failures import Failure, unknown
from probes.net import OpenConnection, StageContext

__all__ = ["MAX_ATTEMPTS", "tcp_stage"]

#: Addresses tried per measurement: enough to see "every address fails",
#: few enough that a long answer list cannot exhaust the budget.
MAX_ATTEMPTS = 4


async def tcp_stage(ctx: StageContext) -> TCPStage:
    """Connect to the first reachable address; keep the socket in ``ctx``."""
    started = time.monotonic()
    dns = ctx.measurement.record(DNSStage)
    addresses = (dns.addresses if dns is not None else [])[:MAX_ATTEMPTS]
    port = ctx.target.port
    attempts: list[TCPAttempt] = []
    for i, address in enumerate(addresses):
        attempt = await _attempt(ctx, address, port, len(addresses) - i)
        attempts.append(attempt)
        if attempt.ok:
            break
    last = attempts[-1] if attempts else None
    return TCPStage(
        ok=last is not None and last.ok,
        failure=_failure(last),
        duration_s=time.monotonic() - started,
        attempts=attempts,
        address=last.address if last is not None and last.ok else None,
        port=port,
        via_proxy=ctx.net.via_proxy,
    )


async def _attempt(ctx: StageContext, address: str, port: int, left: int) -> TCPAttempt:
    """One connect. The remaining budget is shared fairly among the addresses still
    to try, so a black-holed first address leaves time for the others."""
    started = time.monotonic()
    timeout = ctx.deadline.remaining() / max(left, 1)
    try:
        if timeout <= 0:
            raise StageError(Failure.TIMEOUT, "no time left")
        with mapped():
            sock = await ctx.net.dial(address, port, timeout)
    except StageError as exc:
        return TCPAttempt(address, port, False, exc.failure, time.monotonic() - started)
    ctx.close()
    ctx.connection = OpenConnection(address=address, port=port, sock=sock)
    return TCPAttempt(address, port, True, None, time.monotonic() - started)


def _failure(last: TCPAttempt | None) -> str | None:
    if last is None:
        return unknown("no address to connect to")  # cannot happen after a good DNS stage
    return last.failure
