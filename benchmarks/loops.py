"""CPU per measurement (DNS, TCP, TLS handshake, GET) under asyncio's loop and uvloop's.

    python -m benchmarks.loops [--probes N] [--concurrency C] [--rounds R]

The far end (a TLS 1.3 web server and a UDP resolver on loopback, both
answering every request the same way) runs in a process of its own, so that
only the measuring side's CPU is counted: ``time.process_time()`` of this
process around N calls of ``probes.measure.measure`` with C in flight, once
per loop and round, alternating (asyncio, uvloop, asyncio, ...), in one run.
Nothing leaves 127.0.0.1. A few seconds in all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset

from probes.loops import LOOP_NAMES, LoopUnavailable, loop_factory, resolve
from probes.measure import measure
from probes.model import ResolverSpec, Target, Vantage
from probes.net import VantageNet

__all__ = ["main"]

HOST = "bench.lifeline.test"
BODY = b"<!doctype html><title>bench</title>" + b"x" * 1000
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + BODY
)


class _Resolver(asyncio.DatagramProtocol):
    """A: 127.0.0.1; AAAA: none."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1"))
        self.transport.sendto(reply.to_wire(), addr)


async def _page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve(directory: Path) -> None:
    """The far end: writes "web_port dns_port" to directory/ports, runs until killed."""
    from probes.lab.ca import LabCA

    ca = LabCA(directory)
    ca.write(directory / "ca.pem")
    context = ca.server_context([HOST], "bench")
    server = await asyncio.start_server(_page, "127.0.0.1", 0, ssl=context, backlog=1024)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Resolver, local_addr=("127.0.0.1", 0))
    web_port = server.sockets[0].getsockname()[1]
    dns_port = transport.get_extra_info("sockname")[1]
    (directory / "ports.tmp").write_text(f"{web_port} {dns_port}")
    os.replace(directory / "ports.tmp", directory / "ports")
    await asyncio.Event().wait()


async def _probes(web_port: int, dns_port: int, ca_file: str, count: int, in_flight: int) -> int:
    """``count`` measurements, ``in_flight`` at a time; how many succeeded."""
    vantage = Vantage("bench", ResolverSpec("udp", "127.0.0.1", dns_port))
    net = VantageNet(vantage, ca_file=ca_file)
    target = Target.parse(f"https://{HOST}:{web_port}/")
    gate = asyncio.Semaphore(in_flight)

    async def one() -> bool:
        async with gate:
            m = await measure(target, vantage, net, timeout=10, max_body_bytes=1 << 16)
            return m.succeeded

    try:
        return sum(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await net.aclose()


def _one_run(name: str, ports: tuple[int, int], ca_file: str, count: int, in_flight: int) -> float:
    """CPU ms per measurement under the loop ``name``."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        runner.run(_probes(*ports, ca_file, min(count, 50), in_flight))  # warm up
        cpu = time.process_time()
        ok = runner.run(_probes(*ports, ca_file, count, in_flight))
        spent = time.process_time() - cpu
    if ok != count:
        raise SystemExit(f"{name}: only {ok} of {count} measurements succeeded")
    return spent / count * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loops", description=__doc__)
    parser.add_argument("--probes", type=int, default=400, help="measurements per run")
    parser.add_argument("--concurrency", type=int, default=16, help="measurements in flight")
    parser.add_argument("--rounds", type=int, default=3, help="runs per loop, alternating")
    parser.add_argument(
        "--loops", default=",".join(LOOP_NAMES), help="which loops (default: asyncio,uvloop)"
    )
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(Path(args.serve)))
        return 0
    names = [n.strip() for n in args.loops.split(",") if n.strip()]
    try:
        for name in names:
            resolve(name)
    except LoopUnavailable as exc:
        raise SystemExit(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="lifeline-loops-") as tmp:
        directory = Path(tmp)
        far = subprocess.Popen([sys.executable, "-m", "benchmarks.loops", "--serve", tmp])
        try:
            while not (directory / "ports").exists():
                if far.poll() is not None:
                    raise SystemExit("the far end did not start")
                time.sleep(0.05)
            web, resolver = map(int, (directory / "ports").read_text().split())
            ca_file = str(directory / "ca.pem")
            runs: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(args.rounds):
                for name in names:
                    ms = _one_run(name, (web, resolver), ca_file, args.probes, args.concurrency)
                    runs[name].append(ms)
        finally:
            far.terminate()
            far.wait(10)
    print(
        f"CPU ms per measurement (DNS + TCP + TLS 1.3 handshake + GET), {args.probes} per run,"
        f" {args.concurrency} in flight, {args.rounds} rounds alternating"
    )
    for name, values in runs.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:8} median {statistics.median(values):.2f}  (runs: {spread})")
    if "uvloop" in runs and "asyncio" in runs:
        ratio = statistics.median(runs["uvloop"]) / statistics.median(runs["asyncio"])
        print(f"  uvloop / asyncio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
