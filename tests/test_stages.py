"""Each stage, and measure(), against in-process fakes on 127.0.0.1.

The resolver of every vantage here is a fake on loopback: the system resolver
is never asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from probes.deadline import Deadline
from probes.dns import dns_stage
from probes.failures import Failure
from probes.measure import STAGES, measure
from probes.model import Proxy, ResolverSpec, Target, Vantage
from probes.net import StageContext, VantageNet
from probes.records import Measurement, TLSStage
from probes.tcp import tcp_stage
from probes.tls import tls_stage
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
        assert set(Target.parse(url).stages) <= set(STAGES)


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
