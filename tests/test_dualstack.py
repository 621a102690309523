"""Dual stack on loopback: Happy Eyeballs, per-family source addresses, and the
families a vantage cannot use (issue 15).

127.0.0.1 and ::1 are both loopback here. A family's path is made broken by
what listens on its address: nothing (refused), or a listener whose accept
queue is full, so that its SYNs are dropped and a connect hangs (a black hole,
as a censor that drops packets makes it). Every vantage resolves through a
fake resolver on 127.0.0.1; the system resolver is never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from probes.failures import Failure
from probes.interfaces import InterfaceAddresses, interface_addresses
from probes.judge import JudgingContext
from probes.measure import measure
from probes.model import ResolverSpec, SourceAddress, Target, Vantage
from probes.net import MeasuredSocket, VantageNet
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    Measurement,
    Result,
    TCPAttempt,
    TCPStage,
    Verdict,
)
from probes.tcp import CONNECTION_ATTEMPT_DELAY_S, eyeballs_order
from tests.fakes import LOOPBACK, FakeDNS

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"
#: The whole measurement's budget: long enough that "after the timeout" and
#: "after the attempt delay" can never be confused on a busy machine.
TIMEOUT = 8.0
_HOSTS = {
    "v4": "127.0.0.1",
    "v4b": "127.0.0.2",
    "v4c": "127.0.0.3",
    "v4d": "127.0.0.4",
    "v4e": "127.0.0.5",
    "v6": "::1",
}


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here"),
    pytest.mark.both_loops,
]


class Paths:
    """One port on several loopback addresses, each ``listen`` (connects), ``hang``
    (a full accept queue: SYNs dropped) or ``closed`` (refused)."""

    def __init__(self, **modes: str) -> None:
        self.modes = modes
        self.sockets: list[socket.socket] = []
        self.listeners: dict[str, socket.socket] = {}
        self.port = 0

    def open(self) -> Paths:
        for _ in range(50):
            try:
                self._bind_all()
                return self
            except OSError:
                self.close()
        raise RuntimeError("no port free on every address")

    def _bind_all(self) -> None:
        port = 0
        for key, mode in self.modes.items():
            host = _HOSTS[key]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            self.sockets.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            if mode == "closed":
                continue  # bound (the port stays ours) but not listening: refused
            sock.listen(0 if mode == "hang" else 16)
            self.listeners[key] = sock
            if mode == "hang":
                self._fill(family, host, port)
        self.port = port

    def _fill(self, family: int, host: str, port: int) -> None:
        """Connections that sit in the accept queue, so that the next SYNs are dropped."""
        for _ in range(3):
            filler = socket.socket(family, socket.SOCK_STREAM)
            self.sockets.append(filler)
            filler.setblocking(False)
            filler.connect_ex((host, port))

    def peer_of_next_accept(self, key: str) -> str:
        """The source address of the first connection that reached ``key``."""
        listener = self.listeners[key]
        listener.settimeout(5)
        conn, peer = listener.accept()
        conn.close()
        return str(peer[0])

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.listeners.clear()


@contextlib.contextmanager
def paths(**modes: str) -> Iterator[Paths]:
    p = Paths(**modes).open()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def resolver() -> AsyncIterator[FakeDNS]:
    server = await FakeDNS(
        {
            "dual.lifeline.test": ["A 127.0.0.1", "AAAA ::1"],
            "v6only.lifeline.test": ["AAAA ::1"],
            "v4only.lifeline.test": ["A 127.0.0.1"],
            "two4.lifeline.test": ["A 127.0.0.2", "A 127.0.0.1"],
            "many.lifeline.test": [f"A 127.0.0.{i}" for i in range(1, 6)] + ["AAAA ::1"],
            "four4.lifeline.test": [f"A 127.0.0.{i}" for i in range(1, 5)] + ["AAAA ::1"],
        }
    ).start()
    yield server
    await server.close()


def vantage(
    dns: FakeDNS, name: str = "v", source: SourceAddress | None = None, every: bool = False
) -> Vantage:
    return Vantage(
        name, ResolverSpec("udp", LOOPBACK, dns.port), source=source, connect_every_address=every
    )


async def measured(v: Vantage, url: str) -> Measurement:
    net = VantageNet(v, ca_file=None)
    try:
        return await measure(Target.parse(url), v, net, timeout=TIMEOUT, max_body_bytes=1000)
    finally:
        await net.aclose()


async def judged(dns: FakeDNS, url: str, source: SourceAddress | None = None) -> Result:
    """``url`` from a vantage bound to ``source``, judged against an unbound control."""
    control = await measured(Vantage("control", ResolverSpec("udp", LOOPBACK, dns.port)), url)
    obs = await measured(vantage(dns, source=source), url)
    return JudgingContext(control="control").judge(obs, control=control, canaries={})


def attempts(tcp: TCPStage | None) -> list[tuple[str, str | None, str | None, str | None]]:
    assert tcp is not None
    return [(a.address, a.family, a.outcome, a.failure) for a in tcp.attempts]


def test_addresses_are_interleaved_ipv6_first() -> None:
    order = eyeballs_order(["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"])
    assert order == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "192.0.2.3"]


async def test_broken_ipv6_stays_ok_and_the_record_shows_ipv6_failed(resolver: FakeDNS) -> None:
    with paths(v6="closed", v4="listen") as p:
        result = await judged(resolver, f"tcp://dual.lifeline.test:{p.port}")
    assert result.verdict == Verdict.OK, result.reason
    assert attempts(result.measurement.record(TCPStage)) == [
        ("::1", "ipv6", "failed", Failure.CONNECTION_REFUSED),
        ("127.0.0.1", "ipv4", "connected", None),
    ]


async def test_blackholed_ipv6_costs_the_attempt_delay_not_the_timeout(
    resolver: FakeDNS,
) -> None:
    with paths(v6="hang", v4="listen") as p:
        result = await judged(resolver, f"tcp://dual.lifeline.test:{p.port}")
    assert result.verdict == Verdict.OK, result.reason
    tcp = result.measurement.record(TCPStage)
    assert attempts(tcp) == [
        ("::1", "ipv6", "cancelled", Failure.INTERRUPTED),  # still trying when IPv4 won
        ("127.0.0.1", "ipv4", "connected", None),
    ]
    assert tcp is not None
    v6, v4 = tcp.attempts
    assert v6.started_s is not None and v4.started_s is not None
    # IPv4 started once the attempt delay had passed, long before the timeout would have
    assert CONNECTION_ATTEMPT_DELAY_S - 0.01 <= v4.started_s - v6.started_s < TIMEOUT / 2
    assert tcp.address == "127.0.0.1"


async def test_blocked_ipv4_is_bypassed_by_ipv6_without_waiting_for_it(
    resolver: FakeDNS,
) -> None:
    with paths(v6="listen", v4="hang") as p:
        result = await judged(resolver, f"tcp://dual.lifeline.test:{p.port}")
    assert result.verdict == Verdict.OK, result.reason
    tcp = result.measurement.record(TCPStage)
    assert tcp is not None and tcp.address == "::1"
    first = tcp.attempts[0]
    assert (first.address, first.outcome) == ("::1", "connected")
    assert first.started_s is not None and first.started_s < TIMEOUT / 2
    assert all(a.outcome != "failed" for a in tcp.attempts)  # IPv4 never waited out


async def test_a_blocked_address_does_not_wait_out_the_timeout(resolver: FakeDNS) -> None:
    """Within one family too: the second address starts after the delay, not the timeout."""
    with paths(v4b="hang", v4="listen") as p:
        result = await judged(resolver, f"tcp://two4.lifeline.test:{p.port}")
    assert result.verdict == Verdict.OK, result.reason
    tcp = result.measurement.record(TCPStage)
    assert attempts(tcp) == [
        ("127.0.0.2", "ipv4", "cancelled", Failure.INTERRUPTED),
        ("127.0.0.1", "ipv4", "connected", None),
    ]
    assert tcp is not None
    second = tcp.attempts[1].started_s
    assert second is not None and CONNECTION_ATTEMPT_DELAY_S - 0.01 <= second < TIMEOUT / 2


async def test_ipv4_bound_vantage_calls_an_ipv6_only_service_no_blocking(
    resolver: FakeDNS,
) -> None:
    with paths(v6="listen") as p:
        result = await judged(
            resolver, f"tcp://v6only.lifeline.test:{p.port}", SourceAddress(ipv4="127.0.0.1")
        )
    assert result.verdict == Verdict.ERROR, result.reason
    assert "IPv6" in result.reason and "not blocking" in result.reason
    tcp = result.measurement.record(TCPStage)
    assert attempts(tcp) == [("::1", "ipv6", "family_unavailable", "address_family_not_supported")]
    assert tcp is not None and set(tcp.families_unavailable) == {"ipv6"}
    assert result.control is not None and result.control.record(TCPStage).ok  # type: ignore[union-attr]


async def test_ipv6_bound_vantage_with_an_ipv4_resolver_is_not_dns_blocked(
    resolver: FakeDNS,
) -> None:
    with paths(v4="listen") as p:
        result = await judged(
            resolver, f"tcp://v4only.lifeline.test:{p.port}", SourceAddress(ipv6="::1")
        )
    assert result.verdict == Verdict.ERROR, result.reason
    dns = result.measurement.dns
    assert dns is not None and dns.failure == "address_family_not_supported"
    assert "not blocking" in result.reason


async def test_ipv4_and_ipv6_source_addresses_bind_each_family(resolver: FakeDNS) -> None:
    """One address per family: IPv4 sockets bind the IPv4 one (seen by the server)."""
    source = SourceAddress(ipv4="127.0.0.2", ipv6="::1")
    with paths(v4="listen") as p:
        obs = await measured(
            vantage(resolver, source=source), f"tcp://v4only.lifeline.test:{p.port}"
        )
        assert obs.tcp is not None and obs.tcp.ok
        assert p.peer_of_next_accept("v4") == "127.0.0.2"
    with paths(v6="listen") as p:
        obs = await measured(
            vantage(resolver, source=source), f"tcp://v6only.lifeline.test:{p.port}"
        )
        assert obs.tcp is not None and obs.tcp.ok and obs.tcp.address == "::1"


async def test_a_vantage_bound_to_an_interface_uses_its_addresses(resolver: FakeDNS) -> None:
    assert (interface_addresses("lo").ipv4, interface_addresses("lo").ipv6) == ("127.0.0.1", "::1")
    with paths(v6="closed", v4="listen") as p:
        obs = await measured(
            vantage(resolver, source=SourceAddress(interface="lo")),
            f"tcp://dual.lifeline.test:{p.port}",
        )
    assert attempts(obs.tcp) == [
        ("::1", "ipv6", "failed", Failure.CONNECTION_REFUSED),
        ("127.0.0.1", "ipv4", "connected", None),
    ]


async def test_a_bound_address_the_host_lacks_is_a_local_limit(resolver: FakeDNS) -> None:
    """A source address this host does not have (192.0.2.77: TEST-NET) cannot be bound:
    the family is unusable here, which is not blocking either."""
    with paths(v4="listen") as p:
        result = await judged(
            resolver, f"tcp://v4only.lifeline.test:{p.port}", SourceAddress(ipv4="192.0.2.77")
        )
    assert result.verdict == Verdict.ERROR, result.reason


async def test_connect_every_address_records_each_address_of_a_failing_target(
    resolver: FakeDNS,
) -> None:
    """Six addresses, all refused: the race tries four, the option connects the other two."""
    modes = dict.fromkeys(["v6", "v4", "v4b", "v4c", "v4d", "v4e"], "closed")
    url_of = "tcp://many.lifeline.test:{}"
    with paths(**modes) as p:
        url = url_of.format(p.port)
        plain = await measured(vantage(resolver), url)
        every = await measured(vantage(resolver, every=True), url)
    assert plain.tcp is not None and every.tcp is not None
    assert plain.tcp.every_address == []
    raced = [a.address for a in every.tcp.attempts]
    assert raced == ["::1", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [(a.address, a.outcome, a.failure) for a in every.tcp.every_address] == [
        ("127.0.0.4", "failed", Failure.CONNECTION_REFUSED),
        ("127.0.0.5", "failed", Failure.CONNECTION_REFUSED),
    ]
    assert not every.tcp.ok and every.tcp.failure == Failure.CONNECTION_REFUSED


async def test_connect_every_address_is_not_run_when_the_target_works(resolver: FakeDNS) -> None:
    with paths(v6="listen", v4="listen") as p:
        obs = await measured(vantage(resolver, every=True), f"tcp://dual.lifeline.test:{p.port}")
    assert obs.tcp is not None and obs.tcp.ok and obs.tcp.every_address == []


async def test_http_goes_on_the_connection_the_race_made(resolver: FakeDNS) -> None:
    """Four A answers and one AAAA: IPv6 wins the race (it starts first), and the HTTP
    request travels on that very connection: one connection per measurement."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    modes = {"v6": "listen", "v4": "closed", "v4b": "closed", "v4c": "closed", "v4d": "closed"}
    with paths(**modes) as p:
        server = await asyncio.start_server(serve, sock=p.listeners["v6"])
        try:
            obs = await measured(vantage(resolver), f"http://four4.lifeline.test:{p.port}/")
        finally:
            server.close()
            await server.wait_closed()
    assert obs.tcp is not None and obs.tcp.address == "::1"
    assert obs.http is not None and obs.http.ok and obs.http.status == 200, obs.http
    assert connections == 1


# --- judging recorded observations (pure) ---------------------------------------------------

_URL = "tcp://v6only.lifeline.test:443"


def _recorded(
    vantage_name: str, *attempts_made: TCPAttempt, every_failed: bool = True
) -> Measurement:
    """A tcp:// measurement whose TCP stage made ``attempts_made`` (DNS answered them)."""
    addresses = list(dict.fromkeys(a.address for a in attempts_made))
    queries = [
        DNSQuery(
            q,
            True,
            None,
            "NOERROR",
            [DNSAnswer(q, a, 60) for a in addresses if (":" in a) == (q == "AAAA")],
        )
        for q in ("A", "AAAA")
    ]
    connected = next((a for a in attempts_made if a.ok), None)
    unavailable = {
        a.family: "no IPv6 source address (source_address: 127.0.0.1)"
        for a in attempts_made
        if a.outcome == "family_unavailable" and a.family
    }
    last = [a for a in attempts_made if a.outcome == "failed"] or list(attempts_made)
    return Measurement(
        target=_URL,
        vantage=vantage_name,
        time="2026-01-01T00:00:00Z",
        dns=DNSStage(
            True,
            None,
            0.01,
            "v6only.lifeline.test",
            "udp://127.0.0.1:53",
            addresses=addresses,
            queries=queries,
        ),
        tcp=TCPStage(
            ok=connected is not None,
            failure=None if connected is not None else last[-1].failure,
            duration_s=0.01,
            attempts=list(attempts_made),
            address=connected.address if connected is not None else None,
            port=443,
            families_unavailable=unavailable,
        ),
    )


_V6_UNUSABLE = TCPAttempt("::1", 443, False, "address_family_not_supported", 0.0, "ipv6", 0.0,
                          "family_unavailable")  # fmt: skip
_V6_OK = TCPAttempt("::1", 443, True, None, 0.001, "ipv6", 0.0, "connected")
_V4_TIMEOUT = TCPAttempt("127.0.0.1", 443, False, Failure.TIMEOUT, 5.0, "ipv4", 0.0, "failed")


def _judge(obs: Measurement, control: Measurement, canaries: list[Measurement] = []) -> Result:  # noqa: B006
    return JudgingContext(control="control").judge(
        obs, control=control, canaries={obs.vantage: canaries}
    )


def test_only_unusable_families_is_error_even_when_every_canary_fails_the_same_way() -> None:
    """The canaries are IPv6-only too: they say nothing about the vantage being down."""
    obs = _recorded("v", _V6_UNUSABLE)
    canary = _recorded("v", _V6_UNUSABLE)
    canary.target = "tcp://canary.lifeline.test:443"
    result = _judge(obs, _recorded("control", _V6_OK), [canary])
    assert result.verdict == Verdict.ERROR, result.reason
    assert "cannot use IPv6" in result.reason and "no IPv6 source address" in result.reason


def test_a_failing_usable_family_is_still_blocking() -> None:
    """IPv6 unusable here, IPv4 tried and timed out while the control connects: that
    IPv4 failure is the path's, and it is judged as before."""
    obs = _recorded("v", _V6_UNUSABLE, _V4_TIMEOUT)
    control = _recorded("control", _V6_OK, TCPAttempt("127.0.0.1", 443, True, None, 0.001))
    result = _judge(obs, control)
    assert result.verdict == Verdict.TCP_BLOCKED, result.reason
    assert obs.tcp is not None and obs.tcp.failure == Failure.TIMEOUT


def test_a_control_that_cannot_use_the_family_is_not_compared_with() -> None:
    """The control is bound to IPv4 and the service is IPv6-only: its failure is no outage."""
    control = _recorded("control", _V6_UNUSABLE)
    reached = _judge(_recorded("v", _V6_OK), control)
    assert reached.verdict == Verdict.OK, reached.reason
    assert "could not measure it" in reached.reason
    timed_out = _judge(_recorded("v", TCPAttempt("::1", 443, False, Failure.TIMEOUT, 5.0)), control)
    assert timed_out.verdict == Verdict.UNREACHABLE, timed_out.reason  # not service_down


# --- the record's shape --------------------------------------------------------------------


async def test_raced_records_validate_and_old_records_still_load(resolver: FakeDNS) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    with paths(v6="hang", v4="listen") as p:
        raced = await judged(resolver, f"tcp://dual.lifeline.test:{p.port}")
    with paths(v6="listen") as p:
        local = await judged(
            resolver, f"tcp://v6only.lifeline.test:{p.port}", SourceAddress(ipv4="127.0.0.1")
        )
    for result in (raced, local):
        record = result.to_dict()
        assert [e.message for e in validator.iter_errors(record)] == []
        assert Result.from_dict(json.loads(json.dumps(record))).to_dict() == record
    old = raced.to_dict()
    tcp = old["stages"]["tcp"]
    del tcp["families_unavailable"], tcp["every_address"]
    for attempt in tcp["attempts"]:
        del attempt["family"], attempt["started_s"], attempt["outcome"]
    loaded = Result.from_dict(old).measurement.record(TCPStage)
    assert loaded is not None and loaded.families_unavailable == {} and loaded.every_address == []
    assert [(a.family, a.started_s, a.outcome) for a in loaded.attempts] == [(None, None, None)] * 2


# --- what a vantage cannot use, found when it dials ----------------------------------------


async def test_an_interface_without_an_ipv6_address_cannot_use_ipv6(
    resolver: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interface's addresses are read when dialling: one that has lost its IPv6
    address leaves the vantage IPv4 only, and the record says why."""
    monkeypatch.setattr(
        "probes.net.interface_addresses", lambda name: InterfaceAddresses("127.0.0.1", None)
    )
    with paths(v6="listen", v4="listen") as p:
        obs = await measured(
            vantage(resolver, source=SourceAddress(interface="lo")),
            f"tcp://dual.lifeline.test:{p.port}",
        )
    assert attempts(obs.tcp) == [
        ("::1", "ipv6", "family_unavailable", "address_family_not_supported"),
        ("127.0.0.1", "ipv4", "connected", None),
    ]
    assert obs.tcp is not None
    assert obs.tcp.families_unavailable == {"ipv6": "interface lo has no usable IPv6 address"}


async def test_no_route_of_a_family_here_is_a_local_limit(
    resolver: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect() failing at once with ENETUNREACH (no route of that family in this
    host's table) sent nothing: the family is unusable, not blocked."""
    real = MeasuredSocket.connect_ex

    def connect_ex(self: MeasuredSocket, address: tuple[str, int]) -> int:
        return errno.ENETUNREACH if self.family == socket.AF_INET6 else real(self, address)

    monkeypatch.setattr(MeasuredSocket, "connect_ex", connect_ex)
    with paths(v6="listen") as p:
        result = await judged(resolver, f"tcp://v6only.lifeline.test:{p.port}")
    assert result.verdict == Verdict.ERROR, result.reason
    assert "no IPv6 route" in result.reason
    assert attempts(result.measurement.record(TCPStage)) == [
        ("::1", "ipv6", "family_unavailable", Failure.NETWORK_UNREACHABLE),
    ]
