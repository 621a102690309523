"""`lifeline serve` as an operator runs it: a subprocess on the lab, used over HTTP."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp.web import HTTPBadRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from exporter.server import TargetIndex, accepts_gzip, admitted_target, parse_listen
from exporter.webconfig import WebConfigError, load_web_config
from probes.config import parse_config
from probes.lab import LabThread

#: Upper bound on waiting for something the server must eventually do; a hang guard, not a
#: performance assertion (the machine is small and shared).
PATIENCE_S = 180.0
INTERVAL = "4s"  # the lab's timeout; a config may not measure more often than that


# --- helpers ---------------------------------------------------------------------------


def fast_config(source: Path, directory: Path, *, interval: str = INTERVAL) -> Path:
    """A copy of the lab config that measures every ``interval``."""
    document = yaml.safe_load(source.read_text())
    document["defaults"]["interval"] = interval
    document["probe"] = {"allow": ["dns://*.allowed.lifeline.test"]}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path
    config: Path
    data_dir: Path


def start_serve(
    config: Path, data_dir: Path, *extra: str, context: ssl.SSLContext | None = None
) -> Served:
    out, err = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", "-c", str(config),
             "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra],
            stdout=o, stderr=e,
        )  # fmt: skip
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("listening on "):
                return Served(proc, line.removeprefix("listening on ").strip(), out, err, config,
                              data_dir)  # fmt: skip
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.1)
    stop(proc)
    raise AssertionError("serve did not start listening")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request; errors are answers, not exceptions."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    opener = _OPENER
    if context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def status(served: Served) -> dict[str, Any]:
    code, _, body = http(served.url + "api/v1/status")
    assert code == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


def verdicts(served: Served) -> dict[tuple[str, str, str], str]:
    return {
        (r["service"], r["target"], r["vantage"]): r["verdict"] for r in status(served)["results"]
    }


def metric(text: str, name: str, **labels: str) -> list[float]:
    return [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


def ready(served: Served) -> bool:
    return http(served.url + "-/ready")[0] == 200


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(lab: LabThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")
    s = start_serve(fast_config(lab.config_path, work), work / "data")
    try:
        wait_for("the first full round", lambda: ready(s))
        yield s
    finally:
        assert stop(s.proc) == 0, s.err.read_text()


# --- behaviour ------------------------------------------------------------------------------


def test_health_readiness_and_status_page(served: Served) -> None:
    assert http(served.url + "-/healthy")[0] == 200
    assert http(served.url + "-/ready")[0] == 200
    code, headers, page = http(served.url)
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "dns-nxdomain" in page


def test_published_verdicts_match_the_lab(served: Served, lab: LabThread) -> None:
    expected = {(r["service"], r["target"], r["vantage"]): r["verdict"] for r in lab.expected}
    got = verdicts(served)
    assert set(got) >= set(expected)
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, wrong


def test_status_document(served: Served) -> None:
    doc = status(served)
    assert doc["schema"] == "lifeline.status/1"
    assert doc["time"].endswith("Z")
    row = next(r for r in doc["results"] if r["vantage"] == "censored")
    assert set(row) >= {"service", "target", "vantage", "verdict", "reason", "since", "time",
                        "country", "timezone"}  # fmt: skip
    assert (row["country"], row["timezone"]) == ("IR", "Asia/Tehran")
    assert {v["name"] for v in doc["vantages"]} == {"control", "censored", "shutdown"}
    shutdown = next(v for v in doc["vantages"] if v["name"] == "shutdown")
    assert shutdown["up"] is False


def test_metrics_exposition(served: Served) -> None:
    code, headers, text = http(served.url + "metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert metric(text, "lifeline_vantage_up", vantage="shutdown") == [0]
    assert metric(text, "lifeline_vantage_up", vantage="censored") == [1]
    assert metric(text, "lifeline_build_info")
    assert metric(text, "lifeline_config_last_reload_successful") == [1]
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    code, headers, text = http(
        served.url + "metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


def raw_metrics(served: Served, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(served.url + "metrics", headers=headers)
    with _OPENER.open(request, timeout=60) as response:
        return dict(response.headers), response.read()


def test_metrics_gzipped_when_the_scraper_accepts_gzip(served: Served) -> None:
    headers, body = raw_metrics(served, {"Accept-Encoding": "gzip"})  # what Prometheus sends
    assert headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers["Vary"]
    assert int(headers["Content-Length"]) == len(body)
    text = gzip.decompress(body).decode()
    assert metric(text, "lifeline_vantage_up", vantage="censored") == [1]
    assert metric(text, "lifeline_build_info")
    for refused in ({}, {"Accept-Encoding": "gzip;q=0, identity"}):
        headers, body = raw_metrics(served, refused)
        assert "Content-Encoding" not in headers
        assert int(headers["Content-Length"]) == len(body)
        assert metric(body.decode(), "lifeline_vantage_up", vantage="censored") == [1]


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0, *", False),
        ("br, *;q=0", False),
        ("gzip;q=oops", False),
    ],
)
def test_gzip_is_negotiated_as_rfc_9110_says(header: str | None, gzipped: bool) -> None:
    assert accepts_gzip(header) is gzipped


def lab_target(lab: LabThread, service: str, prefix: str) -> str:
    return next(r["target"] for r in lab.expected
                if r["service"] == service and r["target"].startswith(prefix))  # fmt: skip


def test_probe_measures_a_configured_target_now(served: Served, lab: LabThread) -> None:
    from urllib.parse import quote

    blocked = lab_target(lab, "dns-nxdomain", "https://")
    code, _, text = http(f"{served.url}probe?target={quote(blocked)}&vantage=censored")
    assert code == 200, text
    assert metric(text, "probe_success") == [0]
    assert metric(text, "lifeline_verdict", verdict="dns_blocked") == [1]
    assert metric(text, "probe_dns_lookup_time_seconds")
    open_ = lab_target(lab, "open", "https://")
    code, _, text = http(f"{served.url}probe?target={quote(open_)}")  # default: first non-control
    assert code == 200
    assert metric(text, "probe_success") == [1]
    assert metric(text, "probe_http_status_code") == [200]
    assert metric(text, "lifeline_verdict", vantage="censored", verdict="ok") == [1]
    phases = {s.labels["phase"] for fam in text_string_to_metric_families(text)
              for s in fam.samples if s.name == "probe_http_duration_seconds"}  # fmt: skip
    assert phases == {"resolve", "connect", "tls", "processing", "transfer"}


def test_probe_refuses_unconfigured_targets_without_connecting(
    served: Served, lab: LabThread
) -> None:
    from urllib.parse import quote

    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen()
        trap.setblocking(False)
        port = trap.getsockname()[1]
        for target in (f"http://127.0.0.1:{port}/", f"tcp://127.0.0.1:{port}",
                       f"https://localhost:{port}/admin"):  # fmt: skip
            code, _, body = http(f"{served.url}probe?target={quote(target)}&vantage=control")
            assert code == 400
            assert "not configured" in body
        with pytest.raises(BlockingIOError):
            trap.accept()  # nothing ever connected
    open_ = lab_target(lab, "open", "https://")
    assert http(f"{served.url}probe?target={quote(open_)}&vantage=nowhere")[0] == 400
    assert http(f"{served.url}probe")[0] == 400


def test_probe_allow_patterns_admit_unconfigured_targets(served: Served) -> None:
    code, _, text = http(
        f"{served.url}probe?target=dns://www.allowed.lifeline.test&vantage=control"
    )
    assert code == 200, text
    assert metric(
        text, "lifeline_verdict", service="probe", target="dns://www.allowed.lifeline.test"
    )
    assert metric(text, "probe_success") == [0]  # the lab's honest resolver does not know it


def test_measurements_api_streams_json_lines(served: Served) -> None:
    code, headers, body = http(
        served.url + "api/v1/measurements?since=10m&vantage=censored&limit=5"
    )
    assert code == 200 and "ndjson" in headers["Content-Type"]
    lines = [json.loads(line) for line in body.splitlines()]
    assert 0 < len(lines) <= 5
    assert all(
        r["schema"] == "lifeline.measurement/2" and r["vantage"] == "censored" for r in lines
    )
    assert http(served.url + "api/v1/measurements?since=yesterday-ish")[0] == 400


def test_a_bad_config_is_refused_and_the_old_one_keeps_running(served: Served) -> None:
    good = served.config.read_text()
    try:
        served.config.write_text(good.replace("version: 1", "version: 7"))
        code, _, body = http(served.url + "-/reload", method="POST")
        assert code == 400
        assert json.loads(body)["errors"]
        _, _, text = http(served.url + "metrics")
        assert metric(text, "lifeline_config_last_reload_successful") == [0]
        assert status(served)["results"]  # still serving the old config
    finally:
        served.config.write_text(good)
    code, _, body = http(served.url + "-/reload", method="POST")
    assert code == 200, body
    _, _, text = http(served.url + "metrics")
    assert metric(text, "lifeline_config_last_reload_successful") == [1]
    served.proc.send_signal(signal.SIGHUP)  # the same through a signal
    wait_for("the SIGHUP reload", lambda: served.err.read_text().count("reloaded") >= 2)
    assert served.proc.poll() is None


def test_a_rule_flip_is_published_within_an_interval_and_a_reprobe(
    served: Served, lab: LabThread
) -> None:
    target = lab_target(lab, "open", "dns://")
    key = ("open", target, "censored")
    assert verdicts(served)[key] == "ok"
    rules = lab.admin_url + "/rules"
    try:
        body = json.dumps({"scenario": "open", "dns": "nxdomain"})
        request = urllib.request.Request(rules, data=body.encode(), method="PUT")
        with _OPENER.open(request, timeout=30) as response:
            assert response.status == 200
        wait_for("dns_blocked to be published", lambda: verdicts(served)[key] == "dns_blocked")
        _, _, text = http(served.url + "metrics")
        labels = {"service": "open", "target": target, "vantage": "censored"}
        assert metric(text, "lifeline_verdict", **labels, verdict="dns_blocked") == [1]
    finally:  # back to the catalogue for the tests that follow
        assert http(rules + "/reset", method="POST")[0] == 200
    wait_for("ok again after the rule is lifted", lambda: verdicts(served)[key] == "ok")


def test_sigterm_stops_cleanly_and_a_restart_keeps_since(lab: LabThread, tmp_path: Path) -> None:
    config = fast_config(lab.config_path, tmp_path)
    first = start_serve(config, tmp_path / "data")
    try:
        wait_for("the first full round", lambda: ready(first))
        before = {(r["service"], r["target"], r["vantage"]): (r["verdict"], r["since"])
                  for r in status(first)["results"]}  # fmt: skip
    finally:
        assert stop(first.proc) == 0
    assert "stopped" in first.out.read_text()
    second = start_serve(config, tmp_path / "data")
    try:
        after = {(r["service"], r["target"], r["vantage"]): (r["verdict"], r["since"])
                 for r in status(second)["results"]}  # fmt: skip
        kept = [k for k in before if k in after and after[k][0] == before[k][0]]
        assert kept, "nothing was restored from the store"
        assert all(after[k][1] == before[k][1] for k in kept)
    finally:
        assert stop(second.proc) == 0


# --- web security -----------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lifeline test")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def tls_and_basic_auth(directory: Path) -> tuple[Path, Path]:
    """(a --web-config file with TLS and the user prometheus:s3cret, its certificate)."""
    cert, key = self_signed(directory)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = directory / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
        "basic_auth_users": {"prometheus": hashed},
    }))  # fmt: skip
    return web, cert


def test_tls_and_basic_auth_guard_every_endpoint(lab: LabThread, tmp_path: Path) -> None:
    web, cert = tls_and_basic_auth(tmp_path)
    s = start_serve(lab.config_path, tmp_path / "data", "--web-config", str(web))
    try:
        assert s.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        for path in ("metrics", "-/healthy", "api/v1/status", "", "probe?target=x"):
            assert http(s.url + path, context=ctx)[0] == 401, path
            assert http(s.url + path, context=ctx, headers=basic("prometheus", "wrong"))[0] == 401
            assert http(s.url + path, context=ctx, headers=basic("nobody", "s3cret"))[0] == 401
        _, headers, _ = http(s.url + "-/healthy", context=ctx)
        assert headers.get("WWW-Authenticate", "").startswith("Basic")
        assert (
            http(s.url + "-/healthy", context=ctx, headers=basic("prometheus", "s3cret"))[0] == 200
        )
        assert http(s.url + "metrics", context=ctx, headers=basic("prometheus", "s3cret"))[0] == 200
    finally:
        assert stop(s.proc) == 0


def test_a_bad_web_config_stops_serve_before_it_starts(lab: LabThread, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_user: {prometheus: plaintext}\n")  # misspelt key
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "-c", str(lab.config_path),
         "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--web-config", str(web)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "basic_auth_user: unknown key" in proc.stderr


def test_web_config_rejects_plaintext_passwords(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {prometheus: hunter2}\ntls_server_config: {cert_file: x}\n")
    with pytest.raises(WebConfigError) as info:
        load_web_config(web)
    assert "basic_auth_users.prometheus: not a bcrypt hash" in info.value.errors
    assert "tls_server_config.key_file: required (a file path)" in info.value.errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":9478", (None, 9478)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9", ("::1", 9))],
)
def test_listen_addresses(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9478", "host:", "host:99999", "127.0.0.1:http"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(text)


def test_demo_serves_the_lab_and_falls_back_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "demo.out"
        with out.open("wb") as stream:
            proc = subprocess.Popen(
                [sys.executable, "-m", "exporter.cli", "demo", "--dir", str(tmp_path / "lab"),
                 "--listen", f"127.0.0.1:{port}"],
                stdout=stream, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            text = wait_for("the demo's instructions",
                            lambda: "status page:" in (t := out.read_text()) and t)  # fmt: skip
            assert f"127.0.0.1:{port} is in use" in text
            url = next(line.split()[-1] for line in text.splitlines() if "status page:" in line)
            assert f":{port}/" not in url
            assert http(url + "-/healthy")[0] == 200
            assert "/rules" in text  # how to flip a lab rule
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0


# --- /probe's target index ------------------------------------------------------------------------

INDEXED = """
version: 1
vantages: [{name: v, resolver: 127.0.0.1:5353}]
canaries: [https://canary.lifeline.test/]
services:
  - {name: first, targets: [https://a.lifeline.test/, https://canary.lifeline.test/]}
  - {name: second, targets: [https://a.lifeline.test/, https://b.lifeline.test/]}
probe: {allow: ["https://*.allowed.lifeline.test/*"]}
"""


@pytest.mark.parametrize(
    "url",
    [
        "https://a.lifeline.test/",
        "https://b.lifeline.test/",
        "https://canary.lifeline.test/",
        "https://x.allowed.lifeline.test/page",
    ],
)
def test_the_target_index_admits_what_the_scan_admits(url: str) -> None:
    config = parse_config(INDEXED)
    assert TargetIndex(config).admit(url) == admitted_target(config, url)


def test_the_target_index_refuses_what_the_config_does_not_name() -> None:
    index = TargetIndex(parse_config(INDEXED))
    with pytest.raises(HTTPBadRequest):
        index.admit("https://elsewhere.lifeline.test/")
    assert index.admit("https://a.lifeline.test/")[0] == "first"  # the first service naming it


class _Gathering:
    """An HTTP far end that answers nobody until ``wanted`` connections are open at once
    (or ``patience`` seconds passed): shows how many /probe measurements run together."""

    def __init__(self, wanted: int, patience: float) -> None:
        import threading

        self.wanted, self.patience = wanted, patience
        self.most = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._open = 0
        self._all_here = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            with self._lock:
                self._open += 1
                self.most = max(self.most, self._open)
                if self._open >= self.wanted:
                    self._all_here.set()
            self._all_here.wait(self.patience)
            try:
                conn.recv(65536)
                body = b"gathered"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
                             + body)  # fmt: skip
            except OSError:
                pass
            with self._lock:
                self._open -= 1

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(timeout=5)


def test_probe_measures_many_at_once_from_one_vantage(tmp_path: Path) -> None:
    """A Prometheus job scraping many /probe targets at once is not queued behind a small
    per-vantage bound (blackbox_exporter has none): 40 probes from one vantage are all
    in flight together (the far end answers only once it sees 40 connections)."""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import quote

    many = 40
    far = _Gathering(many, patience=6.0)
    config = tmp_path / "config.yaml"
    targets = [f"http://127.0.0.1:{far.port}/{i}" for i in range(many)]
    config.write_text(yaml.safe_dump({
        "version": 1,
        "defaults": {"interval": "24h", "timeout": "10s"},
        "vantages": [{"name": "here", "resolver": "127.0.0.1:9"}],
        "services": [{"name": "gathering", "targets": targets}],
    }))  # fmt: skip
    served = start_serve(config, tmp_path / "data", "--workers", "0")
    try:
        with ThreadPoolExecutor(many) as pool:
            answers = list(pool.map(
                lambda t: http(f"{served.url}probe?target={quote(t)}&vantage=here"), targets
            ))  # fmt: skip
    finally:
        stop(served.proc)
        far.close()
    assert far.most >= many
    for code, _, text in answers:
        assert code == 200, text
        assert metric(text, "probe_success") == [1]
