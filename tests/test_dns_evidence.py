"""Evidence the DNS and TLS stages keep for re-judging (issue 15): the numeric rcode,
every later response to a query (DNS injection), the peer's certificate chain.

Every resolver and server here is a fake on 127.0.0.1: the system resolver is
never asked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import jsonschema  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.export.ooni import _ooni_tls
from probes.classify import classify
from probes.config import parse_config
from probes.deadline import Deadline
from probes.dns import dns_stage
from probes.failures import Failure
from probes.fingerprints import FingerprintSet
from probes.model import ResolverSpec, Target, Vantage
from probes.net import StageContext, VantageNet
from probes.records import DNSStage, Measurement, Result, TLSStage, Verdict
from probes.tcp import tcp_stage
from probes.tls import MAX_CHAIN, MAX_CHAIN_BYTES, peer_chain, tls_stage
from tests.fakes import CA, LOOPBACK, FakeDNS, FakeWeb

pytestmark = pytest.mark.both_loops

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"


def vantage(dns_port: int, **extra: Any) -> Vantage:
    return Vantage("v", ResolverSpec("udp", LOOPBACK, dns_port), **extra)


def context(net: VantageNet, url: str, timeout: float = 5.0) -> StageContext:
    target = Target.parse(url)
    m = Measurement(target=url, vantage=net.vantage.name, time="2026-01-01T00:00:00Z")
    return StageContext(target, net.vantage, net, Deadline.after(timeout), m, 1 << 20)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator(schema)


def record_of(dns: DNSStage) -> dict[str, Any]:
    """The JSON record a user sees for a measurement that stopped at DNS."""
    m = Measurement(target="dns://x.test", vantage="v", time="2026-01-01T00:00:00Z", dns=dns)
    return Result(m, Verdict.OK, "test").to_dict()


# --- the numeric rcode ------------------------------------------------------------


@pytest.fixture
async def resolver() -> AsyncIterator[FakeDNS]:
    server = await FakeDNS(
        {
            "ok.lifeline.test": ["A 127.0.0.1"],
            "nx.lifeline.test": "nxdomain",
            "sf.lifeline.test": "servfail",
            "refused.lifeline.test": "refused",
        }
    ).start()
    yield server
    await server.close()


@pytest.mark.parametrize(
    ("name", "number", "text"),
    [
        ("ok.lifeline.test", 0, "NOERROR"),
        ("sf.lifeline.test", 2, "SERVFAIL"),
        ("nx.lifeline.test", 3, "NXDOMAIN"),
        ("refused.lifeline.test", 5, "REFUSED"),
    ],
)
async def test_each_answer_keeps_its_rcode_as_a_number(
    resolver: FakeDNS, validator: jsonschema.Draft202012Validator, name: str, number: int,
    text: str,
) -> None:  # fmt: skip
    net = VantageNet(vantage(resolver.port), ca_file=None)
    try:
        rec = await dns_stage(context(net, f"dns://{name}"))
    finally:
        await net.aclose()
    a = next(q for q in rec.queries if q.qtype == "A")
    assert (a.rcode, a.rcode_number) == (text, number)
    record = record_of(rec)
    assert record["stages"]["dns"]["queries"][0]["rcode_number"] == number
    assert validator.is_valid(record), [e.message for e in validator.iter_errors(record)]
    again = Result.from_dict(json.loads(json.dumps(record))).measurement.record(DNSStage)
    assert again is not None and again.queries[0].rcode_number == number


async def test_no_reply_has_no_rcode_number(resolver: FakeDNS) -> None:
    net = VantageNet(vantage(closed_udp_port()), ca_file=None)
    try:
        rec = await dns_stage(context(net, "dns://ok.lifeline.test", timeout=1.2))
    finally:
        await net.aclose()
    assert rec.failure == Failure.TIMEOUT or not rec.ok
    assert all(q.rcode_number is None for q in rec.queries)


def test_a_record_without_the_new_fields_still_loads() -> None:
    """A log line written before these fields existed loads with their defaults."""
    old = {
        "schema": "lifeline.measurement/2", "service": "s", "target": "https://x.test/",
        "vantage": "v", "verdict": "ok", "reason": "fine", "time": "2026-01-01T00:00:00Z",
        "duration_s": 0.1, "error": None, "expect_status": [], "throughput": False,
        "lifeline_version": "0.1", "control": None,
        "stages": {
            "dns": {
                "ok": True, "failure": None, "duration_s": 0.01, "name": "x.test",
                "resolver": "udp://127.0.0.1:53", "addresses": ["127.0.0.1"], "skipped": False,
                "queries": [{"qtype": "A", "ok": True, "failure": None, "rcode": "NOERROR",
                             "answers": [{"rtype": "A", "value": "127.0.0.1", "ttl": 60}],
                             "duration_s": 0.01}],
            },
            "tcp": None, "http": None,
            "tls": {
                "ok": True, "failure": None, "duration_s": 0.02, "address": "127.0.0.1",
                "server_name": "x.test", "version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256",
                "alpn": None, "certificate": None, "bytes_received": 900,
            },
        },
    }  # fmt: skip
    m = Result.from_dict(old).measurement
    dns = m.record(DNSStage)
    assert dns is not None and dns.queries[0].rcode_number is None
    assert dns.queries[0].rcode == "NOERROR"
    assert dns.queries[0].later_responses == [] and not dns.queries[0].injected
    assert not dns.injection and dns.listen_s is None
    tls = m.record(TLSStage)
    assert tls is not None and tls.chain == [] and not tls.chain_truncated
    assert judge(dns)[0] == Verdict.OK  # no injection read into a record without the evidence


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


# --- DNS injection: a forged reply first, the real one after it ---------------------

HOST = "blocked.lifeline.test"
FORGED, REAL = "127.0.0.66", "127.0.0.1"


class _Injector(asyncio.DatagramProtocol):
    """A resolver with an injector on the path: for each A question, ``first`` at once
    (from the resolver's own address and port, as an on-path forger spoofs it), then
    ``then`` a little later. AAAA gets one honest empty reply. ``then`` None: one reply."""

    def __init__(self, first: str | None, then: str | None, later_s: float = 0.05) -> None:
        self.first, self.then, self.later_s = first, then, later_s
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def reply(self, query: dns.message.Message, address: str | None) -> bytes:
        response = dns.message.make_response(query)
        if address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif query.question[0].rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(HOST + ".", 60, "IN", "A", address))
        return response.to_wire()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        query = dns.message.from_wire(data)
        if query.question[0].rdtype != dns.rdatatype.A:
            self.transport.sendto(self.reply(query, REAL), addr)
            return
        self.transport.sendto(self.reply(query, self.first), addr)
        if self.then is not None or self.first is None:
            later = self.reply(query, self.then)
            handle = asyncio.get_running_loop().call_later(
                self.later_s, self.transport.sendto, later, addr
            )
            self.pending.append(handle)


async def measure_dns(
    first: str | None, then: str | None, *, window: float = 1.0, later_s: float = 0.05
) -> DNSStage:
    loop = asyncio.get_running_loop()
    injector = _Injector(first, then, later_s)
    transport, _ = await loop.create_datagram_endpoint(lambda: injector, local_addr=(LOOPBACK, 0))
    net = VantageNet(
        vantage(transport.get_extra_info("sockname")[1], dns_window=window), ca_file=None
    )
    ctx = context(net, f"https://{HOST}/")
    try:
        rec = await dns_stage(ctx)
        await ctx.settle()  # what measure() does once the later stages are done
        return rec
    finally:
        await ctx.abandon()
        await net.aclose()
        for handle in injector.pending:
            handle.cancel()
        transport.close()


def judge(dns: DNSStage, control: Measurement | None = None) -> tuple[Verdict, str]:
    """The verdict of a dns:// measurement of HOST that saw ``dns``."""
    m = Measurement(target=f"dns://{HOST}", vantage="v", time="2026-01-01T00:00:00Z", dns=dns)
    j = classify(
        m, control=control, canaries=(), fingerprints=FingerprintSet.build(), throttle_ratio=0.25
    )
    return j.verdict, j.reason


async def test_a_forged_then_real_pair_is_recorded_and_judged_dns_injection(
    validator: jsonschema.Draft202012Validator,
) -> None:
    rec = await measure_dns(FORGED, REAL)
    a = next(q for q in rec.queries if q.qtype == "A")
    assert [x.value for x in a.answers] == [FORGED]  # the stage uses the first, as a stub would
    assert rec.addresses == [FORGED]
    assert [[x.value for x in r.answers] for r in a.later_responses] == [[REAL]]
    assert a.later_responses[0].rcode == "NOERROR" and a.later_responses[0].rcode_number == 0
    assert a.later_responses[0].after_s > 0
    assert a.injected and rec.injection
    assert rec.listen_s is not None
    record = record_of(rec)
    assert validator.is_valid(record), [e.message for e in validator.iter_errors(record)]
    again = Result.from_dict(json.loads(json.dumps(record))).measurement.record(DNSStage)
    assert again == rec  # the later replies survive the log

    verdict, reason = judge(rec)  # no control at all: the pair is the evidence
    assert verdict == Verdict.DNS_BLOCKED
    assert "injection" in reason and FORGED in reason and REAL in reason
    assert reason.index(FORGED) < reason.index(REAL)


async def test_a_forged_nxdomain_then_the_real_answer_is_injection() -> None:
    rec = await measure_dns(None, REAL)
    a = next(q for q in rec.queries if q.qtype == "A")
    assert a.rcode_number == 3 and a.injected
    verdict, reason = judge(rec)
    assert verdict == Verdict.DNS_BLOCKED and "NXDOMAIN" in reason and REAL in reason


async def test_the_same_answer_twice_is_recorded_but_not_injection() -> None:
    rec = await measure_dns(REAL, REAL)
    a = next(q for q in rec.queries if q.qtype == "A")
    assert len(a.later_responses) == 1 and not a.injected and not rec.injection
    assert judge(rec)[0] != Verdict.DNS_BLOCKED


async def test_one_honest_reply_is_kept_and_the_window_is_not_counted_as_latency() -> None:
    started = time.monotonic()
    rec = await measure_dns(REAL, None, window=0.2)
    elapsed = time.monotonic() - started
    a = next(q for q in rec.queries if q.qtype == "A")
    assert rec.ok and a.later_responses == [] and not rec.injection
    assert rec.listen_s is not None  # it listened, and heard nothing more
    # the window is not DNS latency: the stage's duration ends when the answers were in
    assert rec.duration_s + rec.listen_s <= elapsed
    assert all(q.duration_s <= rec.duration_s for q in rec.queries)


async def test_window_zero_turns_the_listening_off() -> None:
    rec = await measure_dns(FORGED, REAL, window=0.0, later_s=0.0)
    assert rec.listen_s is None and not rec.injection
    assert all(q.later_responses == [] for q in rec.queries)


async def test_no_listening_over_tcp() -> None:
    server = await FakeDNS({HOST: [f"A {REAL}"]}).start()
    spec = ResolverSpec("tcp", LOOPBACK, server.port)
    net = VantageNet(Vantage("v", spec, dns_window=1.0), ca_file=None)
    try:
        rec = await dns_stage(context(net, f"dns://{HOST}"))
    finally:
        await net.aclose()
        await server.close()
    assert rec.ok and rec.listen_s is None and not rec.injection


async def test_the_control_seeing_the_first_answer_makes_it_no_injection() -> None:
    rec = await measure_dns(FORGED, REAL)
    ctl_dns = DNSStage(True, None, 0.01, HOST, "udp://127.0.0.1:53", addresses=[FORGED])
    control = Measurement(
        target=f"dns://{HOST}", vantage="control", time="2026-01-01T00:00:00Z", dns=ctl_dns
    )
    verdict, reason = judge(rec, control)
    assert verdict == Verdict.OK and "injection" not in reason


async def test_the_window_runs_beside_the_later_stages() -> None:
    """A real reply that comes only once the page was asked for is still recorded: the
    window does not hold TCP, TLS and HTTP back, and the measurement waits for it."""
    from aiohttp import web

    from probes.measure import measure

    asked = asyncio.Event()

    async def page(request: web.Request) -> web.Response:
        asked.set()
        return web.Response(text="block page")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, REAL, 0)
    await site.start()
    port = runner.addresses[0][1]

    loop = asyncio.get_running_loop()
    injector = _Injector(REAL, None)  # the forged answer points at the page above
    transport, _ = await loop.create_datagram_endpoint(lambda: injector, local_addr=(LOOPBACK, 0))
    sends: list[asyncio.Task[None]] = []

    def answer_later(query: dns.message.Message, addr: tuple[str, int]) -> None:
        async def send() -> None:
            await asyncio.wait_for(asked.wait(), 10)
            assert injector.transport is not None
            injector.transport.sendto(injector.reply(query, "127.0.0.2"), addr)

        sends.append(asyncio.ensure_future(send()))

    received = injector.datagram_received

    def datagram_received(data: bytes, addr: tuple[str, int]) -> None:
        received(data, addr)
        query = dns.message.from_wire(data)
        if query.question[0].rdtype == dns.rdatatype.A:
            answer_later(query, addr)

    injector.datagram_received = datagram_received  # type: ignore[method-assign]
    dns_port = transport.get_extra_info("sockname")[1]
    v = vantage(dns_port, dns_window=2.0)
    net = VantageNet(v, ca_file=None)
    try:
        m = await measure(
            Target.parse(f"http://{HOST}:{port}/"), v, net, timeout=8.0, max_body_bytes=1 << 16
        )
    finally:
        await net.aclose()
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        transport.close()
        await runner.cleanup()
    assert m.error is None and asked.is_set()
    rec = m.record(DNSStage)
    assert rec is not None and rec.addresses == [REAL]
    a = next(q for q in rec.queries if q.qtype == "A")
    assert [[x.value for x in r.answers] for r in a.later_responses] == [["127.0.0.2"]]
    assert a.injected and rec.injection


def test_dns_window_in_the_config() -> None:
    def config(window: str) -> str:
        return (
            "version: 1\nvantages:\n  - name: v\n    resolver: 127.0.0.1:5353\n"
            f"    dns_window: {window}\nservices:\n  - name: s\n    targets: [dns://x.test]\n"
        )

    assert parse_config(config("500ms"), source="t").vantages[0].dns_window == 0.5
    assert parse_config(config("0"), source="t").vantages[0].dns_window == 0.0
    default = parse_config(config("0.3"), source="t").vantages[0].dns_window
    assert default == Vantage("v", ResolverSpec("udp", LOOPBACK, 53)).dns_window == 0.3
    with pytest.raises(Exception, match="dns_window"):
        parse_config(config("1m"), source="t")


# --- the peer's certificate chain -----------------------------------------------------


async def tls_record(context_: ssl.SSLContext, ca_file: str) -> TLSStage:
    """DNS, TCP and TLS to a fake web server on loopback serving ``context_``."""
    resolver = await FakeDNS({HOST: [f"A {REAL}"]}).start()
    web = await FakeWeb(ssl_context=context_).start()
    net = VantageNet(vantage(resolver.port), ca_file=ca_file)
    ctx = context(net, f"tls://{HOST}:{web.port}")
    try:
        ctx.measurement.dns = await dns_stage(ctx)
        ctx.measurement.tcp = await tcp_stage(ctx)
        return await tls_stage(ctx)
    finally:
        ctx.close()
        await net.aclose()
        await web.close()
        await resolver.close()


def served(tmp_path: Path) -> tuple[CA, ssl.SSLContext, Path, Path]:
    """A CA, a server context with its leaf for HOST, the leaf's file, leaf + CA in one file."""
    ca = CA.create(tmp_path)
    server = ca.server_context(tmp_path, [HOST])
    (leaf_file,) = tmp_path.glob("leaf-*.crt")
    chain_file = tmp_path / "chain.crt"
    chain_file.write_bytes(leaf_file.read_bytes() + ca.pem_path.read_bytes())
    return ca, server, leaf_file, chain_file


def pem_ders(path: Path) -> list[bytes]:
    return [
        c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(path.read_bytes())
    ]


async def test_tls_keeps_the_leaf_der_of_the_served_certificate(
    tmp_path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    ca, server, leaf_file, _ = served(tmp_path)
    rec = await tls_record(server, str(ca.pem_path))
    assert rec.ok and rec.chain and not rec.chain_truncated
    assert base64.b64decode(rec.chain[0]) == pem_ders(leaf_file)[0]
    m = Measurement(target="tls://x", vantage="v", time="2026-01-01T00:00:00Z", tls=rec)
    record = Result(m, Verdict.OK, "test").to_dict()
    assert validator.is_valid(record), [e.message for e in validator.iter_errors(record)]
    assert Result.from_dict(json.loads(json.dumps(record))).measurement.record(TLSStage) == rec
    ooni = _ooni_tls(rec, None, 0.0)[0]  # the OONI export's peer_certificates carry it
    assert ooni["peer_certificates"][0] == {"format": "base64", "data": rec.chain[0]}


async def test_tls_keeps_the_whole_chain_the_server_sends_leaf_first(tmp_path: Path) -> None:
    ca, _, leaf_file, chain_file = served(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain_file, leaf_file.with_suffix(".key"))
    server.set_alpn_protocols(["http/1.1"])
    rec = await tls_record(server, str(ca.pem_path))
    assert rec.ok
    sent = pem_ders(chain_file)
    if sys.version_info < (3, 13) and not hasattr(ssl.SSLObject, "get_unverified_chain"):
        # 3.11/3.12 read the private twin; where it is missing only the leaf is kept
        assert [base64.b64decode(c) for c in rec.chain][:1] == sent[:1]
    if len(rec.chain) > 1 or sys.version_info >= (3, 13):
        assert [base64.b64decode(c) for c in rec.chain] == sent


def test_the_chain_is_bounded() -> None:
    class Fake:
        def get_unverified_chain(self) -> list[bytes]:
            return [bytes([i]) * 10_000 for i in range(20)]

    chain, truncated = peer_chain(Fake(), None)  # type: ignore[arg-type]
    assert truncated and 0 < len(chain) <= MAX_CHAIN
    assert sum(len(base64.b64decode(c)) for c in chain) <= MAX_CHAIN_BYTES
