"""Small in-process fake servers on 127.0.0.1 for the stage tests.

Each fake binds port 0, records what it saw (so tests can assert what a user
would see on the wire) and closes everything it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"

# --- DNS ------------------------------------------------------------------------

#: A rule per name: a list of answers ("A 1.2.3.4", "AAAA ::1", "CNAME x.test"),
#: or one of "nxdomain", "servfail", "refused", "silence", "truncate:<answers>",
#: "drop-aaaa:<answers>" (AAAA questions are dropped).
DNSRule = str | list[str]


@dataclass
class FakeDNS:
    """A UDP+TCP resolver on one port, answering from ``rules``."""

    rules: dict[str, DNSRule]
    port: int = 0
    udp_queries: int = 0
    tcp_queries: int = 0
    tls_port: int = 0  # DNS over TLS, when started with a server context
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _dot: asyncio.Server | None = None

    async def start_tls(self, context: ssl.SSLContext) -> FakeDNS:
        """Also answer over TLS (DoT) on another port."""
        self._dot = await asyncio.start_server(self._serve_tcp, LOOPBACK, 0, ssl=context)
        self.tls_port = self._dot.sockets[0].getsockname()[1]
        return self

    async def start(self) -> FakeDNS:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # UDP and TCP on the same port: retry if TCP's is taken
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DNSDatagram(self), local_addr=(LOOPBACK, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, LOOPBACK, port)
            except OSError:
                transport.close()
                continue
            self._udp, self.port = transport, port
            return self
        raise RuntimeError("no free port for the fake resolver")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for server in (self._tcp, self._dot):
            if server is not None:
                server.close()
                await server.wait_closed()

    def answer(self, wire: bytes, *, over_tcp: bool) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        rule = self.rules.get(name, "nxdomain")
        if isinstance(rule, str) and rule.startswith("drop-aaaa:"):  # answers A, drops AAAA
            if question.rdtype == dns.rdatatype.AAAA:
                return None
            rule = rule.removeprefix("drop-aaaa:").split(",")
        if rule == "silence":
            return None
        response = dns.message.make_response(query)
        if isinstance(rule, str) and rule.startswith("truncate:") and not over_tcp:
            response.flags |= dns.flags.TC
            return response.to_wire()
        if isinstance(rule, str) and rule.startswith("truncate:"):
            rule = rule.removeprefix("truncate:").split(",")
        if isinstance(rule, str):
            response.set_rcode(dns.rcode.from_text(rule.upper()))
            return response.to_wire()
        _add_answers(response, question.name, question.rdtype, rule)
        return response.to_wire()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            wire = await reader.readexactly(size)
            self.tcp_queries += 1
            reply = self.answer(wire, over_tcp=True)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class _DNSDatagram(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.udp_queries += 1
        reply = self.server.answer(data, over_tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def _add_answers(
    response: dns.message.Message, qname: dns.name.Name, rdtype: int, rule: list[str]
) -> None:
    """Answers of the asked type (and every CNAME, so chains can be followed)."""
    for entry in rule:
        rtype, value = entry.split(" ", 1)
        owner = qname
        if "@" in value:  # "A 1.2.3.4@alias.test": an answer owned by another name
            value, owner_text = value.split("@", 1)
            owner = dns.name.from_text(owner_text)
        wanted = dns.rdatatype.from_text(rtype)
        if wanted not in (rdtype, dns.rdatatype.CNAME):
            continue
        if wanted == dns.rdatatype.CNAME:
            value = value.rstrip(".") + "."  # absolute, as a zone file would write it
        rrset = dns.rrset.from_text(owner, 300, "IN", rtype, value)
        response.answer.append(rrset)


# --- certificates -------------------------------------------------------------


@dataclass
class CA:
    """A throwaway ECDSA certificate authority."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem_path: Path

    @classmethod
    def create(cls, directory: Path, name: str = "Lifeline Test CA") -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        pem_path = directory / f"{name.replace(' ', '_')}.pem"
        pem_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, pem_path)

    def server_context(
        self, directory: Path, names: list[str], *, expired: bool = False
    ) -> ssl.SSLContext:
        """A server context with a leaf for ``names`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
            if expired
            else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))
        )
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        stem = directory / f"leaf-{names[0]}-{x509.random_serial_number()}"
        return server_context(cert, key, stem)


def server_context(
    cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, stem: Path
) -> ssl.SSLContext:
    """An HTTP/1.1 server context for ``cert`` and its ``key``, written beside ``stem``."""
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --- HTTP ---------------------------------------------------------------------

PAGE = (
    b"<!doctype html><html><head><title>  Open &amp; Free\n  Page </title></head>"
    b"<body>" + b"hello " * 100 + b"</body></html>"
)


@dataclass
class FakeWeb:
    """An aiohttp.web origin (optionally TLS) with the routes the tests need."""

    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    requests: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeWeb:
        app = web.Application(middlewares=[self._log])
        app.router.add_get("/", self._page)
        app.router.add_get("/hop/{n}", self._hop)
        app.router.add_get("/loop", self._loop)
        app.router.add_get("/ftp", self._ftp)
        app.router.add_get("/bomb", self._bomb)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/hang", self._hang)
        app.router.add_get("/cross", self._cross)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _log(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(f"{request.host} {request.path}")
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", headers={"Server": "fake/1"})

    async def _hop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return await self._page(request)
        raise web.HTTPFound(f"/hop/{n - 1}")

    async def _loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _ftp(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://files.lifeline.test/x")

    async def _cross(self, request: web.Request) -> web.Response:
        """A redirect to another name, which the client must resolve its own way."""
        raise web.HTTPFound(f"http://other.lifeline.test:{self.port}/")

    async def _bomb(self, request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=9)
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        while True:  # until the client goes away
            await resp.write(b"x" * 1024)
            await asyncio.sleep(0.05)

    async def _hang(self, request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@dataclass
class FakeDoH:
    """DNS over HTTPS (RFC 8484 POST) in front of a FakeDNS's rules."""

    dns: FakeDNS
    ssl_context: ssl.SSLContext
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeDoH:
        app = web.Application()
        app.router.add_post("/dns-query", self._query)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0, ssl_context=self.ssl_context).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _query(self, request: web.Request) -> web.Response:
        reply = self.dns.answer(await request.read(), over_tcp=True)
        if reply is None:
            return web.Response(status=504)
        return web.Response(body=reply, content_type="application/dns-message")


# --- raw TCP behaviours ------------------------------------------------------------


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a censor's middlebox does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class RawServer:
    """Accepts, reads the first bytes (a ClientHello), then resets / closes / stalls."""

    mode: str  # "reset" | "close" | "stall"
    port: int = 0
    accepted: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted += 1
        with contextlib.suppress(ConnectionError):
            await reader.read(4096)
        if self.mode == "reset":
            reset(writer)
        elif self.mode == "close":
            writer.close()

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --- SOCKS5 ---------------------------------------------------------------------


@dataclass
class FakeSocks:
    """A minimal SOCKS5 proxy: refuse (0x05), reset, hang, or relay."""

    mode: str  # "refuse" | "reset" | "hang" | "relay"
    port: int = 0
    connects: list[tuple[str, int]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> FakeSocks:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            dest = await _socks_handshake(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()
            return
        self.connects.append(dest)
        if self.mode == "hang":
            return
        if self.mode == "reset":
            reset(writer)
            return
        if self.mode == "refuse":
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            await writer.drain()
            writer.close()
            return
        await self._relay(dest, reader, writer)

    async def _relay(
        self, dest: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*dest)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            writer.close()
            return
        self._writers.append(up_writer)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _socks_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, int]:
    """Greeting (no auth) and the CONNECT request; returns its destination."""
    _ver, n = await reader.readexactly(2)
    await reader.readexactly(n)
    writer.write(b"\x05\x00")
    _ver, _cmd, _rsv, atyp = await reader.readexactly(4)
    if atyp == 1:
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
    elif atyp == 4:
        host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
    else:
        size = (await reader.readexactly(1))[0]
        host = "name:" + (await reader.readexactly(size)).decode()
    port = struct.unpack("!H", await reader.readexactly(2))[0]
    return host, port


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])
