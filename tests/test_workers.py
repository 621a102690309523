"""Measuring in worker processes (`serve --workers N`): same verdicts, honest failures."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from probes.classify import classify
from probes.config import load_config
from probes.failures import UNKNOWN_PREFIX
from probes.fingerprints import FingerprintSet
from probes.lab import LabThread
from probes.model import ResolverSpec, Target, Vantage
from probes.runner import Runner
from probes.workers import MeasuringPool, parse_workers
from tests.test_serve import (
    Served,
    basic,
    fast_config,
    http,
    metric,
    ready,
    start_serve,
    stop,
    tls_and_basic_auth,
    verdicts,
    wait_for,
)


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return {int(p) for p in path.read_text().split()}
    except FileNotFoundError:
        return set()


def _read_to_eof(conn: socket.socket) -> bool:
    """Read until the peer closes (True); a 60 s silence is a hang guard, not a timing."""
    while True:
        try:
            if not conn.recv(65536):
                return True
        except TimeoutError:
            return False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_lab_catalogue_is_judged_the_same_through_workers(lab: LabThread) -> None:
    config = load_config(lab.control_config_path)
    pool = MeasuringPool(2)
    await pool.start()
    try:
        async with Runner(config, pool=pool) as runner:
            results = await runner.run_round()
        pids = pool.pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        await pool.aclose()
    got = {
        (r.measurement.service, r.measurement.target, r.measurement.vantage): r.verdict.value
        for r in results
    }
    expected = lab.expected_for(with_control=True)
    wrong = {
        (e["service"], e["target"], e["vantage"]): (
            got.get((e["service"], e["target"], e["vantage"])),
            e["verdict"],
        )
        for e in expected
        if got.get((e["service"], e["target"], e["vantage"])) != e["verdict"]
    }
    assert not wrong, wrong
    assert not any(_alive(p) for p in pids), "the workers outlived the pool"


@pytest.fixture
def silent_server() -> socket.socket:
    """Accepts TCP connections on loopback and never says a word (a TLS handshake hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv
    srv.close()


def _stalling(server: socket.socket) -> tuple[Target, Vantage]:
    """A target on the silent server; an IP literal resolves nothing (the resolver is
    loopback all the same)."""
    port = server.getsockname()[1]
    return Target.parse(f"https://127.0.0.1:{port}/"), Vantage(
        "v", ResolverSpec("udp", "127.0.0.1", 9)
    )


async def test_a_worker_that_dies_gives_an_error_and_is_replaced(
    silent_server: socket.socket,
) -> None:
    target, vantage = _stalling(silent_server)
    pool = MeasuringPool(1)
    await pool.start()
    try:
        (pid,) = pool.pids()
        task = asyncio.create_task(
            pool.measure(target, vantage, ca_file=None, timeout=30.0, max_body_bytes=1024)
        )
        silent_server.settimeout(60)
        conn, _ = await asyncio.to_thread(silent_server.accept)  # the worker connected
        with conn:  # and waits for a ServerHello that never comes
            os.kill(pid, signal.SIGKILL)
            m = await task
        assert m.error is not None and m.error.startswith(UNKNOWN_PREFIX), m.error
        assert (
            classify(
                m,
                control=None,
                canaries=(),
                fingerprints=FingerprintSet.build(),
                throttle_ratio=0.3,
            ).verdict
            == "error"
        )
        assert "measuring worker 0" in m.error and "-9" in m.error, m.error
        assert (m.target, m.vantage) == (target.url, "v")
        for _ in range(500):  # replaced (a hang guard, not a timing)
            if pool.pids() and pool.pids() != [pid]:
                break
            await asyncio.sleep(0.02)
        assert pool.pids() and pool.pids() != [pid]
        assert pool.restarts == 1
        # the new worker measures: the silent server now makes the TLS stage time out
        m = await pool.measure(target, vantage, ca_file=None, timeout=1.0, max_body_bytes=1024)
        assert m.error is None
        assert m.tcp is not None and m.tcp.ok
        assert m.tls is not None and not m.tls.ok and m.tls.failure == "generic_timeout_error"
    finally:
        await pool.aclose()


async def test_a_cancelled_measurement_is_stopped_in_the_worker(
    silent_server: socket.socket,
) -> None:
    target, vantage = _stalling(silent_server)
    pool = MeasuringPool(1)
    await pool.start()
    try:
        task = asyncio.create_task(
            pool.measure(target, vantage, ca_file=None, timeout=300.0, max_body_bytes=1024)
        )
        silent_server.settimeout(60)
        conn, _ = await asyncio.to_thread(silent_server.accept)  # the worker connected
        with conn:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.in_flight == 0
            conn.settimeout(60)
            # the worker drops its connection at once rather than holding it for 60 s
            # (what it sent before, its ClientHello, is read past)
            assert await asyncio.to_thread(_read_to_eof, conn) is True
    finally:
        await pool.aclose()


def test_serve_with_workers_publishes_the_labs_verdicts(lab: LabThread, tmp_path: Path) -> None:
    s = start_serve(fast_config(lab.config_path, tmp_path), tmp_path / "data", "--workers", "2")
    try:
        workers = wait_for("two worker processes", lambda: len(_children(s.proc.pid)) == 2 or None)
        assert workers
        pids = _children(s.proc.pid)
        wait_for("the first full round", lambda: ready(s))
        expected = {(r["service"], r["target"], r["vantage"]): r["verdict"] for r in lab.expected}
        got = verdicts(s)
        wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        assert not wrong, wrong
        blocked = next(r["target"] for r in lab.expected if r["service"] == "dns-nxdomain"
                       and r["target"].startswith("https://"))  # fmt: skip
        code, _, text = http(f"{s.url}probe?target={quote(blocked)}&vantage=censored")
        assert code == 200, text
        assert metric(text, "lifeline_verdict", verdict="dns_blocked") == [1]
        _, _, text = http(s.url + "metrics")
        assert metric(text, "lifeline_measuring_workers") == [2]
        assert metric(text, "lifeline_measuring_workers_running") == [2]
        assert metric(text, "lifeline_measuring_worker_restarts_total") == [0]
    finally:
        assert stop(s.proc) == 0, s.err.read_text()
    assert not any(_alive(p) for p in pids), "workers outlived serve"


@pytest.mark.parametrize(
    ("text", "problem"), [("x", "'x'"), ("-1", "0 (measure in-process) to 256")]
)
def test_bad_worker_counts_are_refused_by_name(text: str, problem: str, lab: LabThread) -> None:
    with pytest.raises(ValueError, match="--workers"):
        parse_workers(text)
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "-c", str(lab.config_path),
         "--listen", "127.0.0.1:0", f"--workers={text}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--workers" in proc.stderr and problem in proc.stderr, proc.stderr


def test_auto_is_one_worker_per_usable_cpu() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert parse_workers("auto") == (0 if cpus < 2 else cpus)
    assert parse_workers("3") == 3 and parse_workers("0") == 0


def _by_process(url: str, wanted: int = 3, **kwargs: Any) -> dict[str, tuple[int, str]]:
    """(status, body) by the process that answered (``Lifeline-Process``), asked until
    ``wanted`` of them have (each request is a new connection, which the kernel hands to
    one of the listeners)."""
    seen: dict[str, tuple[int, str]] = {}
    for _ in range(400):  # a hang guard: with three listeners, all show up in a few requests
        code, headers, text = http(url, **kwargs)
        seen.setdefault(headers.get("Lifeline-Process", "?"), (code, text))
        if len(seen) >= wanted:
            break
    return seen


def _answered_by(url: str, what: str, wanted: int, **kwargs: Any) -> set[str]:
    """The processes that answered ``url``, each with 200."""
    seen = _by_process(url, wanted, **kwargs)
    assert all(code == 200 for code, _ in seen.values()), (what, seen)
    return set(seen)


EVERY = {"main", "worker 0", "worker 1"}


def test_probe_is_answered_in_every_process_and_the_rest_from_one_board(
    lab: LabThread, tmp_path: Path
) -> None:
    s = start_serve(fast_config(lab.config_path, tmp_path), tmp_path / "data", "--workers", "2")
    try:
        wait_for("two worker processes", lambda: len(_children(s.proc.pid)) == 2 or None)
        pids = _children(s.proc.pid)
        wait_for("the first full round", lambda: ready(s))
        blocked = next(r["target"] for r in lab.expected if r["service"] == "dns-nxdomain"
                       and r["target"].startswith("https://"))  # fmt: skip
        url = f"{s.url}probe?target={quote(blocked)}&vantage=censored"
        seen = _answered_by(url, "/probe", 3)
        assert seen == {"main", "worker 0", "worker 1"}, seen
        # judged in each process with the schedule's context: the same verdict everywhere
        for _ in range(12):
            code, _, text = http(url)
            assert metric(text, "lifeline_verdict", verdict="dns_blocked") == [1], text
        # everything else comes from the main process's one board, whichever listener took it
        pages = {}
        for _ in range(12):
            code, headers, text = http(s.url + "metrics")
            assert code == 200 and headers["Lifeline-Process"] == "main"
            pages[text.count("\nlifeline_verdict{")] = text
        assert len(pages) == 1, "every scrape shows the same series"
        code, headers, text = http(s.url + "api/v1/status", method="GET")
        assert code == 200 and headers["Lifeline-Process"] == "main"
        code, headers, _ = http(s.url + "-/ready")
        assert code == 200 and headers["Lifeline-Process"] == "main"
    finally:
        assert stop(s.proc) == 0, s.err.read_text()
    assert not any(_alive(p) for p in pids), "workers outlived serve"


def test_a_reload_reaches_every_process(lab: LabThread, tmp_path: Path) -> None:
    config = fast_config(lab.config_path, tmp_path)
    s = start_serve(config, tmp_path / "data", "--workers", "2")
    try:
        wait_for("two worker processes", lambda: len(_children(s.proc.pid)) == 2 or None)
        newly = f"{s.url}probe?target=dns://www.newly.lifeline.test&vantage=control"
        refused = _by_process(newly)
        assert set(refused) == EVERY and all(c == 400 for c, _ in refused.values()), refused
        document = yaml.safe_load(config.read_text())
        document["probe"]["allow"].append("dns://*.newly.lifeline.test")
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        code, headers, body = http(s.url + "-/reload", method="POST")
        assert code == 200 and headers["Lifeline-Process"] == "main", body  # wherever it landed
        admitted = wait_for("every process on the new config",
                            lambda: (seen := _by_process(newly)) and all(
                                c == 200 for c, _ in seen.values()) and seen)  # fmt: skip
        assert set(admitted) == EVERY
        for _, text in admitted.values():
            assert metric(text, "probe_success") == [0]  # measured: the lab does not know it
        # and back through SIGHUP to the main process alone
        document["probe"]["allow"].remove("dns://*.newly.lifeline.test")
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        s.proc.send_signal(signal.SIGHUP)
        wait_for("every process on the old config again",
                 lambda: all(c == 400 for c, _ in _by_process(newly).values()))  # fmt: skip
        assert set(_by_process(newly)) == EVERY
    finally:
        assert stop(s.proc) == 0, s.err.read_text()


def _serving_on_two_workers(lab: LabThread, tmp_path: Path) -> tuple[Served, str, set[int]]:
    """serve with two workers, each answering /probe: (serve, a /probe URL, the workers)."""
    s = start_serve(fast_config(lab.config_path, tmp_path), tmp_path / "data", "--workers", "2")
    try:
        wait_for("two worker processes", lambda: len(_children(s.proc.pid)) == 2 or None)
        probe = f"{s.url}probe?target=dns://www.allowed.lifeline.test&vantage=control"
        assert _answered_by(probe, "/probe", 3) == EVERY
    except BaseException:
        stop(s.proc)
        raise
    return s, probe, _children(s.proc.pid)


def test_a_killed_worker_is_restarted_and_listens_again(lab: LabThread, tmp_path: Path) -> None:
    s, probe, before = _serving_on_two_workers(lab, tmp_path)
    try:
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for("a new worker", lambda: (now := _children(s.proc.pid)) and len(now) == 2
                 and victim not in now)  # fmt: skip
        assert _answered_by(probe, "/probe", 3) == EVERY  # the new one listens too
        _, _, text = http(s.url + "metrics")
        assert metric(text, "lifeline_measuring_worker_restarts_total") == [1]
        assert metric(text, "lifeline_measuring_workers_running") == [2]
        assert s.proc.poll() is None
    finally:
        assert stop(s.proc) == 0, s.err.read_text()
    assert not any(_alive(p) for p in _children(s.proc.pid) | before)


def test_tls_and_basic_auth_on_every_listener(lab: LabThread, tmp_path: Path) -> None:
    web, cert = tls_and_basic_auth(tmp_path)
    s = start_serve(fast_config(lab.config_path, tmp_path), tmp_path / "data",
                    "--workers", "2", "--web-config", str(web))  # fmt: skip
    try:
        assert s.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        wait_for("two worker processes", lambda: len(_children(s.proc.pid)) == 2 or None)
        probe = "probe?target=dns://www.allowed.lifeline.test&vantage=control"
        refused = _by_process(s.url + probe, context=ctx)
        assert set(refused) == EVERY and all(c == 401 for c, _ in refused.values()), refused
        wrong = _by_process(s.url + probe, context=ctx, headers=basic("prometheus", "wrong"))
        assert set(wrong) == EVERY and all(c == 401 for c, _ in wrong.values()), wrong
        good = _by_process(s.url + probe, context=ctx, headers=basic("prometheus", "s3cret"))
        assert set(good) == EVERY and all(c == 200 for c, _ in good.values()), good
        for path in ("metrics", "-/healthy", "api/v1/status"):
            # forwarded from whichever listener took them, checked in the main process
            for _ in range(12):
                code, headers, _ = http(s.url + path, context=ctx)
                assert code == 401 and headers["Lifeline-Process"] == "main", path
                assert headers.get("WWW-Authenticate", "").startswith("Basic")
                code, _, _ = http(s.url + path, context=ctx, headers=basic("prometheus", "s3cret"))
                assert code == 200, path
    finally:
        assert stop(s.proc) == 0, s.err.read_text()


def test_workers_die_with_a_killed_serve_and_free_the_port(lab: LabThread, tmp_path: Path) -> None:
    s, _, workers = _serving_on_two_workers(lab, tmp_path)
    s.proc.kill()  # no chance to tell anyone
    s.proc.wait()
    wait_for("the workers to exit", lambda: not any(_alive(p) for p in workers))
    host, port = s.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.socket() as again:  # nobody listens there any more
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not LISTEN
        again.bind((host, int(port)))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=60).close()
    # its private socket directory, left behind, goes with the next serve's start
    stale = list(Path(tempfile.gettempdir()).glob(f"lifeline-serve-{s.proc.pid}-*"))
    assert stale
    config = fast_config(lab.config_path, tmp_path)
    again = start_serve(config, tmp_path / "data2", "--workers", "2")
    try:
        assert not any(p.exists() for p in stale)
    finally:
        assert stop(again.proc) == 0, again.err.read_text()
    assert not list(Path(tempfile.gettempdir()).glob(f"lifeline-serve-{again.proc.pid}-*"))
