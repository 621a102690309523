"""The built-in lab: it plays the catalogue's censor, stays on loopback, and cleans up."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from probes.lab import Lab, LabThread, run_lab
from probes.lab.clienthello import http_host, sni
from probes.lab.lab import lab_sites
from probes.lab.netutil import BLACKHOLE_S, IDLE_S, MAX_CONNECTION_S, hold
from probes.lab.safety import OutsideLabError, is_lab_address, lab_address
from probes.lab.scenarios import CATALOGUE, VOID_ADDRESS, Kind, Role, expected_verdict

# --- the catalogue, transcribed by hand from the agreed table ----------------------------
# (scenario, kind) -> (control, censored, censored without a control vantage)
_OK3 = ("ok", "ok", "ok")
_GOLDEN: dict[tuple[str, Kind], tuple[str, str, str]] = {
    ("canary", Kind.HTTPS): _OK3,
    **{("open", kind): _OK3 for kind in (Kind.HTTPS, Kind.HTTP, Kind.TLS, Kind.TCP, Kind.DNS)},
    **{("cdn", kind): _OK3 for kind in (Kind.HTTPS, Kind.HTTP, Kind.DNS)},
    **{
        (name, kind): ("ok", "dns_blocked", "unreachable")
        for name in ("dns-nxdomain", "dns-servfail", "dns-silence")
        for kind in (Kind.HTTPS, Kind.DNS)
    },
    ("dns-lie", Kind.HTTPS): ("ok", "dns_blocked", "unreachable"),
    # Without a control the impostor's page is just a page: nothing says it is wrong.
    ("dns-lie", Kind.HTTP): ("ok", "dns_blocked", "ok"),
    ("dns-injected", Kind.HTTPS): ("ok", "dns_blocked", "dns_blocked"),
    ("dns-injected", Kind.DNS): ("ok", "dns_blocked", "dns_blocked"),
    **{
        (name, kind): ("ok", "tcp_blocked", "unreachable")
        for name in ("tcp-refused", "tcp-reset", "tcp-blackhole")
        for kind in (Kind.HTTPS, Kind.TCP)
    },
    **{
        (name, kind): ("ok", "tls_blocked", "unreachable")
        for name in ("tls-sni-reset", "tls-sni-stall")
        for kind in (Kind.HTTPS, Kind.TLS)
    },
    ("http-blockpage", Kind.HTTP): ("ok", "http_blocked", "http_blocked"),
    ("http-451", Kind.HTTP): ("ok", "http_blocked", "http_blocked"),
    ("http-reset", Kind.HTTP): ("ok", "http_blocked", "unreachable"),
    ("throttle", Kind.HTTPS): _OK3,
    ("throttle", Kind.ASSET): ("ok", "throttled", "ok"),
    ("geo", Kind.HTTPS): ("ok", "anomaly", "ok"),
    ("geo", Kind.HTTP): ("ok", "anomaly", "ok"),
    **{
        (name, kind): ("service_down", "service_down", "unreachable")
        for name, kinds in (
            ("down-nolisten", (Kind.HTTPS, Kind.TCP)),
            ("down-nxdomain", (Kind.HTTPS, Kind.DNS)),
        )
        for kind in kinds
    },
}


def test_expected_verdicts_match_the_catalogue_table() -> None:
    derived = {}
    for entry in CATALOGUE:
        rules = dict(entry.rules)
        for kind in entry.kinds:
            control = expected_verdict(kind, entry.origin, rules, Role.CONTROL, with_control=True)
            censored = expected_verdict(kind, entry.origin, rules, Role.CENSORED, with_control=True)
            alone = expected_verdict(kind, entry.origin, rules, Role.CENSORED, with_control=False)
            for with_control in (True, False):
                shutdown = expected_verdict(
                    kind, entry.origin, rules, Role.SHUTDOWN, with_control=with_control
                )
                assert shutdown == "vantage_down"
            derived[(entry.name, kind)] = (control.value, censored.value, alone.value)
    assert derived == _GOLDEN


# --- the safety policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.0.0.66", "127.255.255.254", "::ffff:127.0.0.9"]
)
def test_policy_accepts_loopback(host: str) -> None:
    assert is_lab_address(host)
    assert ipaddress.ip_address(lab_address(host)) in ipaddress.ip_network("127.0.0.0/8")


@pytest.mark.parametrize(
    "host",
    [
        "10.10.34.34",
        "8.8.8.8",
        "0.0.0.0",
        "128.0.0.1",
        "126.255.255.255",
        "::1",
        "::",
        "::ffff:10.10.34.34",
        "d0::11",
        "localhost",
        "open.lifeline.test",
        "",
        "127.0.0.1.nip.io",
    ],
)
def test_policy_refuses_everything_else(host: str) -> None:
    assert not is_lab_address(host)
    with pytest.raises(OutsideLabError):
        lab_address(host)


@given(st.ip_addresses(v=4))
def test_policy_is_exactly_127_slash_8(address: ipaddress.IPv4Address) -> None:
    assert is_lab_address(str(address)) == (address.packed[0] == 127)


# --- the DPI parsers ----------------------------------------------------------------------


def _client_hello(server_name: str | None) -> bytes:
    """The bytes a real TLS client sends first (no network: memory BIOs)."""
    context = ssl.create_default_context()
    context.check_hostname = server_name is not None
    context.verify_mode = ssl.CERT_REQUIRED if server_name else ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_sni_of_a_real_client_hello() -> None:
    hello = _client_hello("Throttle.lifeline.test")
    assert sni(hello) == "throttle.lifeline.test"
    assert sni(_client_hello(None)) is None


def test_sni_of_truncated_hellos_never_raises() -> None:
    hello = _client_hello("tls-sni-reset.lifeline.test")
    for end in range(len(hello)):
        assert sni(hello[:end]) in (None, "tls-sni-reset.lifeline.test")


@given(st.binary(max_size=600))
def test_sni_of_garbage_is_none_or_text(data: bytes) -> None:
    result = sni(b"\x16\x03\x01" + data)
    assert result is None or isinstance(result, str)


def test_http_host() -> None:
    request = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHOST: Http-451.lifeline.test:8080\r\n\r\n"
    assert http_host(request) == "http-451.lifeline.test"
    assert http_host(b"\x16\x03\x01garbage") is None
    assert http_host(b"GET / HTTP/1.1\r\n\r\n") is None


# --- bounds ---------------------------------------------------------------------------------


def test_bounds_are_finite_and_the_void_stays_empty() -> None:
    assert BLACKHOLE_S <= 60 and IDLE_S <= 60 and MAX_CONNECTION_S <= 300
    assert VOID_ADDRESS not in {site.address for site in lab_sites()}


async def test_hold_lets_go_after_its_bound() -> None:
    """A black hole swallows input, never answers, and ends on its own."""
    server_side: list[asyncio.StreamWriter] = []
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_side.append(writer)
        await hold(reader, 0.2)
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.read(10) == b""  # nothing came back, then the connection ended
    await done.wait()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


# --- the running lab ----------------------------------------------------------------------


def test_every_socket_is_on_loopback(lab: LabThread) -> None:
    bound = lab.listening()
    assert bound
    assert all(is_lab_address(item.address) for item in bound)
    ports = lab.endpoints
    assert ("127.0.0.1", ports.censor_resolver, "udp") in [tuple(b) for b in bound]
    assert ("127.0.0.1", ports.censor_resolver, "tcp") in [tuple(b) for b in bound]
    assert ("127.0.0.66", ports.https_port, "tcp") in [tuple(b) for b in bound]


def test_both_catalogues_are_written(lab: LabThread) -> None:
    config = yaml.safe_load(lab.config_path.read_text())
    assert config["defaults"] == {
        "interval": "15s",
        "timeout": "4s",
        "ca_file": str(lab.directory / "ca.pem"),
    }
    assert Path(config["defaults"]["ca_file"]).read_bytes().startswith(b"-----BEGIN CERT")
    assert config["storage"]["dir"] == str(lab.directory / "data")
    assert config["fingerprints"]["dns_addresses"] == ["127.0.0.66"]
    assert [v["name"] for v in config["vantages"]] == ["control", "censored", "shutdown"]
    censored = config["vantages"][1]
    assert censored["proxy"] == f"socks5://127.0.0.1:{lab.endpoints.middlebox}"
    assert json.loads(lab.expected_path.read_text()) == lab.expected

    targets = set(config["canaries"])
    for service in config["services"]:
        targets |= {t if isinstance(t, str) else t["url"] for t in service["targets"]}
    assert {row["target"] for row in lab.expected} == targets
    assert len(lab.expected) == 3 * len(targets)
    asset = f"https://throttle.lifeline.test:{lab.endpoints.https_port}/asset.bin"
    assert {"url": asset, "throughput": True} in config["services"][-4]["targets"]
    assert {
        "service": "canaries",
        "target": config["canaries"][0],
        "vantage": "censored",
        "verdict": "ok",
    } in lab.expected

    alone = yaml.safe_load(lab.nocontrol_config_path.read_text())
    assert [v["name"] for v in alone["vantages"]] == ["censored", "shutdown"]
    rows = json.loads((lab.directory / "expected-nocontrol.json").read_text())
    assert {row["vantage"] for row in rows} == {"censored", "shutdown"}
    assert len(rows) == 2 * len(targets)


async def _censor_a(lab: LabThread, name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(
        query, "127.0.0.1", port=lab.endpoints.censor_resolver, timeout=10
    )


def _verdict(lab: LabThread, target: str, vantage: str) -> str:
    return next(
        row["verdict"]
        for row in lab.expected
        if row["target"] == target and row["vantage"] == vantage
    )


async def test_a_rule_flip_changes_behaviour_and_expectation(lab: LabThread) -> None:
    target = "dns://open.lifeline.test"
    before = await _censor_a(lab, "open.lifeline.test")
    assert before.rcode() == dns.rcode.NOERROR and before.answer
    assert _verdict(lab, target, "censored") == "ok"
    with lab.rule("open", "dns", "nxdomain"):
        during = await _censor_a(lab, "open.lifeline.test")
        assert during.rcode() == dns.rcode.NXDOMAIN
        assert _verdict(lab, target, "censored") == "dns_blocked"
        assert _verdict(lab, target, "control") == "ok"
        written = json.loads(lab.expected_path.read_text())
        assert {
            "service": "open",
            "target": target,
            "vantage": "censored",
            "verdict": "dns_blocked",
        } in written
    after = await _censor_a(lab, "open.lifeline.test")
    assert after.rcode() == dns.rcode.NOERROR and after.answer
    assert _verdict(lab, target, "censored") == "ok"


async def test_the_admin_endpoint_flips_rules(lab: LabThread) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{lab.admin_url}/rules"
        async with session.put(url, json={"scenario": "geo", "dns": "servfail"}) as response:
            assert response.status == 200
            assert (await response.json())["rules"]["geo"]["dns"] == "servfail"
        try:
            flipped = await _censor_a(lab, "geo.lifeline.test")
            assert flipped.rcode() == dns.rcode.SERVFAIL
        finally:
            async with session.delete(url, json={"scenario": "geo"}) as response:
                assert response.status == 200
        assert (await _censor_a(lab, "geo.lifeline.test")).answer
        for bad in (
            {"scenario": "geo", "dns": "explode"},
            {"scenario": "nope", "dns": "lie"},
            {"scenario": "canary", "tls": "reset"},
            {"dns": "lie"},
        ):
            async with session.put(url, json=bad) as response:
                assert response.status == 400
                assert "error" in await response.json()
        async with session.get(f"{lab.admin_url}/expected") as response:
            assert await response.json() == lab.expected


def test_rule_flips_are_validated(lab: LabThread) -> None:
    with pytest.raises(ValueError, match="replica"):
        lab.set_rule("open", "dns", "replica")
    with pytest.raises(ValueError, match="layer"):
        lab.set_rule("open", "bgp", "withdraw")
    assert "open" not in lab.rules()


async def test_start_and_stop_leave_nothing_behind(tmp_path: Path) -> None:
    """Even with connections held open (a black hole, a stalled handshake), stop() ends all."""
    before = asyncio.all_tasks()
    lab = Lab(tmp_path)
    await lab.start()
    ports = lab.endpoints
    assert ports is not None
    held = []
    for payload in (b"\x05\x01\x00", b""):  # a half-done SOCKS greeting; a silent client
        held.append(await asyncio.open_connection("127.0.0.1", ports.middlebox))
        held[-1][1].write(payload)
    held.append(await asyncio.open_connection("127.0.0.1", ports.mute_proxy))
    held.append(await asyncio.open_connection("127.0.0.1", ports.mute_resolver))
    await asyncio.sleep(0.1)
    await lab.stop()
    for reader, writer in held:
        assert await reader.read() in (b"", b"\x05\x00")  # closed by the lab
        writer.close()
        await writer.wait_closed()
    assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
    for item in lab.listening():
        if item.proto == "tcp":
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((item.address, item.port), timeout=5).close()


def test_lab_thread_stops_cleanly(tmp_path: Path) -> None:
    with LabThread(tmp_path, with_control=False) as running:
        assert running.config_path.name == "config-nocontrol.yaml"
        assert {row["vantage"] for row in running.expected} == {"censored", "shutdown"}
        thread = running._thread
        port = running.endpoints.middlebox
    assert thread is not None and not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_the_selftest_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_lab(tmp_path, selftest=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("selftest: ") and lines[-1].endswith(" passed, 0 failed")
    assert not [line for line in lines if line.startswith("FAIL")]


async def test_a_fixed_resolver_replays_each_reply_with_the_next_query_id() -> None:
    """The benchmark's resolver makes a reply once per question; every answer still
    carries its own query's ID and question (a client checks both)."""
    import dns.rdatatype

    from probes.lab.dnsserver import DNSServer
    from probes.lab.rules import DNSReply

    asked: list[str] = []

    def policy(name: str) -> DNSReply:
        asked.append(name)
        found = name == "a.bench.test"
        return DNSReply(address="127.9.0.1") if found else DNSReply(rcode="NXDOMAIN")

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", udp.getsockname()[1]))
    server = DNSServer(udp, tcp, policy, fixed=True)
    await server.start()
    try:
        for _ in range(3):
            for name, rcode in (("a.bench.test", 0), ("b.bench.test", 3)):
                q = dns.message.make_query(name, dns.rdatatype.A)
                r = await dns.asyncquery.udp(q, server.address, port=server.port, timeout=2)
                assert r.id == q.id and r.question == q.question and r.rcode() == rcode
                assert bool(r.answer) == (name == "a.bench.test")
    finally:
        await server.close()
    assert asked == ["a.bench.test", "b.bench.test"]  # each reply made once
