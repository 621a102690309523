"""Evidence the DNS and TLS stages keep for re-judging (issue 15): the numeric rcode,
every later response to a query (DNS injection), the peer's certificate chain.

Every resolver and server here is a fake on 127.0.0.1: the system resolver is
never asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from probes.deadline import Deadline
from probes.dns import dns_stage
from probes.failures import Failure
from probes.model import ResolverSpec, Target, Vantage
from probes.net import StageContext, VantageNet
from probes.records import DNSStage, Measurement, Result, Verdict
from tests.fakes import LOOPBACK, FakeDNS

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


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound, then released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port
