"""The hostile corpus running: the servers of every case, the resolver, the relays.

Everything runs on 127.0.0.0/8, on ports the kernel picks. Servers stream
what they send (100 MB of headers are never held in memory here) and every
connection is bounded (:mod:`probes.lab.netutil`). :class:`HostileCorpus`
runs on the caller's loop; :class:`HostileThread` runs it in a background
thread and writes a lifeline config that measures the whole corpus.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import ssl
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probes.lab.background import BackgroundService
from probes.lab.netutil import BLACKHOLE_S, StreamServer, bind_same_port
from probes.lab.safety import is_lab_address, lab_address
from probes.model import Vantage
from probes.net import MeasuredSocket, VantageNet
from tests.hostile.cases import (
    CASES,
    DIRECT_VANTAGE,
    HOST,
    MAX_BODY_BYTES,
    PRIVATE_ADDRESS,
    PROXIED_SERVICE,
    TIMEOUT_S,
    ZONE,
    Case,
    Kind,
    available,
    case_named,
    socks_greeting,
    socks_request,
)

__all__ = ["HostileCorpus", "HostileThread", "RecordingNet", "dns_replies"]

_BOMB_BYTES = 64 * 1024 * 1024  # decompressed size of each bomb
_RECORDED = 4096  # questions and connects remembered (bounded)


# --- DNS ----------------------------------------------------------------------------

_TTL = 60


def _dns_case(name: str) -> str | None:
    """The case a question is for (by its first label), if it is a DNS case."""
    label = name.removesuffix("." + ZONE)
    return label if label.startswith("dns-") else None


def dns_replies(wire: bytes) -> list[bytes]:
    """What the hostile resolver sends for one query (possibly several datagrams)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return []
    if query.flags & dns.flags.QR or len(query.question) != 1:
        return []
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    response = dns.message.make_response(query)
    case = _dns_case(name)
    if case is None:
        address = PRIVATE_ADDRESS if name == f"intranet.{ZONE}" else HOST
        if name.endswith(ZONE) and question.rdtype == dns.rdatatype.A:
            response.answer.append(_rrset(question.name, "A", address))
        elif not name.endswith(ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return [response.to_wire()]
    return _hostile_dns(case, query, response)


def _rrset(owner: dns.name.Name, rtype: str, *values: str, rdclass: str = "IN") -> dns.rrset.RRset:
    return dns.rrset.from_text_list(owner, _TTL, rdclass, rtype, list(values))


def _hostile_dns(
    case: str, query: dns.message.Message, response: dns.message.Message
) -> list[bytes]:
    question = query.question[0]
    qname = question.name
    is_a = question.rdtype == dns.rdatatype.A
    if case == "dns-truncated":
        response.answer.append(_rrset(qname, "A", *[f"127.0.0.{i}" for i in range(1, 9)]))
        return [response.to_wire()[:-7]]
    if case == "dns-malformed":
        return [response.to_wire()[:12] + os.urandom(40)]
    if case in ("dns-wrong-id", "dns-wrong-id-only"):
        if is_a:
            response.answer.append(_rrset(qname, "A", HOST))
        right = response.to_wire()
        forged = struct.pack("!H", (query.id + 1) & 0xFFFF) + right[2:]
        forged_lie = forged.replace(socket.inet_aton(HOST), socket.inet_aton("127.0.0.99"))
        return [forged_lie] if case == "dns-wrong-id-only" else [forged_lie, right]
    if case == "dns-many-records":
        if is_a:
            response.answer.append(
                _rrset(qname, "A", *[f"127.0.{i // 250}.{i % 250 + 1}" for i in range(500)])
            )
        return [response.to_wire()]
    if case == "dns-cname-loop":
        other = dns.name.from_text(f"dns-cname-loop-b.{ZONE}")
        response.answer.append(_rrset(qname, "CNAME", other.to_text()))
        response.answer.append(_rrset(other, "CNAME", qname.to_text()))
        return [response.to_wire()]
    if case == "dns-wrong-class":
        if is_a:
            response.answer.append(_rrset(qname, "A", "chaos. 177401", rdclass="CH"))
        return [response.to_wire()]
    if case == "dns-pointer-loop":
        return [_pointer_loop(response)]
    return []


def _pointer_loop(response: dns.message.Message) -> bytes:
    """A reply whose one answer's owner name is a compression pointer to itself."""
    wire = bytearray(response.to_wire())
    wire[6:8] = struct.pack("!H", 1)  # ANCOUNT = 1
    offset = len(wire)
    wire += struct.pack("!H", 0xC000 | offset)  # the name: a pointer to this very spot
    wire += struct.pack("!HHIH", 1, 1, _TTL, 4) + socket.inet_aton(HOST)
    return bytes(wire)


class _DNSDatagrams(asyncio.DatagramProtocol):
    def __init__(self, corpus: HostileCorpus) -> None:
        self._corpus = corpus
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._corpus.note_question(data)
        for reply in dns_replies(data):
            if self._transport is not None:
                self._transport.sendto(reply, addr)


# --- certificates ------------------------------------------------------------------


def _big_chain_context(directory: Path, host: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context whose chain is ~64 KB (a leaf with ~1,800 names, the CA twice),
    and the CA (PEM) that makes it valid for ``host``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile lab CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names += [x509.DNSName(f"n{i:04d}-padding.{ZONE}") for i in range(1800)]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca_pem
    cert_path, key_path = directory / "big-chain.pem", directory / "big-chain.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, ca_pem


def _bombs() -> dict[str, bytes]:
    """Each encoding's bomb: _BOMB_BYTES of zeros, compressed once at start, in pieces."""
    piece = bytes(1024 * 1024)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    df = zlib.compressobj(9)
    gz_parts, df_parts = [], []
    for _ in range(_BOMB_BYTES // len(piece)):
        gz_parts.append(gz.compress(piece))
        df_parts.append(df.compress(piece))
    bombs = {
        "gzip": b"".join(gz_parts) + gz.flush(),
        "deflate": b"".join(df_parts) + df.flush(),
    }
    try:
        import brotli  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return bombs
    compressor = brotli.Compressor(quality=5)
    parts = [compressor.process(piece) for _ in range(_BOMB_BYTES // len(piece))]
    bombs["br"] = b"".join(parts) + compressor.finish()
    return bombs


# --- the corpus -------------------------------------------------------------------------


class HostileCorpus:
    """Every hostile server of :data:`CASES`, plus a resolver and a recording relay.

    ``questions`` are the names the resolver was asked; ``connects`` are the
    destinations the relay was asked to CONNECT to (both bounded logs).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.questions: deque[str] = deque(maxlen=_RECORDED)
        self.connects: deque[str] = deque(maxlen=_RECORDED)
        self.bombs: dict[str, bytes] = {}
        self.ca_path = self.directory / "hostile-ca.pem"
        self.big_chain_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.resolver_port = 0
        self.relay_port = 0
        self._ports: dict[str, int] = {}
        self._servers: list[StreamServer] = []
        self._udp: asyncio.DatagramTransport | None = None

    def port_of(self, case: str) -> int:
        return self._ports[case]

    def note_question(self, wire: bytes) -> None:
        with contextlib.suppress(dns.exception.DNSException):
            query = dns.message.from_wire(wire)
            for q in query.question:
                self.questions.append(q.name.to_text(omit_final_dot=True).lower())

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self.bombs = await loop.run_in_executor(None, _bombs)
        self.big_chain_context, ca_pem = await loop.run_in_executor(
            None, _big_chain_context, self.directory, case_named("tls-big-chain").host
        )
        self.ca_path.write_bytes(ca_pem)
        try:
            for case in CASES:
                if case.handler is not None and available(case):
                    self._ports[case.name] = await self._serve(_bind_case(case, self))
            self.relay_port = await self._serve(self._relay)
            (udp,), (tcp,) = bind_same_port([HOST], [socket.SOCK_DGRAM, socket.SOCK_STREAM])
            tcp.close()  # the hostile resolver answers over UDP only
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DNSDatagrams(self), sock=udp
            )
            self._udp = transport
            self.resolver_port = udp.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        while self._servers:
            await self._servers.pop().close()

    async def __aenter__(self) -> HostileCorpus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> int:
        ((sock,),) = bind_same_port([HOST], [socket.SOCK_STREAM])
        server = StreamServer(sock, handler)
        self._servers.append(server)
        await server.start()
        return server.port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A SOCKS5 relay that records every destination and refuses any outside the lab."""
        await socks_greeting(reader)
        writer.write(b"\x05\x00")
        host, port = await socks_request(reader)
        self.connects.append(host)
        if not is_lab_address(host):
            writer.write(b"\x05\x02\x00\x01" + bytes(6))  # not allowed: decided before any connect
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(lab_address(host), port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            await writer.drain()
            return
        try:
            writer.write(b"\x05\x00\x00\x01" + socket.inet_aton(HOST) + bytes(2))
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    # --- what the measurements use -------------------------------------------------

    def url(self, case: Case) -> str:
        """The target URL that measures ``case`` (the normal origin for proxy cases)."""
        if case.kind is Kind.DNS:
            return f"dns://{case.host}"
        if case.kind in (Kind.SOCKS, Kind.CONNECT):
            return self.url(case_named("normal"))
        port = self._ports[case.name]
        return f"{case.kind.value}://{case.host}:{port}" + ("" if case.kind is Kind.TLS else "/")

    def proxy_url(self, case: Case) -> str | None:
        """The proxy URL of the vantage that measures ``case`` (None: no proxy of its own)."""
        if case.kind is Kind.SOCKS:
            return f"socks5://{HOST}:{self._ports[case.name]}"
        if case.kind is Kind.CONNECT:
            return f"http://{HOST}:{self._ports[case.name]}"
        return None

    def config_document(self) -> dict[str, Any]:
        """A lifeline config measuring the whole corpus (no control: verdicts are about stages).

        The non-proxy cases are measured from :data:`DIRECT_VANTAGE`, whose TCP
        goes through the recording relay; each proxy case is a vantage of its own
        that measures :data:`PROXIED_SERVICE`.
        """
        resolver = f"{HOST}:{self.resolver_port}"
        vantages: list[dict[str, Any]] = [
            {"name": DIRECT_VANTAGE, "resolver": resolver,
             "proxy": f"socks5://{HOST}:{self.relay_port}"},
        ]  # fmt: skip
        services: list[dict[str, Any]] = []
        for case in CASES:
            if not available(case):
                continue
            proxy = self.proxy_url(case)
            if proxy is not None:
                vantages.append({"name": case.name, "resolver": resolver, "proxy": proxy})
            else:
                services.append({"name": case.name, "targets": [self.url(case)]})
        services.append({"name": PROXIED_SERVICE, "targets": [self.url(case_named("normal"))]})
        return {
            "version": 1,
            "defaults": {
                "interval": "5s",  # `serve` spreads first measurements over an interval
                "timeout": TIMEOUT_S,
                "max_body_bytes": MAX_BODY_BYTES,
                "ca_file": str(self.ca_path),
            },
            "vantages": vantages,
            "services": services,
            "storage": {"dir": str(self.directory / "data")},
        }

    def write_config(self) -> Path:
        path = self.directory / "hostile.yaml"
        path.write_text(yaml.safe_dump(self.config_document(), sort_keys=False), encoding="utf-8")
        return path


def _bind_case(case: Case, corpus: HostileCorpus) -> Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]:  # fmt: skip
    handler = case.handler
    assert handler is not None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            await handler(corpus, reader, writer)

    return serve


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    tasks = [
        asyncio.create_task(pipe(reader, up_writer)),
        asyncio.create_task(pipe(up_reader, writer)),
    ]
    try:
        async with asyncio.timeout(BLACKHOLE_S):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RecordingNet(VantageNet):
    """A vantage's network that remembers every dial and refuses any outside the lab.

    For in-process measurements of the corpus: it proves which addresses a
    measurement tried to reach, and guarantees that a bug (a redirect followed
    to 10.0.0.1, say) can never send a packet off the machine.
    """

    def __init__(self, vantage: Vantage, *, ca_file: str | None) -> None:
        super().__init__(vantage, ca_file=ca_file)
        self.dials: list[str] = []

    async def dial(self, address: str, port: int, budget: float) -> MeasuredSocket:
        self.dials.append(address)
        if not is_lab_address(address):
            raise ConnectionRefusedError(f"{address}: outside the lab (refused by RecordingNet)")
        return await super().dial(address, port, budget)


class HostileThread(BackgroundService[HostileCorpus]):
    """A :class:`HostileCorpus` on its own event loop in a background thread."""

    def __init__(self, directory: Path) -> None:
        super().__init__(HostileCorpus(directory), name="lifeline-hostile")
        self.corpus = self.service
        self.config_path = self.corpus.directory / "hostile.yaml"

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        self.corpus.write_config()
