"""The benchmark runner works end to end on a tiny size (its figures are not asserted).

It runs as an operator runs it, in a subprocess: the farm, `lifeline serve`
and (when installed) blackbox_exporter are started, driven and stopped, and
the JSON report says what a run found. On host loopback (``--no-netns``):
every socket is on 127.0.0.0/8 and blackbox only gets IP literals.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from benchmarks.configs import blackbox_config, lifeline_config
from benchmarks.farend import start_far_end
from benchmarks.farm import FAIL_EVERY, make_plan
from benchmarks.nginx import nginx_path
from benchmarks.procs import blackbox_path
from benchmarks.profile import summarise
from benchmarks.run import main
from probes.config import parse_config
from probes.lab.ca import LabCA

ROOT = Path(__file__).resolve().parent.parent

NO_NGINX = "nginx is not installed (apt-get install nginx): the nginx far end is not tried"
#: Each origin the far end can have; nginx's only where it is installed.
ORIGINS = [
    "python",
    pytest.param("nginx", marks=pytest.mark.skipif(nginx_path() is None, reason=NO_NGINX)),
]


def _get(address: str, port: int, name: str, ca_file: str) -> tuple[bytes, list[str]]:
    """One HTTPS GET by IP with SNI ``name``: the response and the certificate's names."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((address, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            names = [v for k, v in tls.getpeercert().get("subjectAltName", ()) if k == "DNS"]
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n".encode())
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks), names


def test_plan_mixes_failing_names_and_every_config_is_valid(tmp_path: Path) -> None:
    plan, sockets = make_plan(2 * FAIL_EVERY, 10, tmp_path)
    try:
        assert len(plan.names) == 2 * FAIL_EVERY
        assert [n.name for n in plan.names if not n.exists] == [plan.names[FAIL_EVERY - 1].name]
        assert [n.name for n in plan.names if not n.listening] == [plan.names[-1].name]
        assert all(n.address.startswith("127.") for n in plan.names)
        LabCA(tmp_path).write(Path(plan.ca_file))  # the farm's own job, done here by hand
        config = parse_config(
            lifeline_config(plan, plan.names, vantages=3, interval_s=60, data_dir=str(tmp_path))
        )
        assert [v.name for v in config.vantages] == ["v0", "v1", "v2"]
        assert config.control is not None and config.control.name == "v0"
        assert sum(len(s.targets) for s in config.services) == len(plan.names)
        box = blackbox_config(plan, plan.names)
        assert box.count("prober: dns") == box.count("prober: http") == len(plan.names)
        assert "server_name: n0.bench.lifeline.test" in box
    finally:
        for s in sockets:
            s.close()


@pytest.mark.parametrize("origin", ORIGINS)
def test_far_end_serves_the_plan(tmp_path: Path, origin: str) -> None:
    """Every name as planned: the page under its own certificate, NXDOMAIN, or refused."""
    far = start_far_end(tmp_path, 2 * FAIL_EVERY, 10, origin)
    try:
        assert far.info["origin"] == origin
        assert set(far.pids) == ({"farm", "nginx"} if origin == "nginx" else {"farm"})
        plan = far.plan
        host, port = plan.resolver.rsplit(":", 1)
        for n in plan.names:
            reply = dns.query.udp(
                dns.message.make_query(n.name, "A"), host, port=int(port), timeout=5
            )
            if not n.exists:
                assert reply.rcode() == dns.rcode.NXDOMAIN, n.name
                continue
            assert [r.to_text() for a in reply.answer for r in a] == [n.address], n.name
            if not n.listening:
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((n.address, n.port), timeout=10).close()
                continue
            response, names = _get(n.address, n.port, n.name, plan.ca_file)
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), (n.name, head)
            assert b"connection: close" in head.lower()
            assert b"<title>bench - lifeline lab</title>" in body
            assert n.name in names
        assert all(cpu >= 0 for cpu in far.cpu().values())
    finally:
        far.close()
    assert not far.farm.alive() and (far.nginx is None or not far.nginx.alive())


def test_runner_says_what_is_wrong_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--no-netns", "--nginx-workers", "-1"])
    assert "--nginx-workers -1: 0 (one process) or more" in capsys.readouterr().err


def test_profile_summary_counts_samples_and_skips_idle_threads() -> None:
    raw = (
        "main (a/cli.py:1);measure (probes/measure.py:10) 3\n"
        "main (a/cli.py:1);classify (probes/classify.py:5) 1\n"
        "_bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:80) 50\n"
    )
    text = summarise(raw)
    assert text.startswith("4 samples")
    assert "75.0  measure (probes/measure.py)" in text
    assert "100.0  main (a/cli.py)" in text
    assert "_worker" not in text


@pytest.mark.parametrize("origin", ORIGINS)
def test_runner_smoke(tmp_path: Path, origin: str) -> None:
    out = tmp_path / "report.json"
    # the whole runner with nginx's origins; with Python's, /probe alone (its scheduler
    # run reads the far end the same way)
    python = ["--skip-sched", "--workers", "0"] if origin == "python" else ["--workers", "2"]
    argv = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--no-netns",
        "--names",
        str(2 * FAIL_EVERY),
        "--concurrency",
        "4",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--sched-targets",
        "20",
        "--vantages",
        "2",
        "--interval",
        "4",
        "--sched-rounds",
        "1.5",
        "--origin",
        origin,
        *python,
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["nproc"] >= 1
    assert report["far_end"]["origin"] == origin
    probe = report["probe"]
    assert probe["dns_window"]["lifeline"] == "0"
    lifeline = probe["exporters"]["lifeline"]
    assert lifeline["errors"] == 0
    assert probe["agreement"]["lifeline_unexpected"] == 0
    assert lifeline["far_end_cpu_ms_per_probe"] > 0  # the farm's resolver, at least
    parts = {"farm", "nginx"} if origin == "nginx" else {"farm"}
    assert set(lifeline["far_end_cpu_cores"]) == parts
    windowed = probe["exporters"]["lifeline-window"]  # lifeline's default DNS window
    assert windowed["errors"] == 0
    assert probe["agreement_window"]["lifeline_unexpected"] == 0
    if blackbox_path() is not None:
        assert probe["exporters"]["blackbox"]["errors"] == 0
        assert probe["agreement"]["disagreements"] == 0
        assert "ratio_lifeline_over_blackbox" in probe
        assert probe["agreement_window"]["disagreements"] == 0
    assert f"/probe, {2 * FAIL_EVERY} targets, concurrency 4" in done.stdout
    if origin == "python":
        assert "lifeline-workers" not in probe["exporters"] and "scheduler" not in report
        return
    pooled = probe["exporters"]["lifeline-workers"]  # serve --workers 2, same load
    assert pooled["errors"] == 0
    assert probe["agreement_workers"]["lifeline_unexpected"] == 0
    if blackbox_path() is not None:
        assert probe["agreement_workers"]["disagreements"] == 0
    assert report["scheduler_workers"]["keys"] == 40
    sched = report["scheduler"]
    assert sched["keys"] == 40
    assert sched["skipped"] >= 0  # read from the final /metrics scrape
    assert sched["scrape_bytes"] > 0
    parts_sum = sched["farm_cpu_cores"] + sched["nginx_cpu_cores"]
    assert sched["far_end_cpu_cores"] == pytest.approx(parts_sum, abs=0.002)  # each rounded
