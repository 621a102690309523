"""``lifeline lab --selftest``: check every lab rule with raw clients.

Independent of lifeline's own probes on purpose: dnspython queries straight
to each resolver, hand-written SOCKS5 handshakes, TLS handshakes with the
``ssl`` module trusting only the lab CA, hand-written HTTP/1.1 requests, and
a throughput measurement of the throttled asset against an unthrottled one.
Expectations come from the catalogue; observations from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
from aiohttp import ClientSession, ClientTimeout

from probes.lab.lab import Lab
from probes.lab.middlebox import THROTTLE_RATE
from probes.lab.safety import lab_address
from probes.lab.scenarios import (
    BLOCKPAGE_ADDRESS,
    CATALOGUE,
    IMPOSTOR_ADDRESS,
    REPLICA_ADDRESS,
    SOURCE_ADDRESS,
    Action,
    Layer,
    Origin,
    Scenario,
    host_name,
    origin_addresses,
    scenario,
)

__all__ = ["run_selftest"]

_QUICK_S = 5.0  # what a working server must answer within
_SILENT_S = 1.5  # how long we wait to call something silent
_WINDOW_S = 3.0  # the throttled download's measuring window
_CHECK_S = 30.0
_PARALLEL = 12
_ASSET_SIZE = 1 << 20
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class CheckFailed(Exception):
    """A lab rule did not do what the catalogue says."""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes

    @property
    def title(self) -> str:
        found = _TITLE.search(self.body)
        return found.group(1).decode(errors="replace").strip() if found else ""


def _expect(condition: bool, detail: str) -> None:
    if not condition:
        raise CheckFailed(detail)


# --- raw clients -----------------------------------------------------------------


async def _query(
    port: int, name: str, rdtype: str = "A", *, tcp: bool = False, wait_s: float = _QUICK_S
) -> dns.message.Message | None:
    """One question to a lab resolver; None when it stays silent."""
    query = dns.message.make_query(name, rdtype)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    try:
        return await send(query, "127.0.0.1", port=port, timeout=wait_s)
    except dns.exception.Timeout:
        return None


def _addresses(message: dns.message.Message) -> list[str]:
    return [
        item.address
        for rrset in message.answer
        for item in rrset
        if rrset.rdtype == dns.rdatatype.A
    ]


@contextlib.asynccontextmanager
async def _open(
    host: str, port: int, *, source: str | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to a lab address, always aborted at the end."""
    local = (lab_address(source), 0) if source else None
    async with asyncio.timeout(_QUICK_S):
        reader, writer = await asyncio.open_connection(lab_address(host), port, local_addr=local)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def _socks(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    credentials: tuple[str, str] | None = None,
) -> int:
    """A SOCKS5 CONNECT by IPv4 address (RFC 1928); returns the reply code."""
    writer.write(b"\x05\x01\x02" if credentials else b"\x05\x01\x00")
    method = await reader.readexactly(2)
    if credentials:
        _expect(method == b"\x05\x02", f"proxy chose method {method.hex()}, not 02")
        user, password = (part.encode() for part in credentials)
        writer.write(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        _expect(await reader.readexactly(2) == b"\x01\x00", "credentials refused")
    else:
        _expect(method == b"\x05\x00", f"proxy chose method {method.hex()}, not 00")
    destination = socket.inet_aton(lab_address(host)) + struct.pack("!H", port)
    writer.write(b"\x05\x01\x00\x01" + destination)
    head = await reader.readexactly(4)
    await reader.readexactly(4 + 2)  # BND.ADDR (IPv4) and BND.PORT
    return head[1]


async def _tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, name: str, wait_s: float = _QUICK_S
) -> None:
    async with asyncio.timeout(wait_s):
        await writer.start_tls(context, server_hostname=name)


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str = "/"
) -> _Response:
    """A plain HTTP/1.1 GET on an open connection; reads to EOF (Connection: close)."""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lab-selftest\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    async with asyncio.timeout(_QUICK_S * 2):
        raw = await reader.read(-1)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    _expect(len(status_line) >= 2 and status_line[1].isdigit(), f"no HTTP response: {raw[:60]!r}")
    return _Response(int(status_line[1]), body)


async def _expect_silence(awaitable: Awaitable[object], what: str) -> str:
    try:
        async with asyncio.timeout(_SILENT_S):
            result = await awaitable
    except TimeoutError:
        return f"no answer within {_SILENT_S}s"
    raise CheckFailed(f"{what} answered: {result!r}")


async def _expect_reset(awaitable: Awaitable[object], what: str) -> str:
    try:
        async with asyncio.timeout(_QUICK_S):
            result = await awaitable
    except ConnectionResetError:
        return "connection reset"
    raise CheckFailed(f"{what} was not reset: {result!r}")


# --- the checks ------------------------------------------------------------------


Check = tuple[str, Callable[[], Awaitable[str]]]


class _Selftest:
    def __init__(self, lab: Lab) -> None:
        assert lab.endpoints is not None and lab.ca is not None
        self.ports = lab.endpoints
        self.trust = lab.ca.client_context()
        self.admin_url = lab.admin_url
        self.origins = origin_addresses()

    # DNS ------------------------------------------------------------------------

    def dns_checks(self) -> list[Check]:
        checks: list[Check] = []
        for entry in CATALOGUE:
            checks.append((f"honest resolver: {host_name(entry)}", self._honest(entry)))
            censored = dict(entry.rules).get(Layer.DNS)
            if censored is not None:
                checks.append(
                    (
                        f"censor resolver {censored}: {host_name(entry)}",
                        self._censored(entry, censored),
                    )
                )
        checks += [
            ("honest resolver over TCP: open", self._honest_tcp),
            ("honest resolver: AAAA is an empty NOERROR", self._empty_aaaa),
            ("honest resolver: unknown name is NXDOMAIN", self._unknown),
            ("censor resolver: untouched names answered honestly", self._censor_open),
            ("censor resolver silence over TCP", self._silence_tcp),
            ("shutdown resolver: silent over UDP", self._mute_udp),
            ("shutdown resolver: silent over TCP", self._mute_tcp),
        ]
        return checks

    def _honest(self, entry: Scenario) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            reply = await _query(self.ports.honest_resolver, host_name(entry))
            _expect(reply is not None, "no answer")
            assert reply is not None
            if entry.origin is Origin.NONE:
                _expect(reply.rcode() == dns.rcode.NXDOMAIN, f"rcode {reply.rcode()}")
                return "NXDOMAIN"
            _expect(_addresses(reply) == [self.origins[entry.name]], f"{_addresses(reply)}")
            return self.origins[entry.name]

        return check

    def _censored(self, entry: Scenario, action: Action) -> Callable[[], Awaitable[str]]:
        wanted = {
            Action.LIE: IMPOSTOR_ADDRESS,
            Action.INJECT: BLOCKPAGE_ADDRESS,
            Action.REPLICA: REPLICA_ADDRESS,
        }

        async def check() -> str:
            port = self.ports.censor_resolver
            if action is Action.SILENCE:
                return await _expect_silence(
                    _query(port, host_name(entry), wait_s=10), "the censor"
                )
            reply = await _query(port, host_name(entry))
            _expect(reply is not None, "no answer")
            assert reply is not None
            if action in wanted:
                _expect(_addresses(reply) == [wanted[action]], f"answered {_addresses(reply)}")
                return wanted[action]
            rcode = dns.rcode.NXDOMAIN if action is Action.NXDOMAIN else dns.rcode.SERVFAIL
            _expect(reply.rcode() == rcode, f"rcode {dns.rcode.to_text(reply.rcode())}")
            return dns.rcode.to_text(rcode)

        return check

    async def _honest_tcp(self) -> str:
        reply = await _query(self.ports.honest_resolver, "open.lifeline.test", tcp=True)
        _expect(reply is not None and _addresses(reply) == [self.origins["open"]], f"{reply}")
        return self.origins["open"]

    async def _empty_aaaa(self) -> str:
        reply = await _query(self.ports.honest_resolver, "open.lifeline.test", "AAAA")
        _expect(
            reply is not None and reply.rcode() == dns.rcode.NOERROR and not reply.answer,
            f"{reply}",
        )
        return "NOERROR, no records"

    async def _unknown(self) -> str:
        reply = await _query(self.ports.honest_resolver, "nothing.example")
        _expect(reply is not None and reply.rcode() == dns.rcode.NXDOMAIN, f"{reply}")
        return "NXDOMAIN"

    async def _censor_open(self) -> str:
        reply = await _query(self.ports.censor_resolver, "open.lifeline.test")
        _expect(reply is not None and _addresses(reply) == [self.origins["open"]], f"{reply}")
        return self.origins["open"]

    async def _silence_tcp(self) -> str:
        return await _expect_silence(
            _query(self.ports.censor_resolver, "dns-silence.lifeline.test", tcp=True, wait_s=10),
            "the censor",
        )

    async def _mute_udp(self) -> str:
        return await _expect_silence(
            _query(self.ports.mute_resolver, "canary.lifeline.test", wait_s=10), "it"
        )

    async def _mute_tcp(self) -> str:
        return await _expect_silence(
            _query(self.ports.mute_resolver, "canary.lifeline.test", tcp=True, wait_s=10), "it"
        )

    # origins (the control's view) -------------------------------------------------

    def origin_checks(self) -> list[Check]:
        checks: list[Check] = []
        for entry in CATALOGUE:
            if entry.origin in (Origin.NORMAL, Origin.GEO):
                checks.append((f"origin https: {host_name(entry)}", self._origin(entry, True)))
                checks.append((f"origin http: {host_name(entry)}", self._origin(entry, False)))
        checks += [
            ("origin geo: a 403 page for the in-country address", self._geo_direct),
            ("origin cdn replica: valid certificate, same content", self._replica),
            ("origin impostor: certificate for another name", self._impostor_tls),
            ("origin impostor: another page", self._impostor_page),
            ("block-page server at 127.0.0.66", self._blockpage_server),
            ("down-nolisten: nothing listens", self._nolisten),
        ]
        return checks

    async def _fetch(
        self, address: str, name: str, *, tls: bool, path: str = "/", source: str | None = None
    ) -> _Response:
        port = self.ports.https_port if tls else self.ports.http_port
        async with _open(address, port, source=source) as (reader, writer):
            if tls:
                await _tls(writer, self.trust, name)
            return await _get(reader, writer, name, path)

    def _origin(self, entry: Scenario, tls: bool) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            response = await self._fetch(self.origins[entry.name], host_name(entry), tls=tls)
            _expect(response.status == 200, f"status {response.status}")
            _expect(entry.name in response.title, f"title {response.title!r}")
            _expect(len(response.body) > 2048, f"only {len(response.body)} bytes")
            return f"200, {response.title!r}, {len(response.body)} bytes"

        return check

    async def _geo_direct(self) -> str:
        name, address = "geo.lifeline.test", self.origins["geo"]
        response = await self._fetch(address, name, tls=True, source=SOURCE_ADDRESS)
        _expect(
            response.status == 403 and "geo" not in response.title,
            f"{response.status} {response.title!r}",
        )
        return f"403, {response.title!r}"

    async def _replica(self) -> str:
        name = "cdn.lifeline.test"
        primary = await self._fetch(self.origins["cdn"], name, tls=True)
        replica = await self._fetch(REPLICA_ADDRESS, name, tls=True)
        _expect(replica.status == 200 and replica.body == primary.body, "content differs")
        return f"{len(replica.body)} identical bytes"

    async def _impostor_tls(self) -> str:
        try:
            await self._fetch(IMPOSTOR_ADDRESS, "dns-lie.lifeline.test", tls=True)
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message
        raise CheckFailed("the impostor's certificate was accepted for dns-lie")

    async def _impostor_page(self) -> str:
        real = await self._fetch(self.origins["dns-lie"], "dns-lie.lifeline.test", tls=False)
        fake = await self._fetch(IMPOSTOR_ADDRESS, "dns-lie.lifeline.test", tls=False)
        _expect(fake.title != real.title and len(fake.body) != len(real.body), "same page")
        return f"{fake.title!r}, {len(fake.body)} bytes"

    async def _blockpage_server(self) -> str:
        page = await self._fetch(BLOCKPAGE_ADDRESS, "dns-injected.lifeline.test", tls=False)
        _expect(b"10.10.34.34" in page.body and b"peyvandha.ir" in page.body, "no fingerprint")
        async with _open(BLOCKPAGE_ADDRESS, self.ports.https_port):
            pass
        return "iframe to 10.10.34.34, peyvandha.ir; https port open"

    async def _nolisten(self) -> str:
        address = self.origins["down-nolisten"]
        for port in (self.ports.https_port, self.ports.http_port):
            try:
                async with _open(address, port):
                    raise CheckFailed(f"something listens on {address}:{port}")
            except ConnectionRefusedError:
                continue
        return f"{address}: connection refused"

    # the middlebox (the censored view) ----------------------------------------------

    def middlebox_checks(self) -> list[Check]:
        checks: list[Check] = [
            ("middlebox: open over https", self._through("open", tls=True, status=200)),
            ("middlebox: open over http", self._through("open", tls=False, status=200)),
            ("middlebox: username/password auth", self._with_credentials),
            (
                "middlebox: origins see 127.0.0.2 (geo 403)",
                self._through("geo", tls=True, status=403),
            ),
            ("middlebox: cdn replica", self._replica_through),
            ("middlebox: throttle page arrives", self._through("throttle", tls=True, status=200)),
            ("middlebox: down-nolisten refused", self._refused("down-nolisten")),
            ("middlebox: throttled asset vs unthrottled", self._throughput),
            ("shutdown proxy: never replies", self._mute_proxy),
        ]
        for entry in CATALOGUE:
            for layer, action in entry.rules:
                if layer is not Layer.DNS and action is not Action.THROTTLE:
                    checks.append(
                        (
                            f"middlebox {layer} {action}: {entry.name}",
                            self._rule(entry, layer, action),
                        )
                    )
        return checks

    @contextlib.asynccontextmanager
    async def _tunnel(
        self, name: str, address: str | None = None, credentials: tuple[str, str] | None = None
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A successful CONNECT through the middlebox to a scenario's origin."""
        address = address or self.origins[name]
        async with _open("127.0.0.1", self.ports.middlebox) as (reader, writer):
            async with asyncio.timeout(_QUICK_S):
                code = await _socks(reader, writer, address, self.ports.https_port, credentials)
            _expect(code == 0, f"SOCKS reply {code:#04x}")
            yield reader, writer

    def _through(self, name: str, *, tls: bool, status: int) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            host = f"{name}.lifeline.test"
            port = self.ports.https_port if tls else self.ports.http_port
            async with _open("127.0.0.1", self.ports.middlebox) as (reader, writer):
                code = await _socks(reader, writer, self.origins[name], port)
                _expect(code == 0, f"SOCKS reply {code:#04x}")
                if tls:
                    await _tls(writer, self.trust, host)
                response = await _get(reader, writer, host)
            _expect(response.status == status, f"status {response.status}")
            return f"{response.status}, {response.title!r}"

        return check

    async def _with_credentials(self) -> str:
        async with self._tunnel("open", credentials=("lab", "secret")) as (reader, writer):
            await _tls(writer, self.trust, "open.lifeline.test")
            response = await _get(reader, writer, "open.lifeline.test")
        _expect(response.status == 200, f"status {response.status}")
        return "accepted, 200"

    async def _replica_through(self) -> str:
        async with self._tunnel("cdn", REPLICA_ADDRESS) as (reader, writer):
            await _tls(writer, self.trust, "cdn.lifeline.test")
            response = await _get(reader, writer, "cdn.lifeline.test")
        _expect(response.status == 200 and "cdn" in response.title, f"{response.status}")
        return f"200, {response.title!r}"

    def _refused(self, name: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            async with _open("127.0.0.1", self.ports.middlebox) as (reader, writer):
                code = await _socks(reader, writer, self.origins[name], self.ports.https_port)
            _expect(code == 0x05, f"SOCKS reply {code:#04x}")
            return "SOCKS reply 0x05"

        return check

    def _rule(self, entry: Scenario, layer: Layer, action: Action) -> Callable[[], Awaitable[str]]:
        checks = {
            Layer.CONNECT: self._connect_rule,
            Layer.TLS: self._tls_rule,
            Layer.HTTP: self._http_rule,
        }

        async def check() -> str:
            return await checks[layer](entry, action)

        return check

    async def _connect_rule(self, entry: Scenario, action: Action) -> str:
        async with _open("127.0.0.1", self.ports.middlebox) as (reader, writer):
            attempt = _socks(reader, writer, self.origins[entry.name], self.ports.https_port)
            if action is Action.BLACKHOLE:
                return await _expect_silence(attempt, "the CONNECT")
            if action is Action.RESET:
                return await _expect_reset(attempt, "the CONNECT")
            code = await attempt
            _expect(code == 0x05, f"SOCKS reply {code:#04x}")
            return "SOCKS reply 0x05 (connection refused)"

    async def _tls_rule(self, entry: Scenario, action: Action) -> str:
        async with self._tunnel(entry.name) as (_, writer):
            handshake = _tls(writer, self.trust, host_name(entry), wait_s=60)
            if action is Action.STALL:
                return await _expect_silence(handshake, "the TLS handshake")
            return await _expect_reset(handshake, "the TLS handshake")

    async def _http_rule(self, entry: Scenario, action: Action) -> str:
        host = host_name(entry)
        async with _open("127.0.0.1", self.ports.middlebox) as (reader, writer):
            code = await _socks(reader, writer, self.origins[entry.name], self.ports.http_port)
            _expect(code == 0, f"SOCKS reply {code:#04x}")
            if action is Action.RESET:
                return await _expect_reset(_get(reader, writer, host), "the request")
            response = await _get(reader, writer, host)
        if action is Action.UNAVAILABLE:
            _expect(response.status == 451, f"status {response.status}")
            return "451"
        _expect(
            response.status == 200
            and b"10.10.34.34" in response.body
            and b"peyvandha.ir" in response.body,
            f"status {response.status}, no fingerprint",
        )
        return "200 block page (10.10.34.34, peyvandha.ir)"

    async def _throughput(self) -> str:
        slow = await self._asset_rate(scenario("throttle"), window=_WINDOW_S)
        fast = await self._asset_rate(scenario("open"), window=None)
        ceiling = THROTTLE_RATE * 2
        _expect(0 < slow < ceiling, f"throttled at {slow / 1024:.1f} KiB/s")
        _expect(fast > 4 * slow, f"unthrottled only {fast / 1024:.1f} KiB/s")
        return f"throttled {slow / 1024:.1f} KiB/s, unthrottled {fast / 1024:.0f} KiB/s"

    async def _asset_rate(self, entry: Scenario, window: float | None) -> float:
        """Bytes per second of /asset.bin through the middlebox: over a window, or the whole."""
        loop = asyncio.get_running_loop()
        received = 0
        async with self._tunnel(entry.name) as (reader, writer):
            await _tls(writer, self.trust, host_name(entry))
            writer.write(
                f"GET /asset.bin HTTP/1.1\r\nHost: {host_name(entry)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            start = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(window if window is not None else _CHECK_S / 2):
                    while chunk := await reader.read(65536):
                        received += len(chunk)
            elapsed = loop.time() - start
        if window is None:
            _expect(received > _ASSET_SIZE, f"only {received} bytes of the asset arrived")
        return received / max(elapsed, 1e-3)

    async def _mute_proxy(self) -> str:
        async with _open("127.0.0.1", self.ports.mute_proxy) as (reader, writer):
            writer.write(b"\x05\x01\x00")
            return await _expect_silence(reader.read(1), "it")

    # runtime switches --------------------------------------------------------------

    async def admin_check(self) -> str:
        """Flip `open` to NXDOMAIN at the censor over HTTP, watch it apply, clear it."""
        body = json.dumps({"scenario": "open", "dns": "nxdomain"})
        async with ClientSession(timeout=ClientTimeout(total=_QUICK_S)) as session:
            async with session.put(f"{self.admin_url}/rules", data=body) as response:
                _expect(response.status == 200, f"PUT status {response.status}")
            flipped = await _query(self.ports.censor_resolver, "open.lifeline.test")
            async with session.delete(
                f"{self.admin_url}/rules", params={"scenario": "open"}
            ) as response:
                _expect(response.status == 200, f"DELETE status {response.status}")
            async with session.put(f"{self.admin_url}/rules", data="{}") as response:
                _expect(response.status == 400, f"a bad PUT gave {response.status}")
        restored = await _query(self.ports.censor_resolver, "open.lifeline.test")
        _expect(flipped is not None and flipped.rcode() == dns.rcode.NXDOMAIN, "not flipped")
        _expect(
            restored is not None and _addresses(restored) == [self.origins["open"]], "not restored"
        )
        return "NXDOMAIN while set, answered again once cleared"


async def _run_check(
    name: str, check: Callable[[], Awaitable[str]], gate: asyncio.Semaphore
) -> tuple[bool, str]:
    async with gate:
        try:
            async with asyncio.timeout(_CHECK_S):
                detail = await check()
        except CheckFailed as exc:
            return False, f"FAIL {name}: {exc}"
        except Exception as exc:  # a check must report, never crash the selftest
            return False, f"FAIL {name}: {type(exc).__name__}: {exc}"
    return True, f"ok   {name}: {detail}"


async def run_selftest(lab: Lab, say: Callable[[str], None]) -> bool:
    """Run every check against a started lab, say one line each and a summary; True if all pass."""
    test = _Selftest(lab)
    checks = test.dns_checks() + test.origin_checks() + test.middlebox_checks()
    gate = asyncio.Semaphore(_PARALLEL)
    results = await asyncio.gather(*(_run_check(name, check, gate) for name, check in checks))
    # The rule flip changes shared state: it runs alone, after everything else.
    results.append(await _run_check("admin: runtime rule flip", test.admin_check, gate))
    for _, line in results:
        say(line)
    passed = sum(1 for ok, _ in results if ok)
    failed = len(results) - passed
    say(f"selftest: {passed} passed, {failed} failed")
    return failed == 0
