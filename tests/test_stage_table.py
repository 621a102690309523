"""The stage table is the one place a stage is declared.

A stage written here, in the test, and added as one row flows through a real
measurement (on loopback), the record's JSON round trip (nested records
included) and the classifier, which names the row's verdict and label.
Nothing else in the tree is told about it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from probes.classify import Judgement, classify
from probes.failures import Failure
from probes.fingerprints import FingerprintSet
from probes.measure import measure
from probes.model import Fingerprints, ResolverSpec, Target, Vantage
from probes.net import StageContext, VantageNet
from probes.records import SCHEMA, Measurement, Result, TCPStage, Verdict
from probes.stages import STAGES, Stage
from tests.fakes import LOOPBACK, closed_port

T0 = "2026-12-03T12:00:00.000000Z"


def judge(m: Measurement, control: Measurement | None) -> Judgement:
    return classify(
        m,
        control=control,
        canaries=(),
        fingerprints=FingerprintSet.build(Fingerprints()),
        throttle_ratio=0.1,
    )


@dataclass(slots=True)
class BannerLine:
    text: str
    length: int


@dataclass(slots=True)
class BannerStage:
    """What a server says first, once connected (a made-up stage for this test)."""

    ok: bool
    failure: str | None
    duration_s: float
    lines: list[BannerLine] = field(default_factory=list)


async def banner_stage(ctx: StageContext) -> BannerStage:
    """Read the first line the server sends on the connection the TCP stage opened."""
    conn = ctx.connection
    assert conn is not None, "the TCP stage leaves its connection open"
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        data = await asyncio.wait_for(loop.sock_recv(conn.sock, 200), ctx.deadline.remaining())
    except TimeoutError:
        return BannerStage(False, Failure.TIMEOUT, loop.time() - started)
    if not data:
        return BannerStage(False, Failure.EOF, loop.time() - started)
    text = data.decode(errors="replace").strip()
    return BannerStage(True, None, loop.time() - started, [BannerLine(text, len(text))])


BANNER = Stage(
    "banner", "Banner", BannerStage, banner_stage, Verdict.TCP_BLOCKED, frozenset({"tcp"})
)


@pytest.fixture
def banner_row() -> object:
    with STAGES.extended(BANNER, after="tcp") as row:
        yield row


async def _server(greeting: bytes) -> AsyncIterator[int]:
    async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting:
            writer.write(greeting)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def greeting_port() -> AsyncIterator[int]:
    async for port in _server(b"HELLO lifeline\r\n"):
        yield port


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    async for port in _server(b""):
        yield port


async def _measure(url: str, vantage: str = "v") -> Measurement:
    # an IP-literal target: the DNS stage asks no resolver (none listens on this port)
    v = Vantage(vantage, ResolverSpec("udp", LOOPBACK, closed_port()))
    net = VantageNet(v, ca_file=None)
    try:
        return await measure(Target.parse(url), v, net, timeout=3, max_body_bytes=1000)
    finally:
        await net.aclose()


async def test_a_stage_added_as_one_row_is_measured(banner_row: object, greeting_port: int) -> None:
    m = await _measure(f"tcp://{LOOPBACK}:{greeting_port}")
    assert list(m.stages) == ["dns", "tcp", "banner"]
    rec = m.record(BannerStage)
    assert rec is not None and rec.ok, rec
    assert rec.lines == [BannerLine("HELLO lifeline", 14)]
    assert m.succeeded and m.first_failure() is None


async def test_its_record_round_trips_through_json(banner_row: object, greeting_port: int) -> None:
    m = await _measure(f"tcp://{LOOPBACK}:{greeting_port}")
    ctl = await _measure(f"tcp://{LOOPBACK}:{greeting_port}", "control")
    result = Result(m, Verdict.OK, "fine", control=ctl, version="test")
    wire = json.loads(json.dumps(result.to_dict()))
    assert wire["schema"] == SCHEMA
    assert list(wire["stages"]) == ["dns", "tcp", "banner", "tls", "http"]
    assert wire["stages"]["banner"]["lines"] == [{"text": "HELLO lifeline", "length": 14}]
    # one shape for a measurement: the control keeps its stages under "stages" too
    assert wire["control"]["stages"]["banner"]["lines"][0]["text"] == "HELLO lifeline"
    back = Result.from_dict(wire)
    assert back == result
    assert isinstance(back.measurement.stages["banner"].lines[0], BannerLine)


async def test_the_classifier_names_its_verdict_and_label(
    banner_row: object, greeting_port: int, silent_port: int
) -> None:
    ctl = await _measure(f"tcp://{LOOPBACK}:{greeting_port}", "control")
    m = await _measure(f"tcp://{LOOPBACK}:{silent_port}")
    m.target = ctl.target  # the same target, seen from two vantages
    assert m.first_failure() == ("banner", Failure.EOF)
    judgement = judge(m, ctl)
    assert judgement.verdict is Verdict.TCP_BLOCKED, judgement
    assert "Banner failed with eof_error" in judgement.reason, judgement.reason
    assert "control" in judgement.reason
    # the same failure at the control as well is an outage, not blocking
    both = judge(m, m)
    assert both.verdict is Verdict.SERVICE_DOWN, both


def test_a_measurement_missing_the_last_stage_is_not_ok(banner_row: object) -> None:
    """The classifier knows from the table that a tcp target now ends with the banner."""
    tcp = TCPStage(ok=True, failure=None, duration_s=0.01, address=LOOPBACK, port=1)
    m = Measurement(f"tcp://{LOOPBACK}:1", "v", T0, tcp=tcp)
    assert judge(m, None).verdict is not Verdict.OK


def test_the_table_is_restored_after_the_block() -> None:
    with STAGES.extended(BANNER, after="tcp"):
        assert STAGES.names == ("dns", "tcp", "banner", "tls", "http")
        assert [s.name for s in STAGES.for_scheme("tcp")] == ["dns", "tcp", "banner"]
    assert STAGES.names == ("dns", "tcp", "tls", "http")
    assert [s.name for s in STAGES.for_scheme("tcp")] == ["dns", "tcp"]
    with pytest.raises(ValueError, match="unique"):
        with STAGES.extended(STAGES["dns"]):
            pass


def test_the_json_schema_lists_the_tables_stages() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"
    schema = json.loads(path.read_text())
    stages = schema["$defs"]["stages"]
    assert list(stages["properties"]) == list(STAGES.names)
    assert stages["required"] == list(STAGES.names)
    for name, prop in stages["properties"].items():
        refs = [alt["$ref"] for alt in prop["oneOf"] if "$ref" in alt]
        assert refs == [f"#/$defs/{name}"] and name in schema["$defs"], name
    # the record's own stages and the control's are the one definition
    assert schema["properties"]["stages"] == {"$ref": "#/$defs/stages"}
    assert schema["$defs"]["measurement"]["properties"]["stages"] == {"$ref": "#/$defs/stages"}
