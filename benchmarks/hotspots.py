"""Micro-benchmarks of the hot spots the /probe profile shows, now and as proposed.

    python -m benchmarks.hotspots

Each line is the cost of one call on an ordinary (not blocked) response, as
the code is today and with the alternative measured in docs/performance.md
(several have since been applied: then both lines measure variants of the
same idea, kept as measuring sticks for the next round).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import struct
import timeit
from collections.abc import Callable
from typing import cast

from probes.fingerprints import FingerprintSet
from probes.lab.origins import page
from probes.records import HTTPStage

__all__ = ["main"]


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def _ordinary_response() -> HTTPStage:
    body = page("n1.bench.lifeline.test").decode()
    return HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.001,
        url="https://n1.bench.lifeline.test/",
        status=200,
        title="n1.bench.lifeline.test",
        body_head=body[:2048],
        headers={"server": "lifeline-bench", "content-type": "text/html; charset=utf-8"},
    )


#: Hints a person would write by hand where a pattern's literal is not one plain run.
_HAND_HINTS = {"10\\.10\\.34\\.3": ("10.10.34.3",), "\\[d0(?::0)": ("[d0:",)}


def _hints(pattern: str) -> tuple[str, ...] | None:
    """Lowered literals one of which every match contains; None when unsure (always search).

    For the measurement only: the proposal is to write each built-in
    signature's hints next to it in the table, by hand, and test them.
    """
    for marker, hints in _HAND_HINTS.items():
        if marker in pattern:
            return hints
    branches = pattern.split("|") if "(" not in pattern else [pattern]
    out = []
    for branch in branches:
        plain = re.sub(r"\\[bBsSdDwW][*+?]?|[\^$]", "\x00", branch).replace("\\", "")
        best = max(re.split(r"[\x00*+?()\[\]{}]", plain), key=len)
        if len(best) < 4:
            return None
        out.append(best.lower())
    return tuple(out)


def fingerprints() -> tuple[float, float]:
    """match_http today vs. a literal pre-check ("hint" in the lowered text) before each regex."""
    fps = FingerprintSet.build()
    http = _ordinary_response()
    sigs = [(s, _hints(s.regex.pattern)) for s in (*fps.block_pages, *fps.false_positives)]

    def proposed() -> bool:
        lowered = [t.lower() for t in (http.title, http.body_head) if t]
        for sig, hint in sigs:
            if sig.where == "body" and hint is not None:
                if not any(h in t for h in hint for t in lowered):
                    continue
            if sig.matches(http):
                return True
        return False

    assert fps.match_http(http) is None and not proposed()
    return _per_call_us(lambda: fps.match_http(http), 500), _per_call_us(proposed, 500)


def body_fingerprints() -> tuple[float, float]:
    """One ordinary page's body scan and judging: as before issue 18 (the prefilter a trie
    regex, the judge matching the head again) and now (a substring search per hint for
    a small set; the judge trusting the scan made with its own set)."""
    from probes.fingerprints import AnyOf

    fps = FingerprintSet.build()
    body = page("n1.bench.lifeline.test").decode()
    hints = {h for s in (*fps.block_pages, *fps.false_positives) if s.where == "body"
             for h in s.hints or ()}  # fmt: skip
    before = dataclasses.replace(fps, prefilter=AnyOf(hints, max_plain=0))  # always the trie

    def run(which: FingerprintSet, trust_scan: bool) -> object:
        scan = which.body_scan()
        scan.feed(body)
        scan.finish()
        http = dataclasses.replace(
            _ordinary_response(), body_head=body, body_signatures=scan.blocks,
            body_false_positives=scan.false_positives,
            body_scanned_with=scan.digest if trust_scan else None,
        )  # fmt: skip
        return which.match_http(http)

    assert run(before, False) is None and run(fps, True) is None
    return _per_call_us(lambda: run(before, False), 300), _per_call_us(lambda: run(fps, True), 300)


async def _dns_pair(port: int) -> tuple[float, float]:
    """One A query/answer through dnspython's async path vs. a plain socket on the loop."""
    import dns.asyncquery

    loop = asyncio.get_running_loop()
    n = 300

    async def dnspython_way() -> None:
        q = dns.message.make_query("n1.bench.lifeline.test", "A")
        await dns.asyncquery.udp(q, "127.0.0.1", timeout=2, port=port)

    wire = dns.message.make_query("n1.bench.lifeline.test", "A").to_wire()

    async def plain_way() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            await loop.sock_sendto(s, wire, ("127.0.0.1", port))
            reply, _ = await loop.sock_recvfrom(s, 65535)
            (qid,) = struct.unpack_from("!H", reply)
            assert qid == struct.unpack_from("!H", wire)[0]

    results = []
    for way in (dnspython_way, plain_way):
        best = float("inf")
        for _ in range(3):
            t0 = loop.time()
            for _ in range(n):
                await way()
            best = min(best, (loop.time() - t0) / n * 1e6)
        results.append(best)
    return results[0], results[1]


class _Echo(asyncio.DatagramProtocol):
    """Answers every query with itself, QR set: the cheapest possible resolver."""

    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(data[:2] + bytes([data[2] | 0x80]) + data[3:], addr)


async def dns_costs() -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        return await _dns_pair(port)
    finally:
        transport.close()


def main() -> int:
    now, proposed = fingerprints()
    print(
        f"fingerprints.match_http, ordinary page: {now:7.1f} us now, {proposed:7.1f} us "
        "with a literal pre-check per signature"
    )
    before, now = body_fingerprints()
    print(
        f"body scan + judging, ordinary 5 KB page: {before:7.1f} us before issue 18 (trie "
        f"prefilter, head matched again), {now:7.1f} us now"
    )
    now, proposed = asyncio.run(dns_costs())
    print(
        f"one UDP DNS exchange (wall, client side): {now:7.1f} us via dnspython.asyncquery, "
        f"{proposed:7.1f} us via loop.sock_sendto/sock_recvfrom"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
