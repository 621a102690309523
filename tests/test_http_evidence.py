"""What the HTTP record keeps for re-judging: every header (capped), a 64 KiB head,
each redirect hop's headers, title and body hash; and that it fits the JSON Schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web

from probes.http import MAX_HEADER_VALUE, MAX_HEADERS_TOTAL
from probes.measure import measure
from probes.model import ResolverSpec, Target, Vantage
from probes.net import VantageNet
from probes.records import Result
from probes.verdicts import Verdict
from tests.fakes import LOOPBACK, FakeDNS

pytestmark = pytest.mark.both_loops

HOST = "evidence.lifeline.test"
SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"
HOP_BODY = b"<html><head><title>Moved along</title></head><body>see elsewhere</body></html>"
BIG = b"<html><head><title>Big</title></head><body>" + b"0123456789" * 20_000 + b"</body></html>"


async def _moved(request: web.Request) -> web.Response:
    return web.Response(
        status=302, body=HOP_BODY,
        headers={"Location": "/big", "X-Filter-Id": "hop-7", "Content-Type": "text/html"},
    )  # fmt: skip


async def _big(request: web.Request) -> web.Response:
    headers = {"Content-Type": "text/html", "X-Censor-Mark": "case 42", "Via": "1.1 box"}
    resp = web.Response(body=BIG, headers=headers)
    resp.headers.add("Set-Cookie", "a=1")
    resp.headers.add("Set-Cookie", "b=2")
    return resp


async def _padded(request: web.Request) -> web.Response:
    resp = web.Response(body=b"ok", headers={"Content-Type": "text/plain"})
    for i in range(12):
        resp.headers[f"X-Pad-{i:02d}"] = chr(ord("a") + i) * 7000
    return resp


@pytest.fixture
async def net() -> AsyncIterator[tuple[VantageNet, int]]:
    app = web.Application()
    app.router.add_get("/moved", _moved)
    app.router.add_get("/big", _big)
    app.router.add_get("/padded", _padded)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    port = runner.addresses[0][1]
    dns = await FakeDNS({HOST: ["A 127.0.0.1"]}).start()
    n = VantageNet(Vantage("v", ResolverSpec("udp", LOOPBACK, dns.port)), ca_file=None)
    try:
        yield n, port
    finally:
        await n.aclose()
        await dns.close()
        await runner.cleanup()


async def test_every_header_and_each_hop_is_kept(net: tuple[VantageNet, int]) -> None:
    vnet, port = net
    m = await measure(Target.parse(f"http://{HOST}:{port}/moved"), vnet.vantage, vnet,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    h = m.http
    assert h is not None and h.ok and h.status == 200
    assert h.headers["x-censor-mark"] == "case 42" and h.headers["via"] == "1.1 box"
    assert h.headers["set-cookie"] == "a=1, b=2" and not h.headers_truncated
    [hop] = h.redirects
    assert hop.status == 302 and hop.location == "/big"
    assert hop.headers is not None and hop.headers["x-filter-id"] == "hop-7"
    assert hop.title == "Moved along"
    assert hop.body_length == len(HOP_BODY)
    assert hop.body_sha256 == hashlib.sha256(HOP_BODY).hexdigest()
    # the head is 64 KiB by default, not 2 KiB
    assert h.body_head == BIG[:65_536].decode()
    assert h.body_signatures == [] and h.body_false_positives == []
    # the record, with its new fields, is what the JSON Schema describes
    record = Result(m, Verdict.OK, "fine").to_dict()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(record)))


async def test_the_head_kept_is_configurable(net: tuple[VantageNet, int]) -> None:
    vnet, port = net
    m = await measure(Target.parse(f"http://{HOST}:{port}/big"), vnet.vantage, vnet,
                      timeout=5, max_body_bytes=1 << 20, body_head_bytes=4096)  # fmt: skip
    assert m.http is not None and m.http.body_head == BIG[:4096].decode()
    assert m.http.body_length == len(BIG)


async def test_headers_are_capped_in_total_and_marked(net: tuple[VantageNet, int]) -> None:
    vnet, port = net
    m = await measure(Target.parse(f"http://{HOST}:{port}/padded"), vnet.vantage, vnet,
                      timeout=5, max_body_bytes=1 << 20)  # fmt: skip
    h = m.http
    assert h is not None and h.ok and h.headers_truncated
    assert sum(len(k) + len(v) for k, v in h.headers.items()) <= MAX_HEADERS_TOTAL
    assert all(len(v) <= MAX_HEADER_VALUE for v in h.headers.values())
    assert h.headers["x-pad-00"] == "a" * 7000 and "x-pad-11" not in h.headers


def test_a_records_copy_of_the_control_keeps_a_short_head() -> None:
    """The control's whole head is in the control vantage's own record; the copy of the
    control in every other record keeps 2 KiB of it (what the comparison reads)."""
    from probes.records import CONTROL_BODY_HEAD_CHARS, HTTPStage, Measurement, Result, Verdict

    page = "<title>Home</title>" + "x" * 70_000

    def fetched(vantage: str) -> Measurement:
        m = Measurement(target="https://s.test/", vantage=vantage, time="2026-01-01T00:00:00Z")
        m.http = HTTPStage(
            ok=True, failure=None, duration_s=0.1, url="https://s.test/", status=200,
            title="Home", body_length=len(page), body_head=page,
        )  # fmt: skip
        return m

    control = fetched("control")
    own = Result(control, Verdict.OK, "fine").to_dict()
    assert own["stages"]["http"]["body_head"] == page  # kept whole in its own record
    record = Result(fetched("ir"), Verdict.OK, "fine", control=control).to_dict()
    assert record["stages"]["http"]["body_head"] == page
    copy = record["control"]["stages"]["http"]
    assert copy["body_head"] == page[:CONTROL_BODY_HEAD_CHARS]
    assert (copy["title"], copy["body_length"]) == ("Home", len(page))
    assert control.record(HTTPStage).body_head == page  # type: ignore[union-attr]
