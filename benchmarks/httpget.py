"""Micro-benchmark: the cost of one measured GET, lifeline's HTTP/1.1 client vs aiohttp's.

    python -m benchmarks.httpget [--gets 400] [--rounds 5]

Both sides GET the same page (a 4 KiB HTML body with Content-Length, the
server's answer prepared once) from one loopback server in this process, on a
new connection per GET as the HTTP stage does: aiohttp with a session and a
connector per GET (as ``probes/http.py`` used it until round 6), and
:class:`probes.http1.ResponseReader` on a transport made by the loop. Rounds
alternate between the two; each figure is the median over rounds of CPU time
(both ends, this process) and wall time per GET. The connect is in both.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from probes.http import request_headers
from probes.http1 import ResponseReader, decoder_for, request_bytes

__all__ = ["main"]

_BODY = b"<html><head><title>bench</title></head><body>" + b"x" * 4000 + b"</body></html>"
_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nServer: bench\r\n"
    + b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)  # fmt: skip


class _Origin(asyncio.Protocol):
    """Answers the first request head with the prepared page, then closes."""

    def __init__(self) -> None:
        self._seen = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._seen += data
        if b"\r\n\r\n" in self._seen and self._transport is not None:
            self._transport.write(_ANSWER)
            self._transport.close()
            self._transport = None


async def _aiohttp_get(url: str) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(use_dns_cache=False)
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, headers=request_headers()
    ) as session:
        async with session.get(url, allow_redirects=False) as resp:
            n = 0
            while chunk := await resp.content.readany():
                n += len(chunk)
            return n


async def _lean_get(port: int) -> int:
    loop = asyncio.get_running_loop()
    reader = ResponseReader()
    transport, _ = await loop.create_connection(lambda: reader, "127.0.0.1", port)
    try:
        transport.write(request_bytes("/", f"127.0.0.1:{port}", request_headers()))
        head = await reader.head()
        decoder = decoder_for(head)
        n = 0
        while chunk := await reader.read():
            n += len(decoder.feed(chunk, 1 << 20))
        return n
    finally:
        transport.abort()


async def _round(get: Callable[[], Awaitable[int]], gets: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(gets):
        assert await get() == len(_BODY)
    return (time.process_time() - cpu) / gets * 1e3, (time.perf_counter() - wall) / gets * 1e3


async def measure(gets: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (median CPU ms, median wall ms) per GET."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Origin, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    ways: dict[str, Callable[[], Awaitable[int]]] = {
        "aiohttp client (session + connector per GET)": lambda: _aiohttp_get(url),
        "probes.http1 (ResponseReader on a loop transport)": lambda: _lean_get(port),
    }
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for get in ways.values():  # warm both up
            await _round(get, 20)
        for _ in range(rounds):
            for name, get in ways.items():
                seen[name].append(await _round(get, gets))
    finally:
        server.close()
        await server.wait_closed()
    return {
        name: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
        for name, runs in seen.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=400, help="GETs per round (default 400)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args(argv)
    if args.gets < 1 or args.rounds < 1:
        parser.error("--gets and --rounds must be at least 1")
    results = asyncio.run(measure(args.gets, args.rounds))
    for name, (cpu, wall) in results.items():
        print(f"{name:52s} {cpu:6.3f} ms CPU  {wall:6.3f} ms wall per GET (both ends)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
