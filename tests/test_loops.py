"""The same measurement, record for record, under asyncio's loop and under uvloop's.

The far end runs in threads of its own (blocking sockets, OpenSSL through
memory buffers), so both loops meet exactly the same peer: a normal https
server, one that resets after the request, resets or closes (FIN) after the
ClientHello, says nothing, or trickles its handshake in small pieces (what
throttling looks like), directly and through a SOCKS5 or HTTP CONNECT proxy.
Every field of the DNS, TCP, TLS and HTTP records must be the same under both
loops, times aside. The resolver is a fake on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from probes.failures import Failure
from probes.loops import LOOP_NAMES, LoopUnavailable, loop_factory, resolve
from probes.measure import measure
from probes.model import Proxy, ResolverSpec, Target, Vantage
from probes.net import VantageNet
from probes.records import Measurement
from tests.fakes import CA, LOOPBACK, PAGE, FakeDNS, server_context

HOST = "loops.lifeline.test"
#: What the trickling far end sends at a time, and how long it waits between pieces.
TRICKLE_BYTES, TRICKLE_PAUSE_S = 64, 0.005
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
    + str(len(PAGE)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + PAGE
)


def _rst(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class _Threads:
    """A listener whose every connection is handled by ``handle`` in a thread of its own."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5.0)
            self._conns.append(conn)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            self.handle(conn)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(10)
        for conn in self._conns:
            conn.close()


class FarEnd(_Threads):
    """The https server, behaving as ``mode`` says."""

    def __init__(self, mode: str, context: ssl.SSLContext) -> None:
        self.mode, self.context = mode, context
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        if self.mode in ("reset_after_hello", "fin_after_hello", "silent"):
            conn.recv(4096)  # the ClientHello
            if self.mode == "reset_after_hello":
                _rst(conn)
            elif self.mode == "fin_after_hello":
                conn.shutdown(socket.SHUT_WR)
                conn.recv(4096)  # until the client goes
            else:
                self.stop.wait(10)
            return
        piece = TRICKLE_BYTES if self.mode == "trickle" else None
        tls = _ServerTLS(conn, self.context, piece)
        tls.handshake()
        tls.read_until(b"\r\n\r\n")
        if self.mode == "reset_after_request":
            _rst(conn)
            return
        tls.send(RESPONSE)
        conn.close()


class _ServerTLS:
    """A server's TLS through memory buffers, so that its output can be trickled."""

    def __init__(self, conn: socket.socket, context: ssl.SSLContext, piece: int | None) -> None:
        self.conn, self.piece = conn, piece
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def _flush(self) -> None:
        data = self.outgoing.read()
        step = self.piece or len(data) or 1
        for i in range(0, len(data), step):
            self.conn.sendall(data[i : i + step])
            if self.piece:
                time.sleep(TRICKLE_PAUSE_S)

    def _more(self) -> None:
        data = self.conn.recv(65536)
        if not data:
            raise ConnectionResetError("the client went")
        self.incoming.write(data)

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._more()

    def read_until(self, end: bytes) -> bytes:
        got = b""
        while end not in got:
            try:
                got += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                self._more()
        return got

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()


class RelayProxy(_Threads):
    """A SOCKS5 or HTTP CONNECT proxy: the handshake, then bytes relayed both ways."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        host, port = self._socks(conn) if self.kind == "socks5" else self._connect(conn)
        with socket.create_connection((host, port), timeout=5.0) as up:
            _relay(conn, up)

    def _socks(self, conn: socket.socket) -> tuple[str, int]:
        greeting = conn.recv(2)
        conn.recv(greeting[1])
        conn.sendall(b"\x05\x00")
        head = _exactly(conn, 4)
        assert head[3] == 1, "the CONNECT names an IPv4 address"
        address = socket.inet_ntoa(_exactly(conn, 4))
        port = struct.unpack("!H", _exactly(conn, 2))[0]
        conn.sendall(b"\x05\x00\x00\x01" + bytes(6))
        return address, port

    def _connect(self, conn: socket.socket) -> tuple[str, int]:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1)
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return host, int(port)


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("short read")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Bytes both ways, in one thread; a FIN passed on as a FIN, a reset as a reset."""
    peer = {a: b, b: a}
    open_ = [a, b]
    while open_:
        ready, _, _ = select.select(open_, [], [], 5.0)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                _rst(peer[sock])
                return
            if data:
                peer[sock].sendall(data)
                continue
            open_.remove(sock)
            with contextlib.suppress(OSError):
                peer[sock].shutdown(socket.SHUT_WR)


def _timeless(value: Any) -> Any:
    """A record as plain data without what depends on the clock."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        clock = ("time", "throughput_bps")
        kept = {k: v for k, v in value.items() if not k.endswith("_s") and k not in clock}
        return {k: _timeless(v) for k, v in kept.items()}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


class ThreadDNS:
    """The fake resolver's answers, served from a thread (one port for both loops)."""

    def __init__(self) -> None:
        self.fake = FakeDNS({HOST: ["A 127.0.0.1"]})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                query, sender = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            reply = self.fake.answer(query, over_tcp=False)
            if reply is not None:
                self.sock.sendto(reply, sender)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


async def _measure(
    port: int, dns_port: int, ca_file: str, proxy: Proxy | None, budget: float
) -> Measurement:
    vantage = Vantage("v", ResolverSpec("udp", LOOPBACK, dns_port), proxy=proxy)
    net = VantageNet(vantage, ca_file=ca_file)
    try:
        target = Target.parse(f"https://{HOST}:{port}/")
        return await measure(target, vantage, net, timeout=budget, max_body_bytes=1 << 20)
    finally:
        await net.aclose()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context whose handshake is the same length every time: an Ed25519 key
    signs deterministically (an ECDSA signature's length varies by a byte or two)."""
    directory = tmp_path_factory.mktemp("loops")
    ca = CA.create(directory)
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return server_context(cert, key, directory / "leaf"), str(ca.pem_path)


@contextlib.contextmanager
def _far_end(
    mode: str, context: ssl.SSLContext, proxy_kind: str | None
) -> Iterator[tuple[int, Proxy | None]]:
    far, dns = FarEnd(mode, context), ThreadDNS()
    relay = RelayProxy(proxy_kind) if proxy_kind else None
    try:
        proxy = Proxy(proxy_kind, LOOPBACK, relay.port) if relay and proxy_kind else None
        yield far.port, dns.port, proxy
    finally:
        if relay is not None:
            relay.close()
        dns.close()
        far.close()


#: (far end, proxy, what the measurement must show under either loop)
CASES = [
    ("normal", None, ("ok", None)),
    ("reset_after_request", None, ("http", Failure.CONNECTION_RESET)),
    ("reset_after_hello", None, ("tls", Failure.CONNECTION_RESET)),
    ("fin_after_hello", None, ("tls", Failure.EOF)),
    ("silent", None, ("tls", Failure.TIMEOUT)),
    ("trickle", None, ("ok", None)),
    ("normal", "socks5", ("ok", None)),
    ("normal", "http", ("ok", None)),
    ("reset_after_hello", "http", ("tls", Failure.CONNECTION_RESET)),
]


@pytest.mark.parametrize(("mode", "proxy_kind", "expected"), CASES)
def test_the_records_are_the_same_under_asyncio_and_uvloop(
    tls_server: tuple[ssl.SSLContext, str],
    mode: str,
    proxy_kind: str | None,
    expected: tuple[str, str | None],
) -> None:
    try:
        resolve("uvloop")
    except LoopUnavailable as exc:
        pytest.skip(str(exc))
    context, ca_file = tls_server
    timeout = 1.5 if mode == "silent" else 5.0
    seen: dict[str, Measurement] = {}
    with _far_end(mode, context, proxy_kind) as (port, dns_port, proxy):
        for name in LOOP_NAMES:
            with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
                seen[name] = runner.run(_measure(port, dns_port, ca_file, proxy, timeout))
    for name, m in seen.items():
        where, failure = expected
        assert (m.first_failure() or ("ok", None)) == (where, failure), (name, mode)
        assert m.tls is not None
        # the handshake's bytes were counted (none where the ClientHello got no answer)
        assert (m.tls.bytes_received > 0) == (where in ("ok", "http")), name
    first, second = (seen[name] for name in LOOP_NAMES)
    for stage in ("dns", "tcp", "tls", "http"):
        assert _timeless(first.stages.get(stage)) == _timeless(second.stages.get(stage)), stage
    assert first.tls is not None and second.tls is not None
    if mode == "trickle":  # the whole handshake arrived, in pieces
        assert first.tls.bytes_received == second.tls.bytes_received > TRICKLE_BYTES


def test_the_loop_is_chosen_on_the_command_line() -> None:
    from exporter.cli import _build_parser

    parser = _build_parser()
    for command in (["check"], ["serve"], ["lab"], ["demo"], ["page", "--data-dir", "d"]):
        assert parser.parse_args(command).loop == "auto"
        assert parser.parse_args([*command, "--loop", "asyncio"]).loop == "asyncio"
    assert resolve("asyncio") == "asyncio"
    with pytest.raises(LoopUnavailable, match="--loop 'tokio': expected one of auto"):
        resolve("tokio")


def test_a_loop_that_is_not_installed_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from exporter.cli import main
    from probes import loops

    monkeypatch.setattr(loops, "_uvloop_factory", lambda: None)
    assert resolve("auto") == "asyncio"  # auto falls back to asyncio's loop
    config = tmp_path / "missing.yaml"  # never read: the loop is refused first
    assert main(["check", "-c", str(config), "--loop", "uvloop"]) == 2
    assert "--loop uvloop: uvloop is not installed" in capsys.readouterr().err
