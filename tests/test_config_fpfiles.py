"""``fingerprints.files`` (in OONI's blocking-fingerprints CSV layout) and ``body_head_bytes``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from aiohttp import web

from probes.config import ConfigError, load_config, parse_config
from probes.fingerprints import FingerprintSet
from probes.model import ResolverSpec, Target, Vantage
from probes.records import HTTPHop, HTTPStage
from probes.workers import MeasuringPool
from tests.fakes import LOOPBACK, FakeDNS

MINIMAL = """\
version: 1
vantages:
  - name: control
    control: true
    resolver: 127.0.0.1:5353
services:
  - name: web
    targets:
      - https://example.test/
"""

HEADER = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
    "expected_countries,source,exp_url,notes\n"
)
ROWS = (
    'lab.xx_0,nat,,body,contains,"Access to this site is denied by ""the regulator""",5,XX,lab,,\n'
    "lab.xx_1,isp,,header.location,prefix,http://block.isp.example/,5,XX,lab,,\n"
    "lab.xx_2,isp,,header.server,full,CensorBox/1.0,5,XX,lab,,\n"
    "lab.xx_3,isp,,dns,full,192.0.2.66,5,XX,lab,,\n"
    "lab.xx_4,fp,,body,contains,Our own maintenance page,5,,lab,,\n"
    'lab.xx_5,isp,,body,regexp,"blocked\\s+under\\s+order\\s+\\d+",5,XX,lab,,"multi\nline note"\n'
)


def http(body: str = "", headers: dict[str, str] | None = None, **kw: object) -> HTTPStage:
    return HTTPStage(
        ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
        body_head=body, headers=headers or {}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def write_config(tmp_path: Path, csv_text: str, files: str = "[fp/lab.csv]") -> Path:
    (tmp_path / "fp").mkdir(exist_ok=True)
    (tmp_path / "fp" / "lab.csv").write_text(csv_text, encoding="utf-8")
    config = tmp_path / "lifeline.yaml"
    config.write_text(MINIMAL + f"fingerprints:\n  files: {files}\n", encoding="utf-8")
    return config


def test_rows_are_loaded_beside_the_built_ins_relative_to_the_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, HEADER + ROWS), env={})
    assert config.fingerprints.files == (str(tmp_path / "fp" / "lab.csv"),)
    assert [r.name for r in config.fingerprints.rows] == [f"lab.xx_{i}" for i in range(6)]
    fps = FingerprintSet.build(config.fingerprints)

    page = 'x<p>Access to this site is denied by "the regulator"</p>'
    assert fps.match_http(http(page)) == "fingerprint lab.xx_0"
    assert fps.match_http(http("case differs: ACCESS TO THIS SITE IS DENIED BY")) is None
    hop = HTTPHop("http://x.test/", 302, "http://block.isp.example/?u=x")
    assert fps.match_http(http(redirects=[hop])) == "fingerprint lab.xx_1"
    assert fps.match_http(http(headers={"server": "CensorBox/1.0"})) == "fingerprint lab.xx_2"
    assert fps.match_http(http(headers={"server": "CensorBox/1.0 (x)"})) is None
    assert fps.match_dns(["192.0.2.66"]) == "192.0.2.66 (fingerprint lab.xx_3)"
    assert fps.match_http(http("blocked under  order 12")) == "fingerprint lab.xx_5"
    # scope fp: a false positive beats every block signature
    assert fps.match_http(http(page + " Our own maintenance page")) is None
    # the built-ins are still there
    assert fps.match_http(http('<iframe src="http://10.10.34.34/">')) is not None


def test_a_body_row_is_scanned_over_the_whole_body(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, HEADER + ROWS), env={})
    fps = FingerprintSet.build(config.fingerprints)
    scan = fps.body_scan()
    scan.feed("y" * 100_000 + "Access to this site is denied")
    scan.feed(' by "the regulator"' + "z" * 10)
    scan.finish()
    assert scan.blocks == ["fingerprint lab.xx_0"]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("lab.b_0,isp,,body,starts,x,5,,,,", "lab.b_0: pattern_type is 'starts', expected one of"),
        ("lab.b_1,isp,,cookie,contains,x,5,,,,", "lab.b_1: location_found is 'cookie', expected"),
        ("lab.b_2,isp,,body,contains,,5,,,,", "lab.b_2: the pattern is empty"),
        ("lab.b_3,isp,,body,regexp,(unclosed,5,,,,", "lab.b_3: '(unclosed' is not a valid regular"),
        ("lab.b_4,isp,,dns,full,not-an-ip,5,,,,", "lab.b_4: 'not-an-ip' is not an IP address"),
        ("lab.b_5,isp,,dns,contains,10.0.0.1,5,,,,", "lab.b_5: a dns fingerprint is one address"),
        (",isp,,body,contains,x,5,,,,", "the name is empty"),
        ("lab.xx_0,isp,,body,contains,again,5,,,,", "the name 'lab.xx_0' is used already (line 2)"),
    ],
)
def test_a_bad_row_is_a_config_error_naming_file_and_line(
    tmp_path: Path, row: str, problem: str
) -> None:
    path = write_config(tmp_path, HEADER + ROWS + row + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    line = 2 + ROWS.count("\n") + 0  # the note of xx_5 spans two lines
    assert len(caught.value.errors) == 1
    error = caught.value.errors[0]
    assert error.startswith(f"fingerprints.files[0]: {tmp_path / 'fp' / 'lab.csv'}:{line}: ")
    assert problem in error


def test_every_bad_row_is_reported(tmp_path: Path) -> None:
    rows = "a,isp,,body,nope,x,5,,,,\nb,isp,,body,contains,ok,5,,,,\nc,isp,,body,contains,,5,,,,\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, HEADER + rows), env={})
    assert [e.split(": ")[1].rsplit(":", 1)[1] for e in caught.value.errors] == ["2", "4"]


def test_a_file_without_the_columns_or_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, "name,pattern\nx,y\n"), env={})
    assert "lacks the column(s) location_found, pattern_type" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, HEADER, files="[fp/nothere.csv]"), env={})
    assert f"fingerprint file {tmp_path / 'fp' / 'nothere.csv'} does not exist" in str(caught.value)


def test_loading_the_config_again_reads_the_files_again(tmp_path: Path) -> None:
    """What serve's reload does: load_config anew, so an edited file takes effect."""
    path = write_config(tmp_path, HEADER + ROWS)
    before = FingerprintSet.build(load_config(path, env={}).fingerprints)
    (tmp_path / "fp" / "lab.csv").write_text(
        HEADER + "lab.new_0,nat,,body,contains,Newly blocked,5,,,,\n", encoding="utf-8"
    )
    after = FingerprintSet.build(load_config(path, env={}).fingerprints)
    assert before.match_http(http("Newly blocked")) is None
    assert after.match_http(http("Newly blocked")) == "fingerprint lab.new_0"
    assert after.match_dns(["192.0.2.66"]) is None


def test_a_worker_gets_the_same_fingerprints(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, HEADER + ROWS), env={})
    fps = FingerprintSet.build(config.fingerprints)
    data = pickle.dumps(fps)
    assert len(data) < 4096  # the config's rows travel, not the compiled patterns
    again = pickle.loads(data)
    assert again.match_dns(["192.0.2.66"]) == fps.match_dns(["192.0.2.66"])
    assert [s.name for s in again.block_pages] == [s.name for s in fps.block_pages]


def test_body_head_bytes_is_configurable_and_bounded() -> None:
    assert parse_config(MINIMAL, env={}).defaults.body_head_bytes == 65_536
    config = parse_config(MINIMAL + "defaults:\n  body_head_bytes: 4096\n", env={})
    assert config.defaults.body_head_bytes == 4096
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "defaults:\n  body_head_bytes: 2000000\n", env={})
    assert "defaults.body_head_bytes: 2000000 must be between 0 and 1048576" in str(caught.value)


async def test_worker_processes_scan_with_the_configs_files(tmp_path: Path) -> None:
    """serve --workers: the worker gets the fingerprint set once and scans with its rows."""
    page = b"<html><body>" + b"." * 5000 + b'Access to this site is denied by "the regulator"'

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=page, headers={"Content-Type": "text/html"})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    port = runner.addresses[0][1]
    dns = await FakeDNS({"site.lifeline.test": ["A 127.0.0.1"]}).start()
    config = load_config(write_config(tmp_path, HEADER + ROWS), env={})
    fps = FingerprintSet.build(config.fingerprints)
    vantage = Vantage("v", ResolverSpec("udp", LOOPBACK, dns.port))
    pool = MeasuringPool(1)
    await pool.start()
    try:
        target = Target.parse(f"http://site.lifeline.test:{port}/")
        for _ in range(2):  # the second ask reuses the set the worker holds
            m = await pool.measure(
                target, vantage, ca_file=None, timeout=5, max_body_bytes=1 << 20,
                fingerprints=fps,
            )  # fmt: skip
            assert m.error is None and m.http is not None, m.error
            assert m.http.body_signatures == ["fingerprint lab.xx_0"]
    finally:
        await pool.aclose()
        await dns.close()
        await runner.cleanup()


async def test_serves_reload_reads_the_files_again_and_refuses_a_bad_row(tmp_path: Path) -> None:
    from exporter.scheduler import Monitor
    from exporter.server import Server
    from exporter.webconfig import WebConfig

    path = write_config(tmp_path, HEADER + ROWS)
    monitor = Monitor(load_config(path, env={}))
    server = Server(monitor, config_path=str(path), web_config=WebConfig())
    try:
        csv_file = tmp_path / "fp" / "lab.csv"
        csv_file.write_text(HEADER + "lab.new_0,nat,,body,contains,Newly blocked,5,,,,\n")
        assert await server.reload() == []
        fps = FingerprintSet.build(monitor.config.fingerprints)
        assert fps.match_http(http("Newly blocked")) == "fingerprint lab.new_0"

        csv_file.write_text(HEADER + "lab.bad_0,nat,,body,contains,,5,,,,\n")
        errors = await server.reload()
        assert errors == [
            f"fingerprints.files[0]: {csv_file}:2: lab.bad_0: the pattern is empty "
            "(it would match everything) (line 11)"
        ]
        # the old config (and its fingerprints) keeps running
        assert [r.name for r in monitor.config.fingerprints.rows] == ["lab.new_0"]
    finally:
        await monitor.aclose()


async def test_an_agent_measures_with_its_own_configs_files(tmp_path: Path) -> None:
    """POST /api/v1/measure: the agent scans with the rows of its config's files."""
    import aiohttp

    from exporter.agent import AgentIdentity, add_agent_routes
    from exporter.scheduler import Monitor
    from probes.remote import MEASURE_PATH

    page = b"<html><body>" + b"." * 5000 + b'Access to this site is denied by "the regulator"'

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=page, headers={"Content-Type": "text/html"})

    site_app = web.Application()
    site_app.router.add_get("/", handler)
    site = web.AppRunner(site_app, handle_signals=False, access_log=None)
    await site.setup()
    await web.TCPSite(site, LOOPBACK, 0).start()
    port = site.addresses[0][1]
    dns = await FakeDNS({"site.lifeline.test": ["A 127.0.0.1"]}).start()
    (tmp_path / "fp").mkdir()
    (tmp_path / "fp" / "lab.csv").write_text(HEADER + ROWS, encoding="utf-8")
    path = tmp_path / "agent.yaml"
    path.write_text(
        "version: 1\nvantages:\n"
        f"  - {{name: control, control: true, resolver: '127.0.0.1:{dns.port}'}}\n"
        f"  - {{name: isp, resolver: '127.0.0.1:{dns.port}'}}\n"
        f"services:\n  - name: web\n    targets: ['http://site.lifeline.test:{port}/']\n"
        "fingerprints:\n  files: [fp/lab.csv]\n",
        encoding="utf-8",
    )
    monitor = Monitor(load_config(path, env={}))
    app = web.Application()
    add_agent_routes(app, monitor, AgentIdentity("box-1"))
    agent = web.AppRunner(app, handle_signals=False, access_log=None)
    await agent.setup()
    await web.TCPSite(agent, LOOPBACK, 0).start()
    url = f"http://127.0.0.1:{agent.addresses[0][1]}{MEASURE_PATH}"
    try:
        async with aiohttp.ClientSession() as session:
            ask = {"target": f"http://site.lifeline.test:{port}/", "timeout": 5}
            async with session.post(url, json=ask) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
        http_record = answer["measurement"]["stages"]["http"]
        assert http_record["body_signatures"] == ["fingerprint lab.xx_0"]
    finally:
        await agent.cleanup()
        await monitor.aclose()
        await dns.close()
        await site.cleanup()
