"""The benchmark's far end: many HTTPS origins and one resolver, all on 127.0.0.0/8.

A *plan* names the targets: ``n<i>.bench.lifeline.test``, several names per
loopback address (127.1.x.y), each address with its own HTTPS port and its
own certificate (from the lab CA) for the names it serves. A few names fail
on purpose, so that agreement between exporters covers failures too: some
do not exist (NXDOMAIN), some resolve to an address where a socket is bound
but nothing listens (connection refused).

The farm runs in its own process (``python -m benchmarks.farm DIR COUNT
PER_ADDRESS [ORIGIN [WORKERS]]``) so that its CPU is not charged to the
exporter under test. The far end should cost as little as possible, since
both exporters share the machine with it. Its origins are one of:

- ``nginx`` (:mod:`benchmarks.nginx`): the farm writes each address's
  certificate and an ``nginx.conf`` for the plan, lets go of the origins'
  sockets and leaves serving them to one nginx process, which the runner
  starts (:mod:`benchmarks.farend`);
- ``python``: a raw asyncio protocol in the farm process itself (not aiohttp).

It prints one JSON line (``{"ready": true, ...}``) once its own sockets listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import nginx
from probes.lab.ca import LabCA
from probes.lab.dnsserver import DNSServer
from probes.lab.origins import page
from probes.lab.rules import DNSReply
from probes.lab.safety import lab_address

__all__ = ["ORIGINS", "Name", "Plan", "make_plan", "run_farm"]

ZONE = "bench.lifeline.test"
RESOLVER_ADDRESS = "127.0.0.53"
#: Every n-th name is made to fail, alternately NXDOMAIN and refused.
FAIL_EVERY = 20
_MAX_REQUEST = 16_384
#: What can serve the origins (see the module's docstring).
ORIGINS = ("nginx", "python")


@dataclass(frozen=True, slots=True)
class Name:
    """One target name: where it points and what should happen."""

    name: str
    address: str  # the address its URL goes to (for NXDOMAIN names: a dead one)
    port: int
    exists: bool  # False: the resolver answers NXDOMAIN
    listening: bool  # False: nothing listens at (address, port)

    @property
    def url(self) -> str:
        return f"https://{self.name}:{self.port}/"

    @property
    def ip_url(self) -> str:
        return f"https://{self.address}:{self.port}/"

    @property
    def should_succeed(self) -> bool:
        return self.exists and self.listening


@dataclass(slots=True)
class Plan:
    """Every name of a run, the resolver's port, the CA that signs the origins."""

    names: list[Name]
    resolver_port: int
    ca_file: str

    @property
    def resolver(self) -> str:
        return f"{RESOLVER_ADDRESS}:{self.resolver_port}"

    def dump(self, path: Path) -> None:
        doc = {
            "names": [asdict(n) for n in self.names],
            "resolver_port": self.resolver_port,
            "ca_file": self.ca_file,
        }
        path.write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: Path) -> Plan:
        doc = json.loads(path.read_text())
        return cls([Name(**n) for n in doc["names"]], doc["resolver_port"], doc["ca_file"])


def _address(i: int) -> str:
    """The i-th origin address: 127.1.0.1, 127.1.0.2, … (never .0 or .255)."""
    return f"127.{1 + i // 64516}.{(i // 254) % 254 + 1}.{i % 254 + 1}"


def make_plan(count: int, per_address: int, directory: Path) -> tuple[Plan, list[socket.socket]]:
    """Bind the sockets of ``count`` names, ``per_address`` names per address.

    Returns the plan and the bound sockets (listening ones first, in address
    order, then the non-listening "refused" ones), which the farm takes over.
    """
    sockets: list[socket.socket] = []
    names: list[Name] = []
    dead = _bind(_address(60000))  # bound, never listening: connection refused
    dead_port = dead.getsockname()[1]
    n_addresses = -(-count // per_address)
    ports: list[int] = []
    for a in range(n_addresses):
        sock = _bind(_address(a))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for i in range(count):
        a = i // per_address
        name = f"n{i}.{ZONE}"
        fail = i % FAIL_EVERY == FAIL_EVERY - 1
        kind = (i // FAIL_EVERY) % 2 if fail else -1
        if kind == 0:  # NXDOMAIN; its IP URL goes to the dead socket
            names.append(Name(name, _address(60000), dead_port, False, True))
        elif kind == 1:  # resolves, but nothing listens there
            names.append(Name(name, _address(60000), dead_port, True, False))
        else:
            names.append(Name(name, _address(a), ports[a], True, True))
    resolver = _bind(RESOLVER_ADDRESS, kind=socket.SOCK_DGRAM)
    sockets.append(dead)
    sockets.append(resolver)
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = str(directory / "ca.pem")
    return Plan(names, resolver.getsockname()[1], ca_file), sockets


def _bind(address: str, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((lab_address(address), 0))
    except BaseException:
        sock.close()
        raise
    return sock


# --- the farm process --------------------------------------------------------------


class _Origin(asyncio.Protocol):
    """Reads one request head, answers one fixed page, closes (Connection: close)."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._head = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._head += data
        if self._transport is None:
            return
        if b"\r\n\r\n" in self._head or len(self._head) > _MAX_REQUEST:
            self._transport.write(self._response)
            self._transport.close()
            self._transport = None


def _response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nServer: lifeline-bench\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _policy(plan: Plan) -> dict[str, DNSReply]:
    return {
        n.name: DNSReply(address=n.address) if n.exists else DNSReply(rcode="NXDOMAIN")
        for n in plan.names
    }


def _by_port(plan: Plan) -> dict[int, list[str]]:
    """The names each listening port serves (the failing names are on no origin)."""
    by_port: dict[int, list[str]] = {}
    for n in plan.names:
        if n.should_succeed:
            by_port.setdefault(n.port, []).append(n.name)
    return by_port


def _nginx_origins(
    ca: LabCA, plan: Plan, sockets: list[socket.socket], directory: Path, workers: int
) -> Path:
    """Certificates and nginx.conf for the origins; their sockets are closed for nginx to bind.

    (The farm bound them to choose free ports; nginx binds the same address and
    port a moment later. Nothing else binds 127.1.x.y.)
    """
    by_port = _by_port(plan)
    certs = directory / "certs"
    certs.mkdir(mode=0o700, exist_ok=True)
    origins: list[nginx.Origin] = []
    for sock in sockets[:-2]:
        address, port = sock.getsockname()[:2]
        names = by_port.get(port)
        sock.close()
        if not names:
            continue
        cert_pem, key_pem = ca.issue(names)
        cert, key = certs / f"{address}.pem", certs / f"{address}.key"
        cert.write_bytes(cert_pem)
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key_pem)
        origins.append(nginx.Origin(address, port, cert, key))
    return nginx.write_config(directory / "nginx", origins, page(ZONE), workers=workers)


async def run_farm(
    plan: Plan,
    sockets: list[socket.socket],
    directory: Path,
    origin: str = "python",
    nginx_workers: int = nginx.WORKERS,
) -> None:
    """Serve until SIGTERM: DNS on the UDP socket; HTTPS on the others, or nginx.conf for them."""
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r}: one of {', '.join(ORIGINS)}")
    ca = LabCA(directory)
    ca.write(Path(plan.ca_file))
    loop = asyncio.get_running_loop()
    by_port = _by_port(plan)
    response = _response(page(ZONE))
    servers: list[asyncio.Server] = []
    answers = _policy(plan)
    nx = DNSReply(rcode="NXDOMAIN")
    tcp_dns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_dns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp_dns.bind((RESOLVER_ADDRESS, plan.resolver_port))
    udp_dns = sockets[-1]
    resolver = DNSServer(
        udp_dns, tcp_dns, lambda name: answers.get(name.lower(), nx), fixed=True
    )
    ready: dict[str, object] = {"ready": True, "origin": origin}
    try:
        if origin == "nginx":
            conf = _nginx_origins(ca, plan, sockets, directory, nginx_workers)
            ready["nginx_conf"] = str(conf)
            ready["origins"] = len(by_port)
        else:
            for sock in sockets[:-2]:
                names = by_port.get(sock.getsockname()[1])
                if not names:
                    continue
                context = ca.server_context(names, sock.getsockname()[0])
                servers.append(
                    await loop.create_server(
                        lambda: _Origin(response), sock=sock, ssl=context, backlog=nginx.BACKLOG
                    )
                )
            ready["origins"] = len(servers)
        await resolver.start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print(json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await resolver.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _farm_main(argv: list[str]) -> int:
    """``python -m benchmarks.farm DIR COUNT PER_ADDRESS [ORIGIN [WORKERS]]``.

    Bind, write DIR/plan.json, serve. ORIGIN is ``python`` (the default) or
    ``nginx``; WORKERS is nginx's (0: one process).
    """
    directory, count, per_address = Path(argv[0]), int(argv[1]), int(argv[2])
    origin = argv[3] if len(argv) > 3 else "python"
    workers = int(argv[4]) if len(argv) > 4 else nginx.WORKERS
    if origin not in ORIGINS:
        print(f"benchmarks.farm: origin {origin!r}: one of {', '.join(ORIGINS)}", file=sys.stderr)
        return 2
    plan, sockets = make_plan(count, per_address, directory)
    plan.dump(directory / "plan.json")
    asyncio.run(run_farm(plan, sockets, directory, origin, workers))
    return 0


if __name__ == "__main__":
    sys.exit(_farm_main(sys.argv[1:]))
