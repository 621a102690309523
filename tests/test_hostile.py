"""The hostile-server corpus (tests/hostile/): every case, every way a user measures it.

Each case is measured with :func:`probes.measure.measure` (bounded time and
memory, a clear failure from the vocabulary), by `lifeline check` in a
subprocess (one run for the corpus, one for the proxy vantages), and by a
running `lifeline serve`. Redirects outside the target's reach are shown to be
refused before any resolver question or dial for them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probes.failures import Failure, is_known
from probes.http import MAX_HEADER_VALUE, MAX_TITLE
from probes.lab.safety import is_lab_address
from probes.measure import measure
from probes.model import Proxy, ResolverSpec, Target, Vantage
from probes.net import MeasuredSocket
from probes.records import Measurement
from probes.tls import MAX_SAN
from tests.hostile import (
    CASES,
    DIRECT_VANTAGE,
    MAX_BODY_BYTES,
    METADATA_ADDRESS,
    PRIVATE_ADDRESS,
    PROXIED_SERVICE,
    TIMEOUT_S,
    ZONE,
    Case,
    HostileCorpus,
    HostileThread,
    Kind,
    RecordingNet,
    available,
    case_named,
)

pytestmark = pytest.mark.both_loops

#: How long past its deadline a measurement may take to end (a loaded 2-core machine).
SLACK_S = 3.0
#: tracemalloc peak allowed per measurement: the body cap thrice, plus room for the libraries.
MEMORY_BOUND = 3 * MAX_BODY_BYTES + 8 * 1024 * 1024
PROXY_KINDS = (Kind.SOCKS, Kind.CONNECT)
OUTSIDE = ("redirect-private", "redirect-metadata", "redirect-mapped", "redirect-intranet")


RUNNABLE = [
    pytest.param(c, id=c.name, marks=() if available(c) else pytest.mark.skip(f"needs {c.needs}"))
    for c in CASES
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileThread]:
    with HostileThread(tmp_path_factory.mktemp("hostile")) as running:
        yield running


def _vantage(corpus: HostileCorpus, case: Case) -> Vantage:
    resolver = ResolverSpec("udp", "127.0.0.1", corpus.resolver_port)
    proxy = None
    if case.kind in PROXY_KINDS:
        kind = "socks5" if case.kind is Kind.SOCKS else "http"
        proxy = Proxy(kind, "127.0.0.1", corpus.port_of(case.name))
    return Vantage(case.name, resolver, proxy=proxy)


async def _measure(
    corpus: HostileCorpus, case: Case, net: RecordingNet | None = None
) -> tuple[Measurement, RecordingNet]:
    """Measure one case; on ``net`` when given (shared nets: making one loads the trust store)."""
    own = net is None
    if net is None:
        net = _net(corpus, case)
    try:
        m = await measure(
            Target.parse(corpus.url(case)),
            net.vantage,
            net,
            timeout=TIMEOUT_S,
            max_body_bytes=MAX_BODY_BYTES,
            service=case.name,
        )
    finally:
        if own:
            await net.aclose()
    return m, net


def _net(corpus: HostileCorpus, case: Case) -> RecordingNet:
    return RecordingNet(_vantage(corpus, case), ca_file=str(corpus.ca_path))


def _outcome_problems(case: Case, stages: dict[str, Any]) -> list[str]:
    """What differs from the case's expected outcome (stages as JSON-like dicts)."""
    stage = stages.get(case.expect.stage)
    if stage is None:
        return [f"no {case.expect.stage} stage; stages: {stages}"]
    problems = []
    if stage["failure"] != case.expect.failure:
        problems.append(f"{case.expect.stage} failure {stage['failure']!r}, "
                        f"expected {case.expect.failure!r}")  # fmt: skip
    if stage["ok"] != (case.expect.failure is None):
        problems.append(f"{case.expect.stage} ok={stage['ok']}")
    if case.expect.truncated is not None and stage.get("body_truncated") != case.expect.truncated:
        problems.append(f"body_truncated={stage.get('body_truncated')}")
    for name, record in stages.items():
        if record is not None and record["failure"] is not None and not is_known(record["failure"]):
            problems.append(f"{name} failure {record['failure']!r} is not in the vocabulary")
    return problems


def _stages(m: Measurement) -> dict[str, Any]:
    """The stages as `check --format json` shows them."""
    doc = m.to_dict()
    return {name: doc["stages"][name] for name in ("dns", "tcp", "tls", "http")}


# --- measure(), one case at a time ---------------------------------------------------


@pytest.mark.parametrize("case", RUNNABLE)
async def test_each_case_ends_clearly_in_bounded_time_and_memory(
    case: Case, hostile: HostileThread
) -> None:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        m, net = await _measure(hostile.corpus, case)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.error is None, m.error
    assert _outcome_problems(case, _stages(m)) == []
    assert m.duration_s is not None and m.duration_s <= TIMEOUT_S + SLACK_S
    assert peak <= MEMORY_BOUND, f"{peak / 1e6:.1f} MB"
    assert all(is_lab_address(a) for a in net.dials), net.dials
    if m.http is not None:
        assert m.http.title is None or len(m.http.title) <= MAX_TITLE
        assert all(len(v) <= MAX_HEADER_VALUE for v in m.http.headers.values())
        assert m.http.body_length is None or m.http.body_length <= MAX_BODY_BYTES


def _open_sockets() -> set[int]:
    """The measurements' sockets (MeasuredSocket) that are still open, by identity."""
    return {id(o) for o in gc.get_objects() if isinstance(o, MeasuredSocket) and o.fileno() != -1}


async def _settled() -> None:
    for _ in range(5):  # a transport closes its socket a loop turn or two after close()
        await asyncio.sleep(0)


@pytest.mark.parametrize("case", RUNNABLE)
async def test_no_connection_outlives_its_measurement(case: Case, hostile: HostileThread) -> None:
    before = _open_sockets()
    await _measure(hostile.corpus, case)
    await _settled()
    assert _open_sockets() - before == set()


async def test_bombs_and_endless_bodies_stop_exactly_at_the_cap(hostile: HostileThread) -> None:
    for case in CASES:
        if case.expect.truncated and available(case) and case.name != "slowloris-body":
            m, _ = await _measure(hostile.corpus, case)
            assert m.http is not None and m.http.body_length == MAX_BODY_BYTES, case.name


async def test_a_huge_title_is_cut_and_broken_utf8_is_replaced(hostile: HostileThread) -> None:
    m, _ = await _measure(hostile.corpus, case_named("huge-title"))
    assert m.http is not None and m.http.title == "T" * MAX_TITLE
    m, _ = await _measure(hostile.corpus, case_named("invalid-utf8"))
    assert m.http is not None and m.http.title is not None
    assert m.http.title.startswith("caf\ufffd") and "bad" in m.http.title


async def test_a_64k_chain_verifies_and_its_names_are_capped(hostile: HostileThread) -> None:
    m, _ = await _measure(hostile.corpus, case_named("tls-big-chain"))
    assert m.tls is not None and m.tls.ok and m.tls.certificate is not None
    assert len(m.tls.certificate.san) == MAX_SAN
    assert m.tls.bytes_received is not None and m.tls.bytes_received > 64 * 1024


async def test_dns_answers_are_bounded_and_forgeries_ignored(hostile: HostileThread) -> None:
    m, _ = await _measure(hostile.corpus, case_named("dns-many-records"))
    assert m.dns is not None and m.dns.ok
    assert all(len(q.answers) <= 32 for q in m.dns.queries) and len(m.dns.addresses) <= 32
    m, _ = await _measure(hostile.corpus, case_named("dns-wrong-id"))
    assert m.dns is not None and m.dns.addresses == ["127.0.0.1"]  # never the forged 127.0.0.99


@pytest.mark.parametrize("name", OUTSIDE)
async def test_redirects_outside_the_targets_reach_are_never_followed(
    name: str, hostile: HostileThread
) -> None:
    corpus = hostile.corpus
    m, net = await _measure(corpus, case_named(name))
    assert m.http is not None and m.http.failure == "http_bad_redirect"
    assert len(m.http.redirects) == 1  # the hop is recorded, as evidence
    assert net.dials == ["127.0.0.1"]  # only the target itself: nothing was dialled for it
    asked = set(corpus.questions)
    assert PRIVATE_ADDRESS not in asked and METADATA_ADDRESS not in asked
    if name == "redirect-intranet":  # a name may be asked; its private answer is not used
        assert f"intranet.{ZONE}" in asked


async def test_a_redirect_to_another_lab_name_is_followed(hostile: HostileThread) -> None:
    m, net = await _measure(hostile.corpus, case_named("redirect-elsewhere"))
    assert m.http is not None and m.http.ok and m.http.status == 200
    assert m.http.final_url is not None and m.http.final_url.startswith(f"http://elsewhere.{ZONE}")
    assert f"elsewhere.{ZONE}" in hostile.corpus.questions
    assert net.dials == ["127.0.0.1", "127.0.0.1"]


async def test_a_normal_target_is_unaffected_by_the_whole_corpus_at_once(
    hostile: HostileThread,
) -> None:
    corpus = hostile.corpus
    cases = [c for c in CASES if available(c)]
    normal = case_named("normal")
    nets = {c.name: _net(corpus, c) for c in cases if c.kind in PROXY_KINDS}
    direct = _net(corpus, normal)
    before = _open_sockets()
    try:
        results = await asyncio.gather(
            *(_measure(corpus, c, nets.get(c.name, direct)) for c in cases),
            _measure(corpus, normal, direct),
            _measure(corpus, normal, direct),
        )
    finally:
        for net in [*nets.values(), direct]:
            await net.aclose()
    await _settled()
    assert _open_sockets() - before == set()  # none left behind, even all at once
    for case, (m, _) in zip(cases, results, strict=False):
        assert m.error is None and m.duration_s is not None, case.name
        assert m.duration_s <= TIMEOUT_S + SLACK_S, case.name
        assert _outcome_problems(case, _stages(m)) == [], case.name
    for m, _ in results[-2:]:
        assert m.http is not None and m.http.ok and m.http.status == 200
        assert m.http.title == "Hostile lab: a normal page"


# --- lifeline check, in a subprocess --------------------------------------------------


def _check(config: Path, *extra: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check", "-c", str(config), "--format", "json",
         *extra],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the corpus is hostile: not every verdict is ok
    rows: list[dict[str, Any]] = json.loads(proc.stdout)["results"]
    return rows


@pytest.fixture(scope="module")
def checked(hostile: HostileThread) -> dict[tuple[str, str], dict[str, Any]]:
    """One `check` of the corpus from the relayed vantage, one of every proxy vantage."""
    proxies = [c.name for c in CASES if c.kind in PROXY_KINDS]
    rows = _check(hostile.config_path, "--vantage", DIRECT_VANTAGE)
    rows += _check(
        hostile.config_path, "--service", PROXIED_SERVICE, *[f"--vantage={p}" for p in proxies]
    )
    return {(r["service"], r["vantage"]): r for r in rows}


def _row_of(case: Case, rows: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    if case.kind in PROXY_KINDS:
        return rows[(PROXIED_SERVICE, case.name)]
    return rows[(case.name, DIRECT_VANTAGE)]


@pytest.mark.parametrize("case", RUNNABLE)
def test_check_reports_each_case(
    case: Case, checked: dict[tuple[str, str], dict[str, Any]]
) -> None:
    row = _row_of(case, checked)
    assert _outcome_problems(case, row["stages"]) == []
    assert row["reason"]
    if case.expect.failure is None:
        assert row["verdict"] == "ok", row["reason"]
    else:
        assert row["verdict"] == "unreachable", row["reason"]  # no control to tell why


def test_check_never_connected_outside_the_lab(
    checked: dict[tuple[str, str], dict[str, Any]], hostile: HostileThread
) -> None:
    connects = list(hostile.corpus.connects)
    assert connects and all(is_lab_address(a) for a in connects), connects
    assert (PROXIED_SERVICE, DIRECT_VANTAGE) in checked  # the reference went through the relay


# --- lifeline serve, running ------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_serve_measures_the_corpus_and_keeps_serving(
    hostile: HostileThread, tmp_path: Path
) -> None:
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", "-c", str(hostile.config_path),
             "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
            stdout=o, stderr=e,
        )  # fmt: skip
    try:
        base = _wait_listening(proc, out, err)
        rows = _wait_all_measured(base)
        assert _get(base + "-/healthy")[0] == 200
        assert _get(base + "metrics")[0] == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, err.read_text()
    for case in CASES:
        if not available(case):
            continue
        proxied = case.kind in PROXY_KINDS
        verdict = rows[(PROXIED_SERVICE, case.name) if proxied else (case.name, DIRECT_VANTAGE)]
        expected = {"ok" if case.expect.failure is None else "unreachable"}
        if not proxied and case.expect.stage == "dns" and case.expect.failure in (
            Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER,
        ):  # fmt: skip
            # serve measures every case from every vantage, all asking the one resolver:
            # once two other vantages have failed the same definite way, the classifier's
            # no-control consensus rule (probes/classify.py) calls it an outage
            expected.add("service_down")
        assert verdict in expected, case.name


def _wait_listening(proc: subprocess.Popen[bytes], out: Path, err: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.1)
    raise AssertionError("serve did not start listening")


def _wait_all_measured(base: str) -> dict[tuple[str, str], str]:
    """(service, vantage) -> verdict, once every pair of the config has one."""
    wanted = sum(1 for c in CASES if available(c) and c.kind not in PROXY_KINDS) + 1
    wanted += sum(1 for c in CASES if c.kind in PROXY_KINDS)
    deadline = time.monotonic() + 120
    rows: dict[tuple[str, str], str] = {}
    while time.monotonic() < deadline:
        _, body = _get(base + "api/v1/status")
        doc = json.loads(body)
        rows = {(r["service"], r["vantage"]): r["verdict"] for r in doc["results"]}
        relevant = {k for k in rows if k[1] == DIRECT_VANTAGE or k[0] == PROXIED_SERVICE}
        if len(relevant) >= wanted:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"serve measured only {len(rows)} pairs")
