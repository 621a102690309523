"""Each stage, and measure(), against in-process fakes on 127.0.0.1.

The resolver of every vantage here is a fake on loopback: the system resolver
is never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from probes.deadline import Deadline
from probes.dns import dns_stage
from probes.failures import Failure
from probes.measure import STAGES, measure
from probes.model import Proxy, ResolverSpec, Target, Vantage
from probes.net import MAX_CONNECT_HEAD, StageContext, VantageNet
from probes.records import Measurement, TLSStage
from probes.tcp import tcp_stage
from probes.tls import certificate_record, tls_stage
from tests.fakes import (
    CA,
    LOOPBACK,
    PAGE,
    FakeDNS,
    FakeDoH,
    FakeSocks,
    FakeWeb,
    RawServer,
    closed_port,
)

pytestmark = pytest.mark.both_loops

HOST = "open.lifeline.test"


def vantage(dns_port: int, *, socks_port: int | None = None) -> Vantage:
    proxy = Proxy("socks5", LOOPBACK, socks_port) if socks_port is not None else None
    return Vantage("v", ResolverSpec("udp", LOOPBACK, dns_port), proxy=proxy)


@pytest.fixture
async def resolver() -> AsyncIterator[FakeDNS]:
    server = await FakeDNS(
        {
            HOST: ["A 127.0.0.1"],
            "other.lifeline.test": ["A 127.0.0.1"],
            "dual.lifeline.test": ["A 127.0.0.1", "AAAA ::1"],
            "nx.lifeline.test": "nxdomain",
            "sf.lifeline.test": "servfail",
            "silent.lifeline.test": "silence",
            "big.lifeline.test": "truncate:A 127.0.0.7",
            "www.lifeline.test": ["CNAME edge.lifeline.test", "A 127.0.0.9@edge.lifeline.test"],
            "censored.lifeline.test": ["A 127.0.0.66"],
            "v4only.lifeline.test": "drop-aaaa:A 127.0.0.5",
        }
    ).start()
    yield server
    await server.close()


@pytest.fixture
async def net(resolver: FakeDNS) -> AsyncIterator[VantageNet]:
    n = VantageNet(vantage(resolver.port), ca_file=None)
    yield n
    await n.aclose()


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA.create(tmp_path)


def context(net: VantageNet, url: str, timeout: float = 5.0) -> StageContext:
    target = Target.parse(url)
    m = Measurement(target=url, vantage=net.vantage.name, time="2026-01-01T00:00:00Z")
    return StageContext(target, net.vantage, net, Deadline.after(timeout), m, 1 << 20)


# --- DNS ----------------------------------------------------------------------


class _ForgingResolver(asyncio.DatagramProtocol):
    """Answers each query from its own port, after a forgery with the right ID and
    question sent from another port of the same address (an on-path guess)."""

    def __init__(self, forger: asyncio.DatagramTransport) -> None:
        self.forger = forger
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        qtype = query.question[0].rdtype
        for sender, address in ((self.forger, "127.0.0.66"), (self.transport, "127.0.0.1")):
            reply = dns.message.make_response(query)
            if qtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(HOST + ".", 300, "IN", "A", address))
            assert sender is not None
            sender.sendto(reply.to_wire(), addr)


async def test_dns_ignores_a_reply_from_another_port() -> None:
    loop = asyncio.get_running_loop()
    forger, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    server, _ = await loop.create_datagram_endpoint(
        lambda: _ForgingResolver(forger), local_addr=(LOOPBACK, 0)
    )
    net = VantageNet(vantage(server.get_extra_info("sockname")[1]), ca_file=None)
    try:
        rec = await dns_stage(context(net, f"dns://{HOST}"))
    finally:
        await net.aclose()
        server.close()
        forger.close()
    assert rec.ok and rec.addresses == ["127.0.0.1"]  # the forgery came first, and was ignored


async def test_dns_answers_a_first_with_ttls(net: VantageNet) -> None:
    rec = await dns_stage(context(net, "dns://dual.lifeline.test"))
    assert rec.ok and rec.failure is None
    assert rec.addresses == ["127.0.0.1", "::1"]
    assert rec.resolver == f"udp://127.0.0.1:{net.vantage.resolver.port}"
    by_type = {q.qtype: q for q in rec.queries}
    assert by_type["A"].rcode == "NOERROR"
    assert [(a.rtype, a.value, a.ttl) for a in by_type["A"].answers] == [("A", "127.0.0.1", 300)]
    assert [a.value for a in by_type["AAAA"].answers] == ["::1"]


async def test_dns_empty_aaaa_beside_a_is_fine(net: VantageNet) -> None:
    rec = await dns_stage(context(net, f"dns://{HOST}"))
    assert rec.ok and rec.addresses == ["127.0.0.1"]
    aaaa = next(q for q in rec.queries if q.qtype == "AAAA")
    assert not aaaa.ok and aaaa.failure == Failure.DNS_NO_ANSWER and aaaa.rcode == "NOERROR"


async def test_dns_dropped_aaaa_does_not_eat_the_budget(net: VantageNet) -> None:
    ctx = context(net, "dns://v4only.lifeline.test", timeout=30)
    rec = await dns_stage(ctx)
    assert rec.ok and rec.addresses == ["127.0.0.5"]
    aaaa = next(q for q in rec.queries if q.qtype == "AAAA")
    assert aaaa.failure == Failure.TIMEOUT and aaaa.rcode is None
    assert ctx.deadline.remaining() > 20  # the later stages keep their time


@pytest.mark.parametrize(
    ("name", "failure", "rcode"),
    [
        ("nx.lifeline.test", Failure.DNS_NXDOMAIN, "NXDOMAIN"),
        ("sf.lifeline.test", Failure.DNS_SERVFAIL, "SERVFAIL"),
    ],
)
async def test_dns_error_rcodes(net: VantageNet, name: str, failure: str, rcode: str) -> None:
    rec = await dns_stage(context(net, f"dns://{name}"))
    assert not rec.ok and rec.failure == failure and rec.addresses == []
    assert {q.rcode for q in rec.queries} == {rcode}


async def test_dns_silence_is_a_timeout_after_retransmissions(
    net: VantageNet, resolver: FakeDNS
) -> None:
    rec = await dns_stage(context(net, "dns://silent.lifeline.test", timeout=2.5))
    assert not rec.ok and rec.failure == Failure.TIMEOUT
    assert all(q.rcode is None for q in rec.queries)
    assert resolver.udp_queries > 2  # both questions were sent again within the budget


async def test_dns_truncated_answer_is_retried_over_tcp(net: VantageNet, resolver: FakeDNS) -> None:
    rec = await dns_stage(context(net, "dns://big.lifeline.test"))
    assert rec.ok and rec.addresses == ["127.0.0.7"]
    assert resolver.tcp_queries >= 1


async def test_dns_follows_cnames(net: VantageNet) -> None:
    rec = await dns_stage(context(net, "dns://www.lifeline.test"))
    assert rec.ok and rec.addresses == ["127.0.0.9"]
    a = next(q for q in rec.queries if q.qtype == "A")
    assert [(x.rtype, x.value) for x in a.answers] == [
        ("CNAME", "edge.lifeline.test"),
        ("A", "127.0.0.9"),
    ]


async def test_dns_is_skipped_for_ip_literals(net: VantageNet) -> None:
    rec = await dns_stage(context(net, "tcp://127.0.0.1:9"))
    assert rec.ok and rec.skipped and rec.addresses == ["127.0.0.1"] and rec.queries == []


async def test_dns_over_tcp(resolver: FakeDNS) -> None:
    net = VantageNet(Vantage("v", ResolverSpec("tcp", LOOPBACK, resolver.port)), ca_file=None)
    try:
        rec = await dns_stage(context(net, "dns://nx.lifeline.test"))
    finally:
        await net.aclose()
    assert rec.failure == Failure.DNS_NXDOMAIN and rec.resolver.startswith("tcp://")
    assert resolver.tcp_queries == 2 and resolver.udp_queries == 0


async def test_dns_over_tls(resolver: FakeDNS, ca: CA, tmp_path: Path) -> None:
    await resolver.start_tls(ca.server_context(tmp_path, [LOOPBACK]))
    spec = ResolverSpec("tls", LOOPBACK, resolver.tls_port)
    net = VantageNet(Vantage("v", spec), ca_file=str(ca.pem_path))
    try:
        rec = await dns_stage(context(net, "dns://dual.lifeline.test"))
    finally:
        await net.aclose()
    assert rec.ok and rec.addresses == ["127.0.0.1", "::1"]


async def test_dns_over_https(resolver: FakeDNS, ca: CA, tmp_path: Path) -> None:
    doh = await FakeDoH(resolver, ca.server_context(tmp_path, [LOOPBACK])).start()
    url = f"https://{LOOPBACK}:{doh.port}/dns-query"
    net = VantageNet(
        Vantage("v", ResolverSpec("https", LOOPBACK, doh.port, url)), ca_file=str(ca.pem_path)
    )
    try:
        ok = await dns_stage(context(net, "dns://www.lifeline.test"))
        nx = await dns_stage(context(net, "dns://nx.lifeline.test"))
    finally:
        await net.aclose()
        await doh.close()
    assert ok.ok and ok.addresses == ["127.0.0.9"] and ok.resolver == url
    assert nx.failure == Failure.DNS_NXDOMAIN


async def test_doh_url_with_a_name_is_a_config_error() -> None:
    doh = ResolverSpec("https", "dns.example", 443, "https://dns.example/dns-query")
    net = VantageNet(Vantage("v", doh), ca_file=None)
    try:
        m = await measure(Target.parse(f"dns://{HOST}"), net.vantage, net, timeout=2,
                          max_body_bytes=1000)  # fmt: skip
    finally:
        await net.aclose()
    assert m.dns is None
    assert m.error is not None and "needs an IP address" in m.error


# --- TCP ----------------------------------------------------------------------


async def test_tcp_records_every_attempt_until_one_connects(net: VantageNet) -> None:
    web = await FakeWeb().start()
    try:
        ctx = context(net, f"tcp://{HOST}:{web.port}")
        ctx.measurement.dns = await dns_stage(ctx)
        ctx.measurement.dns.addresses.insert(0, "127.0.0.3")  # a first address that refuses
        web_port = web.port
        rec = await tcp_stage(ctx)
        assert rec.ok and rec.address == "127.0.0.1" and rec.port == web_port
        assert [(a.address, a.ok, a.failure) for a in rec.attempts] == [
            ("127.0.0.3", False, Failure.CONNECTION_REFUSED),
            ("127.0.0.1", True, None),
        ]
        assert ctx.connection is not None and not rec.via_proxy
        ctx.close()
    finally:
        await web.close()


async def test_tcp_refused(net: VantageNet) -> None:
    m = await measure(Target.parse(f"tcp://{HOST}:{closed_port()}"), net.vantage, net,
                      timeout=3, max_body_bytes=1000)  # fmt: skip
    assert m.tcp is not None and not m.tcp.ok
    assert m.tcp.failure == Failure.CONNECTION_REFUSED
    assert m.first_failure() == ("tcp", Failure.CONNECTION_REFUSED)


# --- TLS ----------------------------------------------------------------------


async def tls_record(net: VantageNet, port: int, budget: float = 5.0) -> TLSStage:
    """DNS, TCP, then the TLS stage under test."""
    ctx = context(net, f"tls://{HOST}:{port}", budget)
    ctx.measurement.dns = await dns_stage(ctx)
    ctx.measurement.tcp = await tcp_stage(ctx)
    assert ctx.measurement.tcp.ok
    try:
        return await tls_stage(ctx)
    finally:
        ctx.close()


async def test_tls_records_the_certificate(resolver: FakeDNS, ca: CA, tmp_path: Path) -> None:
    web = await FakeWeb(
        ssl_context=ca.server_context(tmp_path, [HOST, "alt.lifeline.test"])
    ).start()
    net = VantageNet(vantage(resolver.port), ca_file=str(ca.pem_path))
    try:
        rec = await tls_record(net, web.port)
    finally:
        await net.aclose()
        await web.close()
    assert rec.ok and rec.failure is None
    assert rec.server_name == HOST and rec.address == "127.0.0.1"
    assert rec.version in ("TLSv1.2", "TLSv1.3") and rec.cipher and rec.alpn == "http/1.1"
    assert rec.certificate is not None
    assert rec.certificate.subject_cn == HOST
    assert rec.certificate.san == [HOST, "alt.lifeline.test"]
    assert rec.certificate.issuer == "CN=Lifeline Test CA"
    assert rec.certificate.not_after is not None and rec.certificate.not_after.endswith("Z")
    assert rec.bytes_received is not None and rec.bytes_received > 0


@pytest.mark.parametrize(
    ("names", "expired", "trusted", "failure"),
    [
        (["impostor.lifeline.test"], False, True, Failure.SSL_INVALID_HOSTNAME),
        ([HOST], False, False, Failure.SSL_UNKNOWN_AUTHORITY),
        ([HOST], True, True, Failure.SSL_INVALID_CERTIFICATE),
    ],
)
async def test_tls_certificate_failures(
    resolver: FakeDNS, ca: CA, tmp_path: Path,
    names: list[str], expired: bool, trusted: bool, failure: str,
) -> None:  # fmt: skip
    web = await FakeWeb(ssl_context=ca.server_context(tmp_path, names, expired=expired)).start()
    net = VantageNet(vantage(resolver.port), ca_file=str(ca.pem_path) if trusted else None)
    try:
        rec = await tls_record(net, web.port)
    finally:
        await net.aclose()
        await web.close()
    assert not rec.ok and rec.failure == failure and rec.certificate is None


@pytest.mark.parametrize(
    ("mode", "failure"),
    [("reset", Failure.CONNECTION_RESET), ("close", Failure.EOF), ("stall", Failure.TIMEOUT)],
)
async def test_tls_interrupted_handshakes(net: VantageNet, mode: str, failure: str) -> None:
    server = await RawServer(mode).start()
    try:
        rec = await tls_record(net, server.port, budget=1.5)
    finally:
        await server.close()
    assert not rec.ok and rec.failure == failure
    assert rec.bytes_received == 0


# --- HTTP ---------------------------------------------------------------------


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    server = await FakeWeb().start()
    yield server
    await server.close()


async def test_http_page(net: VantageNet, web: FakeWeb) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/"), net.vantage, net,
                      timeout=5, max_body_bytes=1 << 20, service="svc")  # fmt: skip
    assert m.error is None and m.succeeded and m.service == "svc"
    h = m.http
    assert h is not None and h.ok and h.status == 200 and h.request_sent
    assert h.title == "Open & Free Page"
    assert h.body_length == len(PAGE)
    assert h.body_head is not None and h.body_head.startswith("<!doctype html>")
    assert h.headers["server"] == "fake/1" and h.headers["content-type"].startswith("text/html")
    assert h.body_sha256 is not None and len(h.body_sha256) == 64 and not h.body_truncated
    assert h.final_url == f"http://{HOST}:{web.port}/" and h.redirects == []
    assert h.throughput_bps is None


@pytest.mark.parametrize(
    ("mode", "failure"), [("reset", Failure.CONNECTION_RESET), ("close", Failure.EOF)]
)
async def test_http_cut_after_the_request_is_seen_not_retried(
    net: VantageNet, mode: str, failure: str
) -> None:
    server = await RawServer(mode).start()
    try:
        m = await measure(Target.parse(f"http://{HOST}:{server.port}/"), net.vantage, net,
                          timeout=3, max_body_bytes=1000)  # fmt: skip
    finally:
        await server.close()
    assert m.tcp is not None and m.tcp.ok
    assert m.http is not None and not m.http.ok and m.http.request_sent
    assert m.http.failure == failure
    assert server.accepted == 1  # one connection: no silent retry that could hide a censor


async def test_http_redirect_chain_is_recorded(net: VantageNet, web: FakeWeb) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/hop/3"), net.vantage, net,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    h = m.http
    assert h is not None and h.ok and h.status == 200
    assert [(r.status, r.location, r.address) for r in h.redirects] == [
        (302, "/hop/2", "127.0.0.1"),
        (302, "/hop/1", "127.0.0.1"),
        (302, "/hop/0", "127.0.0.1"),
    ]
    assert h.final_url == f"http://{HOST}:{web.port}/hop/0"


async def test_http_redirect_to_another_host_resolves_through_the_vantage(
    net: VantageNet, web: FakeWeb, resolver: FakeDNS
) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/cross"), net.vantage, net,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    assert m.http is not None and m.http.ok and m.http.status == 200
    assert web.requests[-1] == f"other.lifeline.test:{web.port} /"


async def test_http_redirect_to_ftp_is_bad(net: VantageNet, web: FakeWeb) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/ftp"), net.vantage, net,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    assert m.http is not None and not m.http.ok
    assert m.http.failure == Failure.HTTP_BAD_REDIRECT
    assert m.http.redirects[0].location == "ftp://files.lifeline.test/x"


async def test_http_redirect_loop_stops(net: VantageNet, web: FakeWeb) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/loop"), net.vantage, net,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    assert m.http is not None and m.http.failure == Failure.HTTP_TOO_MANY_REDIRECTS
    assert len(m.http.redirects) == 11


async def test_http_gzip_bomb_is_capped(net: VantageNet, web: FakeWeb) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/bomb"), net.vantage, net,
                      timeout=10, max_body_bytes=100_000)  # fmt: skip
    h = m.http
    assert h is not None and h.ok and h.body_truncated and h.body_length == 100_000
    assert h.headers["content-encoding"] == "gzip"


async def test_http_slow_body_cut_by_deadline_is_a_throughput_sample(
    net: VantageNet, web: FakeWeb
) -> None:
    target = Target.parse(f"http://{HOST}:{web.port}/slow", throughput=True)
    m = await measure(target, net.vantage, net, timeout=1.5, max_body_bytes=1 << 20)
    h = m.http
    assert m.throughput and h is not None and h.ok and h.failure is None and h.body_truncated
    assert h.body_length is not None and h.body_length > 0
    assert h.throughput_bps is not None and h.throughput_bps > 0 and h.transfer_s


async def test_http_no_response_is_a_timeout_after_the_request(
    net: VantageNet, web: FakeWeb
) -> None:
    m = await measure(Target.parse(f"http://{HOST}:{web.port}/hang"), net.vantage, net,
                      timeout=1.5, max_body_bytes=1 << 20)  # fmt: skip
    assert m.http is not None and not m.http.ok
    assert m.http.failure == Failure.TIMEOUT and m.http.request_sent


async def test_https_uses_one_connection(resolver: FakeDNS, ca: CA, tmp_path: Path) -> None:
    origin = await FakeWeb(ssl_context=ca.server_context(tmp_path, [HOST])).start()
    net = VantageNet(vantage(resolver.port), ca_file=str(ca.pem_path))
    try:
        m = await measure(Target.parse(f"https://{HOST}:{origin.port}/"), net.vantage, net,
                          timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    finally:
        await net.aclose()
        await origin.close()
    assert m.succeeded, m.first_failure()
    assert m.tls is not None and m.tls.certificate is not None
    assert m.http is not None and m.http.title == "Open & Free Page"


async def test_censor_address_is_never_connected(net: VantageNet) -> None:
    m = await measure(Target.parse("https://censored.lifeline.test/"), net.vantage, net,
                      timeout=3, max_body_bytes=1000,
                      stop_addresses=frozenset({"127.0.0.66"}))  # fmt: skip
    assert m.dns is not None and m.dns.ok and m.dns.addresses == ["127.0.0.66"]
    assert m.tcp is None and m.tls is None and m.http is None and m.error is None


def test_the_stage_table_covers_every_scheme() -> None:
    for scheme in ("https", "http", "tls", "tcp", "dns"):
        url = {"tls": "tls://a.test:1", "tcp": "tcp://a.test:1"}.get(scheme, f"{scheme}://a.test")
        runs = STAGES.for_scheme(Target.parse(url).scheme)
        assert runs and {s.name for s in runs} <= set(STAGES.names)


# --- SOCKS5 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "failure"),
    [("refuse", Failure.CONNECTION_REFUSED), ("reset", Failure.CONNECTION_RESET)],
)
async def test_socks_connect_failures(resolver: FakeDNS, mode: str, failure: str) -> None:
    socks = await FakeSocks(mode).start()
    net = VantageNet(vantage(resolver.port, socks_port=socks.port), ca_file=None)
    try:
        m = await measure(Target.parse(f"tcp://{HOST}:8443"), net.vantage, net,
                          timeout=3, max_body_bytes=1000)  # fmt: skip
    finally:
        await net.aclose()
        await socks.close()
    assert m.tcp is not None and not m.tcp.ok and m.tcp.via_proxy
    assert m.tcp.failure == failure
    assert socks.connects == [("127.0.0.1", 8443)]  # CONNECT by address, never by name


async def test_socks_silent_proxy_times_out(resolver: FakeDNS) -> None:
    socks = await FakeSocks("hang").start()
    net = VantageNet(vantage(resolver.port, socks_port=socks.port), ca_file=None)
    try:
        m = await measure(Target.parse(f"tcp://{HOST}:8443"), net.vantage, net,
                          timeout=1.0, max_body_bytes=1000)  # fmt: skip
    finally:
        await net.aclose()
        await socks.close()
    assert m.tcp is not None and m.tcp.failure == Failure.TIMEOUT


async def test_unreachable_proxy_is_a_proxy_error(resolver: FakeDNS) -> None:
    net = VantageNet(vantage(resolver.port, socks_port=closed_port()), ca_file=None)
    try:
        m = await measure(Target.parse(f"tcp://{HOST}:8443"), net.vantage, net,
                          timeout=2, max_body_bytes=1000)  # fmt: skip
    finally:
        await net.aclose()
    assert m.tcp is not None and m.tcp.failure == Failure.PROXY_ERROR


async def test_https_through_socks(resolver: FakeDNS, ca: CA, tmp_path: Path) -> None:
    origin = await FakeWeb(ssl_context=ca.server_context(tmp_path, [HOST])).start()
    socks = await FakeSocks("relay").start()
    net = VantageNet(vantage(resolver.port, socks_port=socks.port), ca_file=str(ca.pem_path))
    try:
        m = await measure(Target.parse(f"https://{HOST}:{origin.port}/hop/1"), net.vantage, net,
                          timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    finally:
        await net.aclose()
        await socks.close()
        await origin.close()
    assert m.succeeded, m.first_failure()
    assert m.tcp is not None and m.tcp.via_proxy and m.tcp.address == "127.0.0.1"
    assert m.http is not None and m.http.status == 200
    assert m.http.redirects[0].address == "127.0.0.1"  # the origin's, not the proxy's
    assert socks.connects == [("127.0.0.1", origin.port)]  # one connection, by address


async def test_http_through_socks_reuses_the_tcp_connection(
    resolver: FakeDNS, web: FakeWeb
) -> None:
    socks = await FakeSocks("relay").start()
    net = VantageNet(vantage(resolver.port, socks_port=socks.port), ca_file=None)
    try:
        m = await measure(Target.parse(f"http://{HOST}:{web.port}/"), net.vantage, net,
                          timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    finally:
        await net.aclose()
        await socks.close()
    assert m.succeeded and m.http is not None and m.http.status == 200
    assert socks.connects == [("127.0.0.1", web.port)]


# --- HTTP CONNECT proxies -------------------------------------------------------

ProxyReply = Callable[[asyncio.StreamWriter], Awaitable[None]]


class _ConnectProxy:
    """An HTTP proxy on loopback: reads the CONNECT head, answers with ``reply``, then
    relays to the address the CONNECT names (which must be an IP literal)."""

    def __init__(self, reply: ProxyReply) -> None:
        self.reply = reply
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> _ConnectProxy:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            host, _, port = head.split(b" ")[1].decode().rpartition(":")
            await self.reply(writer)
            up_r, up_w = await asyncio.open_connection(host.strip("[]"), int(port))
            try:
                await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            finally:
                up_w.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _established_in_pieces(writer: asyncio.StreamWriter) -> None:
    """A whole reply head, sent in three pieces, the blank line last."""
    for piece in (b"HTTP/1.1 200 Connection established\r\n", b"Proxy-Agent: t\r\n", b"\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)


async def _endless_head(writer: asyncio.StreamWriter) -> None:
    """A 200 status line, then a header that never ends."""
    writer.write(b"HTTP/1.1 200 Connection established\r\nX-Endless: ")
    for _ in range(4):
        writer.write(b"e" * MAX_CONNECT_HEAD)
        await writer.drain()


def _http_proxied(dns_port: int, proxy_port: int, user: str | None = None) -> Vantage:
    proxy = Proxy("http", LOOPBACK, proxy_port, username=user, password="pw" if user else None)
    return Vantage("v", ResolverSpec("udp", LOOPBACK, dns_port), proxy=proxy)


async def test_http_through_a_connect_proxy_whose_reply_comes_in_pieces(
    resolver: FakeDNS, web: FakeWeb
) -> None:
    proxy = await _ConnectProxy(_established_in_pieces).start()
    net = VantageNet(_http_proxied(resolver.port, proxy.port, user="u"), ca_file=None)
    try:
        m = await measure(Target.parse(f"http://{HOST}:{web.port}/"), net.vantage, net,
                          timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    finally:
        await net.aclose()
        await proxy.close()
    assert m.succeeded, m.first_failure()
    assert m.tcp is not None and m.tcp.via_proxy and m.tcp.address == "127.0.0.1"
    assert m.http is not None and m.http.status == 200 and m.http.title == "Open & Free Page"
    assert len(proxy.heads) == 1  # one connection: TCP's, reused by HTTP
    assert proxy.heads[0].startswith(f"CONNECT 127.0.0.1:{web.port} HTTP/1.1\r\n".encode())
    assert b"Proxy-Authorization: Basic dTpwdw==\r\n" in proxy.heads[0]  # u:pw


async def test_a_connect_reply_head_without_end_is_a_proxy_error(
    resolver: FakeDNS, web: FakeWeb
) -> None:
    proxy = await _ConnectProxy(_endless_head).start()
    net = VantageNet(_http_proxied(resolver.port, proxy.port), ca_file=None)
    try:
        m = await measure(Target.parse(f"http://{HOST}:{web.port}/"), net.vantage, net,
                          timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    finally:
        await net.aclose()
        await proxy.close()
    assert m.tcp is not None and not m.tcp.ok and m.tcp.failure == Failure.PROXY_ERROR
    assert m.http is None  # nothing of the endless head was read as the origin's answer
    assert b"Proxy-Authorization" not in proxy.heads[0]


# --- what vantages and measurements share ----------------------------------------


def test_vantages_share_the_trust_until_the_ca_file_changes(ca: CA, tmp_path: Path) -> None:
    """Loading the system trust store blocks the loop: once per CA file as it is on disk."""
    path = tmp_path / "extra.pem"
    path.write_bytes(ca.pem_path.read_bytes())
    first = VantageNet(vantage(53), ca_file=str(path))
    second = VantageNet(Vantage("w", ResolverSpec("udp", LOOPBACK, 53)), ca_file=str(path))
    assert second.ssl_context is first.ssl_context
    assert first.dot_ssl_context is not first.ssl_context  # each offers its own ALPN
    (tmp_path / "rotated").mkdir()
    other = CA.create(tmp_path / "rotated")
    path.write_bytes(other.pem_path.read_bytes() + ca.pem_path.read_bytes())
    rotated = VantageNet(vantage(53), ca_file=str(path))
    assert rotated.ssl_context is not first.ssl_context  # a rotated CA file is read again


def test_certificate_records_are_the_same_and_independent(ca: CA) -> None:
    der = ca.cert.public_bytes(Encoding.DER)
    first = certificate_record(der)
    first.san.append("changed.example")
    second = certificate_record(bytes(der))
    assert second.sha256 == hashlib.sha256(der).hexdigest()
    assert second.subject_cn == first.subject_cn and "changed.example" not in second.san
