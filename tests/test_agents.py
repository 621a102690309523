"""Remote agents: a hub judges what agents inside the watched networks observe.

The integration tests run the hub and two agents as separate `lifeline serve`
processes on loopback against the lab: agent A measures the lab's censored
vantage (TLS, basic auth, a config that lists the lab's targets), agent B a
second copy of it (plain HTTP, a config that admits the targets by
``probe.allow`` globs); the hub has the control vantage itself. Then agent B
is killed, and brought back. The same runs with each agent in its own network
namespace, where root and `ip netns` allow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp import web

from probes.classify import classify
from probes.config import ConfigError, parse_config
from probes.fingerprints import FingerprintSet
from probes.lab import LabThread
from probes.model import Agent, ResolverSpec, Target, Vantage
from probes.records import DNSStage, Measurement, Result, Verdict
from probes.remote import MEASURE_SCHEMA, RemoteAgents, clock_skew
from tests.test_serve import PATIENCE_S, basic, http, metric, self_signed, wait_for

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "cross_vantage_rules.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "cross_vantage_rules_test.yml"
PASSWORD = "agent-secret"
PASSWORD_ENV = "LIFELINE_TEST_AGENT_PASSWORD"


# --- the clock ---------------------------------------------------------------------------


def test_clock_skew_takes_the_network_time_as_symmetric() -> None:
    # asked at 100.0, answered at 100.4; the agent held it 0.2 s, so 0.1 s each way:
    # the answer left at 100.3 by our clock, and the agent said 105.3
    assert clock_skew(100.0, 100.4, 105.3, 0.2) == pytest.approx(5.0)
    assert clock_skew(100.0, 100.4, 95.3, 0.2) == pytest.approx(-5.0)
    # an agent claiming to have held it longer than the round trip: no negative network time
    assert clock_skew(100.0, 100.4, 100.4, 9.0) == pytest.approx(0.0)


# --- the classifier rule -----------------------------------------------------------------

FP = FingerprintSet.build()
T0 = "2025-01-01T00:00:00.000Z"
URL = "https://example.test/"


def _down(vantage: str = "ir") -> Measurement:
    return Measurement(
        target=URL,
        vantage=vantage,
        time=T0,
        service="web",
        error="agent_unreachable: agent http://127.0.0.1:9479: connection refused",
    )


def _fine(vantage: str) -> Measurement:
    dns = DNSStage(True, None, 0.01, "example.test", "udp://127.0.0.1:53", ["127.0.0.10"])
    return Measurement(target="dns://example.test", vantage=vantage, time=T0, dns=dns)


def test_an_agent_that_does_not_answer_makes_its_vantage_down_naming_the_agent() -> None:
    control = _fine("control")
    judged = classify(_down(), control=control, canaries=[_down()], fingerprints=FP,
                      throttle_ratio=0.25)  # fmt: skip
    assert judged.verdict is Verdict.VANTAGE_DOWN
    assert "http://127.0.0.1:9479" in judged.reason and "connection refused" in judged.reason
    # not a flood of *_blocked, and not `error`: even with no canaries and no control
    alone = classify(_down(), control=None, canaries=[], fingerprints=FP, throttle_ratio=0.25)
    assert alone.verdict is Verdict.VANTAGE_DOWN
    # the control itself behind a dead agent is down as well, not a service outage
    ctl = classify(_down("control"), control=None, canaries=[], fingerprints=FP,
                   throttle_ratio=0.25, is_control=True)  # fmt: skip
    assert ctl.verdict is Verdict.VANTAGE_DOWN


def test_an_agent_that_refuses_is_an_error_not_a_dead_vantage() -> None:
    refused = Measurement(target=URL, vantage="ir", time=T0, service="web",
                          error="agent_refused: agent http://127.0.0.1:9479: HTTP 401")  # fmt: skip
    judged = classify(refused, control=None, canaries=[], fingerprints=FP, throttle_ratio=0.25)
    assert judged.verdict is Verdict.ERROR
    assert "HTTP 401" in judged.reason


def test_agent_fields_survive_the_record_round_trip() -> None:
    m = _fine("ir")
    m.agent, m.agent_version, m.clock_skew_s = "box-1", "9.9", -0.25
    record = Result(m, Verdict.OK, "fine").to_dict()
    assert (record["agent"], record["agent_version"], record["clock_skew_s"]) == ("box-1", "9.9",
                                                                                -0.25)  # fmt: skip
    back = Result.from_dict(json.loads(json.dumps(record))).measurement
    assert (back.agent, back.agent_version, back.clock_skew_s) == ("box-1", "9.9", -0.25)
    assert "agent" not in Result(_fine("ir"), Verdict.OK, "fine").to_dict()


# --- the hub's client against a fake agent ------------------------------------------------


@contextlib.asynccontextmanager
async def fake_agent(answer: web.Response | dict[str, Any]) -> Any:
    """An HTTP server on 127.0.0.1:0 that gives one canned answer; yields (url, requests)."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({"body": await request.json(), "auth": request.headers.get("Authorization")})
        return answer if isinstance(answer, web.Response) else web.json_response(answer)

    app = web.Application()
    app.add_routes([web.post("/api/v1/measure", handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def remote_vantage(url: str, **agent: Any) -> Vantage:
    return Vantage("ir", ResolverSpec("agent", url=url), agent=Agent(url, "censored", **agent))


TARGET = Target.parse("https://open.lifeline.test:8443/", expect_status=(200,), throughput=True)


async def test_the_hub_asks_the_agent_and_keeps_its_observation_and_clock() -> None:
    raw = Measurement(target=TARGET.url, vantage="censored", time=T0, service="x",
                      dns=_fine("x").dns, expect_status=[200], throughput=True)  # fmt: skip
    answer = {"schema": MEASURE_SCHEMA, "agent": "box-1", "version": "1.2.3",
              "agent_time": "2025-01-01T00:00:10.000Z", "agent_elapsed_s": 1.0,
              "measurement": raw.to_dict()}  # fmt: skip
    ticks = iter([1735689600.0, 1735689602.0])  # our clock: asked at 00:00:00, answered at :02

    async with fake_agent(answer) as (url, seen):
        async with RemoteAgents(clock=lambda: next(ticks)) as agents:
            m = await agents.measure(TARGET, remote_vantage(url, username="hub", password="pw"),
                                     timeout=4.0, max_body_bytes=1000, service="open")  # fmt: skip
    assert seen[0]["body"] == {
        "target": TARGET.url, "vantage": "censored", "service": "open", "timeout": 4.0,
        "max_body_bytes": 1000, "expect_status": [200], "throughput": True,
    }  # fmt: skip
    assert seen[0]["auth"] == basic("hub", "pw")["Authorization"]
    assert (m.vantage, m.service, m.time) == ("ir", "open", T0)  # the agent's clock dates it
    assert m.dns is not None and m.dns.addresses == ["127.0.0.10"]
    assert (m.agent, m.agent_version) == ("box-1", "1.2.3")
    assert m.clock_skew_s == pytest.approx(10.0 - 1.5)  # answer left at :01.5 by our clock


async def test_the_hub_still_reads_an_older_agents_flat_answer() -> None:
    """Agents before lifeline.measurement/2 answer schema /1, stage records flat."""
    raw = Measurement(target=TARGET.url, vantage="censored", time=T0, service="x",
                      dns=_fine("x").dns, expect_status=[200], throughput=True)  # fmt: skip
    flat = raw.to_dict()
    flat.update(flat.pop("stages"))
    answer = {"schema": "lifeline.agent.measurement/1", "agent": "box-0", "version": "0.1.0",
              "agent_time": T0, "agent_elapsed_s": 0.1, "measurement": flat}  # fmt: skip
    async with fake_agent(answer) as (url, _), RemoteAgents() as agents:
        m = await agents.measure(TARGET, remote_vantage(url), timeout=4.0, max_body_bytes=10)
    assert m.error is None, m.error
    assert m.dns is not None and m.dns.addresses == ["127.0.0.10"]
    assert MEASURE_SCHEMA == "lifeline.agent.measurement/2" and "stages" in raw.to_dict()


@pytest.mark.parametrize(
    ("answer", "prefix", "detail"),
    [
        (web.Response(status=401, text="401 Unauthorized"), "agent_refused", "HTTP 401"),
        (web.Response(status=400, text="target is not configured"), "agent_refused",
         "target is not configured"),
        (web.Response(status=503, text="upstream gone"), "agent_unreachable", "HTTP 503"),
        (web.Response(text="<html>hello</html>"), "agent_bad_answer", "not JSON"),
        ({"schema": MEASURE_SCHEMA, "agent_time": T0, "measurement": {"target": "https://x.test/",
          "vantage": "v", "time": T0}}, "agent_bad_answer", "not the target asked for"),
        ({"schema": MEASURE_SCHEMA, "agent_time": T0, "measurement": {"target": TARGET.url,
          "vantage": "v", "time": T0, "dns": {"ok": "yes"}}}, "agent_bad_answer", "malformed"),
    ],
)  # fmt: skip
async def test_what_the_agent_answers_instead_of_a_measurement_is_told_honestly(
    answer: web.Response | dict[str, Any], prefix: str, detail: str
) -> None:
    async with fake_agent(answer) as (url, _), RemoteAgents() as agents:
        m = await agents.measure(TARGET, remote_vantage(url), timeout=4.0, max_body_bytes=10)
    assert m.error is not None and m.error.startswith(f"{prefix}: agent {url}: ")
    assert detail in m.error
    assert (m.vantage, m.target, m.dns) == ("ir", TARGET.url, None)


async def test_an_agent_that_is_not_there_is_unreachable() -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with RemoteAgents() as agents:
            m = await agents.measure(TARGET, remote_vantage(url), timeout=4.0, max_body_bytes=10)
    assert m.error == f"agent_unreachable: agent {url}: connection refused"


# --- config --------------------------------------------------------------------------------

HUB = """\
version: 1
vantages:
  - name: control
    control: true
    resolver: 127.0.0.1:5353
  - name: ir
    agent: {agent}
{extra}services:
  - name: web
    targets: [https://example.test/]
"""


def test_an_agent_vantage_needs_no_resolver_of_its_own() -> None:
    text = HUB.format(agent="{url: 'https://127.0.0.1:9479/', vantage: censored, "
                      "username: hub, password: '${PW}'}", extra="")  # fmt: skip
    vantage = parse_config(text, env={"PW": "s3cret"}).vantages[1]
    assert vantage.agent == Agent("https://127.0.0.1:9479", "censored", "hub", "s3cret")
    assert vantage.proxy is None and str(vantage.resolver) == "https://127.0.0.1:9479"
    plain = parse_config(HUB.format(agent="http://127.0.0.1:9479", extra="")).vantages[1]
    assert plain.agent == Agent("http://127.0.0.1:9479", "ir")  # its own name at the agent


def test_an_agent_vantage_with_a_path_of_its_own_is_refused() -> None:
    extra = "    resolver: 127.0.0.1:53\n    proxy: socks5://127.0.0.1:1080\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(HUB.format(agent="http://127.0.0.1:9479", extra=extra))
    assert [e.split(":")[0] for e in caught.value.errors] == [
        "vantages[1].resolver", "vantages[1].proxy"]  # fmt: skip
    assert all("cannot be combined with agent" in e for e in caught.value.errors)


# --- Prometheus: the cross-vantage recording rules -------------------------------------------


def test_cross_vantage_recording_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", str(RULES_TEST)], capture_output=True,
                         text=True, timeout=120, check=False, cwd=RULES_TEST.parent)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """One `lifeline serve` process and how to reach it from the hub's network."""

    name: str
    command: list[str]
    out: Path
    err: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""  # as it printed it (inside its own namespace, if any)
    reach: str = ""  # as the hub reaches it

    def start(self) -> None:
        before = self._listening()
        with self.out.open("ab") as o, self.err.open("ab") as e:
            self.proc = subprocess.Popen(self.command, stdout=o, stderr=e, env=self.env)
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            lines = self._listening()
            if len(lines) > len(before):
                self.url = lines[-1].removeprefix("listening on ").strip()
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.err.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start listening")

    def _listening(self) -> list[str]:
        text = self.out.read_text() if self.out.exists() else ""
        return [line for line in text.splitlines() if line.startswith("listening on ")]

    def stop(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def serve_command(config: Path, data: Path, listen: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "exporter.cli", "serve", "-c", str(config), "--listen", listen,
            "--data-dir", str(data), *extra]  # fmt: skip


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


# --- network namespaces ------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def namespaces_usable() -> str | None:
    """Why agents cannot each get a network namespace here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces are a Linux feature"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"lifeline-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def socket_in(namespace: str, kind: socket.SocketKind) -> socket.socket:
    """A socket that lives in a named network namespace (made by a thread that enters it)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            made.append(socket.socket(socket.AF_INET, kind))
        except BaseException as exc:
            failed.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=work)  # it ends here, and its namespace with it
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class Bridge:
    """Loopback-to-loopback forwarding between namespaces, on its own event loop.

    ``tcp_into``: a port on this namespace's 127.0.0.1 that leads to 127.0.0.1:port inside
    a namespace (the hub reaching an agent). ``tcp_out`` / ``udp_out``: 127.0.0.1:port inside
    a namespace leading to the same port here (an agent reaching the lab's censor resolver
    and middlebox). Nothing else is reachable from an agent's namespace.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._closers: list[Any] = []  # datagram transports
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def tcp_into(self, namespace: str, port: int) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        inside = self._run(self._serve(listener, lambda: socket_in(namespace, socket.SOCK_STREAM),
                                       port))  # fmt: skip
        return int(inside)

    def tcp_out(self, namespace: str, port: int) -> None:
        listener = socket_in(namespace, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", port))
        self._run(self._serve(listener, socket.socket, port))

    def udp_out(self, namespace: str, port: int) -> None:
        inside = socket_in(namespace, socket.SOCK_DGRAM)
        inside.bind(("127.0.0.1", port))
        self._run(self._relay(inside, port))

    async def _serve(self, listener: socket.socket, make: Any, port: int) -> int:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.listen()
        listener.setblocking(False)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            upstream = make()
            upstream.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", port))
            except OSError:
                upstream.close()
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection(sock=upstream)
            self._writers.add(up_writer)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(accept, sock=listener)
        self._servers.append(server)
        return int(listener.getsockname()[1])

    async def _relay(self, inside: socket.socket, port: int) -> None:
        loop = asyncio.get_running_loop()
        bridge = self

        class Upstream(asyncio.DatagramProtocol):
            def __init__(self, client: tuple[str, int]) -> None:
                self.client = client

            def datagram_received(self, data: bytes, addr: Any) -> None:
                front.sendto(data, self.client)

        class Front(asyncio.DatagramProtocol):
            def __init__(self) -> None:
                self.upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}

            def datagram_received(self, data: bytes, addr: Any) -> None:
                task = loop.create_task(self.forward(data, addr))
                bridge._tasks.add(task)
                task.add_done_callback(bridge._tasks.discard)

            async def forward(self, data: bytes, addr: tuple[str, int]) -> None:
                up = self.upstreams.get(addr)
                if up is None:
                    up, _ = await loop.create_datagram_endpoint(
                        lambda: Upstream(addr), remote_addr=("127.0.0.1", port)
                    )
                    self.upstreams[addr] = up
                    bridge._closers.append(up)
                up.sendto(data)

        front_protocol = Front()
        front, _ = await loop.create_datagram_endpoint(lambda: front_protocol, sock=inside)
        self._closers.append(front)

    def close(self) -> None:
        async def shut() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()
            for writer in self._writers:
                writer.close()
            for item in self._closers:
                item.close()
            for task in list(self._tasks):
                task.cancel()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:  # the pipes
                task.cancel()
            await asyncio.sleep(0.1)

        self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


# --- the fleet ------------------------------------------------------------------------------


@dataclass
class Fleet:
    hub: Proc
    agents: dict[str, Proc]  # hub vantage name -> its agent
    expected: dict[tuple[str, str, str], str]
    trap_port: int
    context: ssl.SSLContext  # trusts agent A's certificate
    namespaces: list[str] = field(default_factory=list)


def lab_document(lab: LabThread) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(lab.config_path.read_text())
    return doc


def agent_document(lab: LabThread, name: str, work: Path, *, globs: bool) -> dict[str, Any]:
    """An agent's own config: the lab's censored vantage (named ``name``), on a slow schedule.

    With ``globs`` it lists one service and admits the rest by ``probe.allow``.
    """
    doc = lab_document(lab)
    censored = next(v for v in doc["vantages"] if v["name"] == "censored")
    doc["vantages"] = [{**censored, "name": name}]
    doc["defaults"]["interval"] = "60s"  # its own schedule; the hub's requests come on top
    doc["storage"] = {"dir": str(work / f"{name}-data")}
    if globs:
        doc["services"] = doc["services"][:1]
        doc["probe"] = {"allow": [f"{s}://*.lifeline.test*" for s in ("https", "http", "tls",
                                                                       "tcp", "dns")]}  # fmt: skip
    return doc


def hub_document(lab: LabThread, agents: dict[str, dict[str, Any] | str]) -> dict[str, Any]:
    doc = lab_document(lab)
    control = next(v for v in doc["vantages"] if v["name"] == "control")
    doc["vantages"] = [control] + [
        {"name": name, "agent": spec, "country": "IR", "timezone": "Asia/Tehran"}
        for name, spec in agents.items()
    ]
    doc["defaults"]["interval"] = "4s"
    return doc


def expected_for(lab: LabThread, agents: list[str]) -> dict[tuple[str, str, str], str]:
    out = {}
    for row in lab.expected:
        key = (row["service"], row["target"])
        if row["vantage"] == "control":
            out[(*key, "control")] = row["verdict"]
        elif row["vantage"] == "censored":
            out.update({(*key, name): row["verdict"] for name in agents})
    return out


def hub_verdicts(fleet: Fleet) -> dict[tuple[str, str, str], tuple[str, str]]:
    code, _, body = http(fleet.hub.url + "api/v1/status")
    assert code == 200
    return {(r["service"], r["target"], r["vantage"]): (r["verdict"], r["reason"])
            for r in json.loads(body)["results"]}  # fmt: skip


def mismatches(fleet: Fleet, vantages: set[str]) -> dict[Any, Any]:
    got = hub_verdicts(fleet)
    return {k: (got.get(k, ("missing", ""))[0], v) for k, v in fleet.expected.items()
            if k[2] in vantages and got.get(k, ("missing",))[0] != v}  # fmt: skip


def post_json(url: str, payload: Any, *, headers: dict[str, str] | None = None,
              context: ssl.SSLContext | None = None) -> tuple[int, str]:  # fmt: skip
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})  # fmt: skip
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@contextlib.contextmanager
def fleet_of(lab: LabThread, work: Path, *, namespaced: bool) -> Iterator[Fleet]:
    """Hub + agents A (censored-a: https, basic auth) and B (censored-b: http, globs)."""
    cert, key = self_signed(work)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = work / "agent-a-web.yml"
    web_config.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"hub": hashed},
    }))  # fmt: skip
    env = {**os.environ, PASSWORD_ENV: PASSWORD}
    bridge = Bridge() if namespaced else None
    namespaces: list[str] = []
    procs: list[Proc] = []
    trap = socket.socket()
    try:
        trap.bind(("127.0.0.1", 0))
        trap.listen()
        trap.setblocking(False)
        agents: dict[str, Proc] = {}
        for name, globs, extra in (
            ("censored-a", False, ["--web-config", str(web_config), "--agent-name", "agent-a"]),
            ("censored-b", True, ["--agent-name", "agent-b"]),
        ):
            config = work / f"{name}.yaml"
            config.write_text(yaml.safe_dump(agent_document(lab, name, work, globs=globs)))
            command = serve_command(config, work / f"{name}-data", "127.0.0.1:0", "--agent",
                                    *extra)  # fmt: skip
            if bridge is not None:
                namespace = f"lifeline-{os.getpid()}-{name}"
                subprocess.run(["ip", "netns", "add", namespace], check=True)
                namespaces.append(namespace)
                subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
                lab_doc = lab_document(lab)
                censored = next(v for v in lab_doc["vantages"] if v["name"] == "censored")
                bridge.udp_out(namespace, int(censored["resolver"].rsplit(":", 1)[1]))
                bridge.tcp_out(namespace, int(censored["proxy"].rsplit(":", 1)[1]))
                command = ["ip", "netns", "exec", namespace, *command]
            agent = Proc(name, command, work / f"{name}.out", work / f"{name}.err", env)
            procs.append(agent)
            agent.start()
            port = port_of(agent.url)
            if bridge is not None:
                port = bridge.tcp_into(namespaces[-1], port)
            scheme = "https" if name == "censored-a" else "http"
            agent.reach = f"{scheme}://127.0.0.1:{port}/"
            agents[name] = agent
        a, b = agents["censored-a"], agents["censored-b"]
        hub_config = work / "hub.yaml"
        hub_config.write_text(yaml.safe_dump(hub_document(lab, {
            "censored-a": {"url": a.reach, "username": "hub", "password": "${" + PASSWORD_ENV + "}",
                           "ca_file": str(cert)},
            "censored-b": b.reach.rstrip("/"),
        })))  # fmt: skip
        hub = Proc("hub", serve_command(hub_config, work / "hub-data", "127.0.0.1:0"),
                   work / "hub.out", work / "hub.err", env)  # fmt: skip
        procs.append(hub)
        hub.start()
        context = ssl.create_default_context(cafile=str(cert))
        yield Fleet(hub, agents, expected_for(lab, list(agents)), trap.getsockname()[1],
                    context, namespaces)  # fmt: skip
        with pytest.raises(BlockingIOError):
            trap.accept()  # no agent was talked into connecting to it
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
        trap.close()
        if bridge is not None:
            bridge.close()
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], check=False)
    killed = {name for name, code in codes.items() if code == -signal.SIGKILL}
    assert all(code == 0 for name, code in codes.items() if name not in killed), codes


def check_fleet(fleet: Fleet, lab: LabThread) -> None:
    """The behaviour asked of the fleet, in the order an operator would see it."""
    hub, b = fleet.hub, fleet.agents["censored-b"]
    everything = {"control", "censored-a", "censored-b"}
    wait_for("the hub's first full round", lambda: http(hub.url + "-/ready")[0] == 200)
    wait_for("the lab's verdicts at the hub", lambda: not mismatches(fleet, everything))

    _, _, text = http(hub.url + "metrics")
    for name in ("censored-a", "censored-b"):
        assert metric(text, "lifeline_vantage_up", vantage=name) == [1]
        skew = metric(text, "lifeline_agent_clock_skew_seconds", vantage=name)
        assert len(skew) == 1 and math.isfinite(skew[0])  # one machine, one clock
        assert abs(skew[0]) < PATIENCE_S
    assert metric(text, "lifeline_agent_info", vantage="censored-a", agent="agent-a")
    blocked = next(k for k, v in fleet.expected.items()
                   if k[2] == "censored-b" and v == "dns_blocked")  # fmt: skip
    assert metric(text, "lifeline_verdict", service=blocked[0], target=blocked[1],
                  vantage="censored-b", verdict="dns_blocked") == [1]  # fmt: skip
    code, _, body = http(hub.url + "api/v1/measurements?since=10m&vantage=censored-a&limit=50")
    records = [json.loads(line) for line in body.splitlines()]
    assert code == 200 and records
    assert all(r["agent"] == "agent-a" and isinstance(r["clock_skew_s"], float)
               for r in records)  # fmt: skip

    check_agent_endpoint(fleet, lab)

    # agent B dies: its vantage, and only its vantage, is down
    b.kill()
    wait_for(
        "censored-b to be vantage_down",
        lambda: all(
            v == "vantage_down" for k, (v, _) in hub_verdicts(fleet).items() if k[2] == "censored-b"
        ),
    )
    got = hub_verdicts(fleet)
    reasons = {r for k, (_, r) in got.items() if k[2] == "censored-b"}
    assert all(b.reach.rstrip("/") in r and "agent" in r for r in reasons), reasons
    assert not mismatches(fleet, {"control", "censored-a"})
    _, _, text = http(hub.url + "metrics")
    assert metric(text, "lifeline_vantage_up", vantage="censored-b") == [0]
    assert metric(text, "lifeline_vantage_up", vantage="censored-a") == [1]

    # and back: the agent answers again on its old address, the verdicts follow
    b.command[b.command.index("127.0.0.1:0")] = f"127.0.0.1:{port_of(b.url)}"
    b.start()
    wait_for("censored-b to recover", lambda: not mismatches(fleet, everything))


def check_agent_endpoint(fleet: Fleet, lab: LabThread) -> None:
    """POST /api/v1/measure: authenticated, guarded like /probe, raw observations."""
    a, b = fleet.agents["censored-a"], fleet.agents["censored-b"]
    target = next(k[1] for k in fleet.expected if k[0] == "dns-nxdomain" and "dns://" in k[1])
    ask = {"target": target, "vantage": "censored-a", "timeout": 4}
    endpoint = a.reach + "api/v1/measure"
    assert post_json(endpoint, ask, context=fleet.context)[0] == 401
    auth = basic("hub", PASSWORD)
    code, body = post_json(endpoint, ask, headers=auth, context=fleet.context)
    assert code == 200, body
    doc = json.loads(body)
    assert (doc["schema"], doc["agent"]) == (MEASURE_SCHEMA, "agent-a")
    assert doc["agent_time"].endswith("Z") and doc["version"]
    raw = doc["measurement"]
    assert "verdict" not in raw and raw["vantage"] == "censored-a"
    dns = raw["stages"]["dns"]
    assert dns["ok"] is False and dns["failure"] == "dns_nxdomain_error"
    outside = f"http://127.0.0.1:{fleet.trap_port}/"
    for url, where, headers, context in ((endpoint, a, auth, fleet.context),
                                         (b.reach + "api/v1/measure", b, {}, None)):  # fmt: skip
        code, body = post_json(url, {"target": outside, "vantage": where.name}, headers=headers,
                               context=context)  # fmt: skip
        assert code == 400 and "not configured" in body
    # agent B admits what its globs allow
    code, body = post_json(b.reach + "api/v1/measure", {"target": target, "vantage": "censored-b"})
    assert code == 200, body
    assert json.loads(body)["measurement"]["stages"]["dns"]["failure"] == "dns_nxdomain_error"
    # a hub that is not an agent has no such endpoint
    assert post_json(fleet.hub.url + "api/v1/measure", ask)[0] == 404

    # the agent's own schedule keeps raw records of its own
    def own_records() -> list[Any]:
        code, _, body = http(b.reach + "api/v1/measurements?since=10m")
        return [json.loads(line) for line in body.splitlines()] if code == 200 else []

    records = wait_for("agent B's own measurements", own_records)
    assert all(r["vantage"] == "censored-b" and "stages" in r for r in records)


def test_a_hub_judges_what_its_agents_see(lab: LabThread, tmp_path: Path) -> None:
    with fleet_of(lab, tmp_path, namespaced=False) as fleet:
        check_fleet(fleet, lab)


def test_agents_in_their_own_network_namespaces(lab: LabThread, tmp_path: Path) -> None:
    why = namespaces_usable()
    if why is not None:
        pytest.skip(f"no network namespaces for the agents: {why}")
    with fleet_of(lab, tmp_path, namespaced=True) as fleet:
        for namespace in fleet.namespaces:  # the agent's network really is its own:
            with socket_in(namespace, socket.SOCK_STREAM) as probe:  # the hub is not in it
                with pytest.raises(ConnectionRefusedError):
                    probe.connect(("127.0.0.1", port_of(fleet.hub.url)))
        check_fleet(fleet, lab)
