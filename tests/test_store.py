"""The record format and the measurement store: schema, round trip, timeline, migration, damage."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from exporter.asyncstore import AsyncStore
from exporter.logs import ProbeLog, read_lines, read_records
from exporter.store import DB_NAME, SCHEMA_VERSION, Store, StoreError
from probes.failures import Failure, unknown
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    Result,
    TCPAttempt,
    TCPStage,
    TLSCertificate,
    TLSStage,
    Verdict,
)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def iso(ts: float) -> str:
    """RFC 3339 UTC with microseconds, as the runner writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


# --- realistic records ---------------------------------------------------------------------


def dns_stage(name: str, addresses: list[str], failure: str | None = None) -> DNSStage:
    answers = [DNSAnswer("A", a, 300) for a in addresses if ":" not in a]
    rcode = "NXDOMAIN" if failure == Failure.DNS_NXDOMAIN else "NOERROR"
    queries = [
        DNSQuery("A", failure is None, failure, rcode, answers, 0.012),
        DNSQuery("AAAA", False, Failure.DNS_NO_ANSWER, "NOERROR", [], 0.011),
    ]
    return DNSStage(
        ok=failure is None,
        failure=failure,
        duration_s=0.013,
        name=name,
        resolver="udp://127.0.0.1:5353",
        addresses=addresses,
        queries=queries,
    )


def tcp_stage(address: str, port: int, failure: str | None = None) -> TCPStage:
    attempt = TCPAttempt(address, port, failure is None, failure, 0.004)
    return TCPStage(
        ok=failure is None,
        failure=failure,
        duration_s=0.004,
        attempts=[attempt],
        address=address if failure is None else None,
        port=port,
    )


def tls_stage(address: str, host: str, failure: str | None = None) -> TLSStage:
    cert = TLSCertificate(
        subject_cn=host,
        san=[host, f"www.{host}"],
        issuer="lifeline lab CA",
        not_before="2025-12-01T00:00:00Z",
        not_after="2027-12-01T00:00:00Z",
        sha256="ab" * 32,
    )
    ok = failure is None
    return TLSStage(
        ok=ok,
        failure=failure,
        duration_s=0.02,
        address=address,
        server_name=host,
        version="TLSv1.3" if ok else None,
        cipher="TLS_AES_256_GCM_SHA384" if ok else None,
        alpn="http/1.1" if ok else None,
        certificate=cert if ok else None,
        bytes_received=None if ok else 0,
    )


def http_stage(
    url: str, *, status: int = 200, title: str = "Daily News", body: int = 5120
) -> HTTPStage:
    return HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.05,
        url=url,
        final_url=url + "home",
        status=status,
        headers={"content-type": "text/html; charset=utf-8", "x-news-edition": "intl"},
        body_length=body,
        body_sha256="cd" * 32,
        body_head=f"<html><head><title>{title}</title></head><body>Ünïcode ✓",
        title=title,
        redirects=[HTTPHop(url, 301, url + "home", "127.0.0.2")],
        request_sent=True,
    )


def measurement(
    vantage: str,
    ts: float,
    *,
    target: str = "https://news.example/",
    service: str = "news",
    addresses: tuple[str, ...] = ("127.0.0.2",),
    dns_failure: str | None = None,
    tcp_failure: str | None = None,
    tls_failure: str | None = None,
    http: HTTPStage | None = None,
) -> Measurement:
    """A measurement of an https target that stops at the first failing stage."""
    host = target.split("/")[2]
    m = Measurement(target=target, vantage=vantage, time=iso(ts), duration_s=0.1, service=service)
    m.dns = dns_stage(host, [] if dns_failure else list(addresses), dns_failure)
    if dns_failure:
        return m
    m.tcp = tcp_stage(addresses[0], 443, tcp_failure)
    if tcp_failure:
        return m
    m.tls = tls_stage(addresses[0], host, tls_failure)
    if tls_failure:
        return m
    m.http = http or http_stage(target)
    return m


def result(
    verdict: Verdict,
    ts: float,
    *,
    vantage: str = "ir",
    target: str = "https://news.example/",
    service: str = "news",
    reason: str = "",
    **stages: Any,
) -> Result:
    """A result with the control's measurement of the same target."""
    obs = measurement(vantage, ts, target=target, service=service, **stages)
    ctl = measurement("control", ts, target=target, service=service)
    return Result(obs, verdict, reason or f"judged {verdict.value}", control=ctl, version="0.1.0")


def variety(ts: float) -> list[Result]:
    """One result of each common shape, failures from every stage."""
    r_unknown = result(Verdict.TLS_BLOCKED, ts + 6, tls_failure=unknown("weird\nalert 112"))
    r_error = Result(
        Measurement("tcp://127.0.0.1:1", "ir", iso(ts + 7), service="news", error="bad target"),
        Verdict.ERROR,
        "the measurement could not be made: bad target",
    )
    return [
        result(Verdict.OK, ts, reason="reachable and the same as from the control"),
        result(Verdict.DNS_BLOCKED, ts + 1, addresses=("10.10.34.34",)),
        result(Verdict.DNS_BLOCKED, ts + 2, dns_failure=Failure.DNS_NXDOMAIN),
        result(Verdict.TCP_BLOCKED, ts + 3, tcp_failure=Failure.CONNECTION_RESET),
        result(Verdict.TLS_BLOCKED, ts + 4, tls_failure=Failure.EOF),
        result(Verdict.HTTP_BLOCKED, ts + 5, http=http_stage("https://news.example/", status=451)),
        r_unknown,
        r_error,
    ]


# --- the schema ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_records_of_every_shape_validate(validator: jsonschema.Draft202012Validator) -> None:
    for r in variety(T0):
        errors = [e.message for e in validator.iter_errors(r.to_dict())]
        assert errors == [], (r.verdict, errors)


def test_schema_vocabularies_match_the_code() -> None:
    defs = json.loads(SCHEMA_FILE.read_text())
    assert defs["properties"]["verdict"]["enum"] == [v.value for v in Verdict]
    failure = defs["$defs"]["failure"]["oneOf"]
    assert failure[1]["enum"] == [f.value for f in Failure]


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("verdict",), "blocked", "verdict outside the closed set"),
        (("duration_s",), "0.1", "number as a string"),
        (("stages", "dns", "failure"), "dns_broken", "failure outside the vocabulary"),
        (("stages", "tcp", "attempts", 0, "port"), 70000, "port out of range"),
        (("stages", "http", "status"), "200", "status as a string"),
        (("time",), "yesterday", "time that is not RFC 3339"),
        (("control", "stages", "dns", "addresses"), "127.0.0.2", "addresses not a list"),
        (("stages", "tls", "ok"), 1, "ok not a boolean"),
    ],
)
def test_schema_rejects_a_wrong_type(
    validator: jsonschema.Draft202012Validator, path: tuple[Any, ...], value: Any, why: str
) -> None:
    record = result(Verdict.OK, T0).to_dict()
    node: Any = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not validator.is_valid(record), why


@pytest.mark.parametrize("field", ["verdict", "time", "stages", "control", "schema", "reason"])
def test_schema_rejects_a_missing_field(
    validator: jsonschema.Draft202012Validator, field: str
) -> None:
    record = result(Verdict.OK, T0).to_dict()
    del record[field]
    assert not validator.is_valid(record)


def test_schema_rejects_a_failed_stage_without_failure(
    validator: jsonschema.Draft202012Validator,
) -> None:
    record = result(Verdict.TCP_BLOCKED, T0, tcp_failure=Failure.CONNECTION_RESET).to_dict()
    record["stages"]["tcp"]["failure"] = None
    assert not validator.is_valid(record)


# --- store: round trip and queries ---------------------------------------------------------


def test_round_trip_through_the_store_is_lossless(tmp_path: Path) -> None:
    results = variety(T0)
    with Store(tmp_path) as store:
        store.add(results)
        stored = list(store.measurements())
    assert stored == [r.to_dict() for r in results]
    assert [Result.from_dict(d).to_dict() for d in stored] == stored


def test_round_trip_log_to_store_to_log_is_lossless(tmp_path: Path) -> None:
    results = variety(T0)
    with ProbeLog(tmp_path / "logs") as log:
        for r in results:
            log.write(r.to_dict())
    (path,) = (tmp_path / "logs").iterdir()
    with Store(tmp_path / "db") as store:
        store.add_records(read_records(path))
        assert list(store.measurements()) == [r.to_dict() for r in results]
        assert [c.verdict for c in store.changes()][:3] == ["ok", "dns_blocked", "tcp_blocked"]


def test_a_bad_record_stores_nothing_of_its_batch(tmp_path: Path) -> None:
    good = result(Verdict.OK, T0).to_dict()
    bad = {**good, "time": "not a time"}
    with Store(tmp_path) as store:
        with pytest.raises(ValueError, match="not a measurement record"):
            store.add_records([good, bad])
        assert list(store.measurements()) == [] and store.changes() == []
        assert store.current() == []


def test_measurements_filter_and_keep_time_order(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        # written out of order; one time carries an offset instead of Z
        late = result(Verdict.OK, T0 + 120, vantage="kz")
        early = result(Verdict.OK, T0, vantage="ir")
        offset = result(Verdict.OK, T0 + 60, vantage="ir", service="chat")
        offset.measurement.time = "2026-01-01T03:31:00+03:30"  # = T0 + 60
        store.add([late, early, offset])
        times = [d["vantage"] + "/" + d["service"] for d in store.measurements()]
        assert times == ["ir/news", "ir/chat", "kz/news"]
        assert [d["vantage"] for d in store.measurements(vantages=["kz"])] == ["kz"]
        assert [d["service"] for d in store.measurements(services=["chat"])] == ["chat"]
        since = list(store.measurements(since=iso(T0 + 60)))
        assert [d["vantage"] for d in since] == ["ir", "kz"]
        until = list(store.measurements(until=iso(T0 + 60)))
        assert [d["service"] for d in until] == ["news"]
        assert len(list(store.measurements(limit=2))) == 2


def test_verdict_changes_form_a_timeline(tmp_path: Path) -> None:
    verdicts = [Verdict.OK, Verdict.OK, Verdict.DNS_BLOCKED, Verdict.DNS_BLOCKED, Verdict.OK]
    with Store(tmp_path) as store:
        began = [store.add([result(v, T0 + 60 * i)]) for i, v in enumerate(verdicts)]
        assert [len(b) for b in began] == [1, 0, 1, 0, 1]
        assert began[2][0].previous == "ok" and began[2][0].verdict == "dns_blocked"
        changes = store.changes()
        assert [(c.verdict, c.previous) for c in changes] == [
            ("ok", None),
            ("dns_blocked", "ok"),
            ("ok", "dns_blocked"),
        ]
        assert [c.since for c in changes] == [iso(T0), iso(T0 + 120), iso(T0 + 240)]
        assert [c.until for c in changes] == [iso(T0 + 120), iso(T0 + 240), None]
        (now,) = store.current()
        assert now["verdict"] == "ok" and now["since"] == iso(T0 + 240)
        assert now["time"] == iso(T0 + 240)
        assert [c.verdict for c in store.changes(since=iso(T0 + 200))] == ["dns_blocked", "ok"]
        assert store.changes(vantage="kz") == []


def test_prune_drops_old_rows_but_keeps_what_is_still_going_on(tmp_path: Path) -> None:
    day = 86400.0
    with Store(tmp_path, retention_s=10 * day) as store:
        store.add([result(Verdict.DNS_BLOCKED, T0, vantage="ir")])
        store.add([result(Verdict.OK, T0 + day, vantage="ir")])
        store.add([result(Verdict.TCP_BLOCKED, T0, vantage="kz")])  # goes on
        store.add([result(Verdict.OK, T0 + 20 * day, vantage="ir")])
        removed = store.prune(now=T0 + 15 * day)
        assert removed == 4  # 3 measurements and the ended dns_blocked period
        assert [d["time"] for d in store.measurements()] == [iso(T0 + 20 * day)]
        kept = {(c.vantage, c.verdict) for c in store.changes()}
        assert kept == {("ir", "ok"), ("kz", "tcp_blocked")}


# --- store: schema migration and damage ----------------------------------------------------

_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE measurements (id INTEGER PRIMARY KEY, time TEXT NOT NULL, service TEXT NOT NULL,
    target TEXT NOT NULL, vantage TEXT NOT NULL, verdict TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX measurements_time ON measurements(time);
CREATE INDEX measurements_service ON measurements(service, time);
CREATE INDEX measurements_vantage ON measurements(vantage, time);
CREATE TABLE changes (id INTEGER PRIMARY KEY, service TEXT NOT NULL, target TEXT NOT NULL,
    vantage TEXT NOT NULL, verdict TEXT NOT NULL, previous TEXT, since TEXT NOT NULL, until TEXT,
    reason TEXT NOT NULL DEFAULT '');
CREATE INDEX changes_key ON changes(service, target, vantage, until);
"""


def _make_v1_store(directory: Path, results: list[Result]) -> None:
    """A store as lifeline with schema version 1 wrote it."""
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(_V1)
    for r in results:
        m = r.measurement
        db.execute(
            "INSERT INTO measurements (time, service, target, vantage, verdict, record) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (m.time, m.service, m.target, m.vantage, r.verdict.value, json.dumps(r.to_dict())),
        )
    first, second = results[0], results[-1]
    db.execute(
        "INSERT INTO changes (service, target, vantage, verdict, previous, since, until, reason) "
        "VALUES ('news', ?, 'ir', 'ok', NULL, ?, ?, 'fine')",
        (first.measurement.target, first.measurement.time, second.measurement.time),
    )
    db.execute(
        "INSERT INTO changes (service, target, vantage, verdict, previous, since, until, reason) "
        "VALUES ('news', ?, 'ir', 'dns_blocked', 'ok', ?, NULL, 'injected')",
        (first.measurement.target, second.measurement.time),
    )
    db.commit()
    db.close()


def test_a_v1_store_is_migrated_not_dropped(tmp_path: Path) -> None:
    old = [result(Verdict.OK, T0), result(Verdict.DNS_BLOCKED, T0 + 60, addresses=("10.10.34.34",))]
    _make_v1_store(tmp_path, old)
    with Store(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION > 1
        assert list(store.measurements()) == [r.to_dict() for r in old]
        assert [d["verdict"] for d in store.measurements(since=iso(T0 + 30))] == ["dns_blocked"]
        (now,) = store.current()
        assert (now["verdict"], now["since"], now["time"]) == (
            "dns_blocked",
            iso(T0 + 60),
            iso(T0 + 60),
        )
        began = store.add([result(Verdict.OK, T0 + 120)])
        assert [(c.previous, c.verdict) for c in began] == [("dns_blocked", "ok")]
        assert [c.until for c in store.changes()] == [iso(T0 + 60), iso(T0 + 120), None]
    with Store(tmp_path) as again:  # opening a current store migrates nothing
        assert again.schema_version == SCHEMA_VERSION
        assert len(list(again.measurements())) == 3


def test_a_store_from_a_newer_lifeline_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer lifeline"):
        Store(tmp_path)


def test_a_corrupted_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    garbage = b"this was a store until a disk ate it\x00\xff" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_a_truncated_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        for i in range(40):
            store.add([result(Verdict.OK, T0 + i, vantage=f"v{i}") for _ in range(5)])
    path = tmp_path / DB_NAME
    data = path.read_bytes()
    cut = data[: len(data) // 2]
    path.write_bytes(cut)
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == cut


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE photos (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a lifeline store"):
        Store(tmp_path)


# --- AsyncStore -----------------------------------------------------------------------------


async def test_async_store_works_from_the_event_loop(tmp_path: Path) -> None:
    store = AsyncStore(tmp_path)
    try:
        began = await store.add([result(Verdict.OK, T0), result(Verdict.OK, T0, vantage="kz")])
        assert len(began) == 2
        await store.add([result(Verdict.TCP_BLOCKED, T0 + 60, tcp_failure=Failure.TIMEOUT)])
        current = {c["vantage"]: c["verdict"] for c in await store.current()}
        assert current == {"ir": "tcp_blocked", "kz": "ok"}
        assert len(await store.measurements(vantages=["ir"])) == 2
        assert len(await store.changes(vantage="ir")) == 2
    finally:
        await store.aclose()


async def test_async_store_writes_do_not_block_the_event_loop(tmp_path: Path) -> None:
    store = AsyncStore(tmp_path)
    await store.open()
    blocker = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        write = asyncio.ensure_future(store.add([result(Verdict.OK, T0)]))
        ticks = 0
        for _ in range(20):  # the loop keeps running other work meanwhile
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20 and not write.done()
        blocker.execute("COMMIT")
        assert len(await write) == 1
    finally:
        blocker.close()
        await store.aclose()


async def test_async_store_batches_what_is_put_and_writes_the_rest_at_stop(
    tmp_path: Path,
) -> None:
    store = AsyncStore(tmp_path, flush_s=3600.0, batch=3)  # only a full batch is written early
    try:
        await store.open()
        store.start_writing()
        await store.put([result(Verdict.OK, T0, vantage=v).to_dict() for v in ("ir", "kz")])
        await asyncio.sleep(0.1)
        assert await store.current() == []  # queued: the batch is not full yet
        await store.put([result(Verdict.OK, T0, vantage="de").to_dict()])
        for _ in range(500):  # the full batch is written by the writer task, soon
            if len(await store.current()) == 3:
                break
            await asyncio.sleep(0.02)
        assert sorted(c["vantage"] for c in await store.current()) == ["de", "ir", "kz"]
        await store.put([result(Verdict.DNS_BLOCKED, T0 + 60, vantage="ir").to_dict()])
        await store.stop_writing()  # drains the partial batch
        current = {c["vantage"]: c["verdict"] for c in await store.current()}
        assert current == {"de": "ok", "ir": "dns_blocked", "kz": "ok"}
        assert store.write_failures == 0
        await store.put([result(Verdict.OK, T0 + 120, vantage="kz").to_dict()])  # not batching
        assert len(await store.measurements(vantages=["kz"])) == 2
    finally:
        await store.aclose()


async def test_async_store_reports_a_damaged_store(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"\x01" * 4096)
    store = AsyncStore(tmp_path)
    try:
        with pytest.raises(StoreError, match=DB_NAME):
            await store.open()
    finally:
        await store.aclose()


# --- crash safety ---------------------------------------------------------------------------

_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from exporter.logs import ProbeLog
from exporter.store import Store
from probes.records import Verdict
from tests.test_store import result

log = ProbeLog({dir!r}, max_bytes=1 << 30, fsync="never")
store = Store({dir!r})
verdicts = [Verdict.OK, Verdict.OK, Verdict.DNS_BLOCKED, Verdict.TCP_BLOCKED]
i = 0
while True:
    batch = [result(verdicts[(i + k) % 4], {t0} + i, vantage=f"v{{k}}") for k in range(3)]
    for r in batch:
        log.write(r.to_dict())
    store.add(batch)
    i += 1
"""


def test_sigkill_mid_write_leaves_whole_lines_and_a_consistent_store(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    script = _WRITER.format(root=root, dir=str(tmp_path), t0=T0)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            files = list(tmp_path.glob("lifeline-*.jsonl"))
            if files and files[0].stat().st_size > 400_000 and proc.poll() is None:
                break
            assert proc.poll() is None, "writer died on its own"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    (log_file,) = tmp_path.glob("lifeline-*.jsonl")
    with open(log_file, "rb") as stream:
        lines = list(read_lines(stream))
    assert len(lines) > 100
    assert all(isinstance(item, dict) for _, item in lines), "a line before the kill is broken"

    with Store(tmp_path) as store:
        assert store.integrity_check() == "ok"
        stored = list(store.measurements())
        assert stored and len(stored) % 3 == 0  # whole rounds only: one transaction each
        for vantage in ("v0", "v1", "v2"):
            _assert_timeline_matches(store, vantage, [d for d in stored if d["vantage"] == vantage])


def _assert_timeline_matches(store: Store, vantage: str, records: list[dict[str, Any]]) -> None:
    """The stored periods are the runs of equal verdicts, each ending where the next begins."""
    runs: list[tuple[str, str]] = []
    for d in records:
        if not runs or runs[-1][0] != d["verdict"]:
            runs.append((d["verdict"], d["time"]))
    changes = store.changes(vantage=vantage)
    assert [(c.verdict, c.since) for c in changes] == runs
    for before, after in itertools.pairwise(changes):
        assert before.until == after.since and after.previous == before.verdict
    assert changes[-1].until is None


def test_store_dir_is_created(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    Store(nested).close()
    assert (nested / DB_NAME).is_file()
    assert os.path.getsize(nested / DB_NAME) > 0
