"""Faults and threats: `lifeline serve` keeps measuring, stays honest and loses nothing.

Each fault is injected into a real `serve` (a subprocess on the lab, loopback
only) the way it happens to an operator: the control vantage dies, the disk
fills, another process holds the store, the store is damaged, the process is
killed mid-write. The clock's part is the schedule policy's, tested with an
injected clock. The security review (docs/security.md) names the tests of
its threats; those not covered elsewhere are at the end of this file.
"""

from __future__ import annotations

import base64
import errno
import gzip
import inspect
import io
import itertools
import json
import os
import random
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from exporter.logs import BadLine, log_files, read_lines
from exporter.scheduler import Monitor, SchedulePolicy, epoch, slots_for
from exporter.server import Server
from exporter.store import DB_NAME, Store
from exporter.webconfig import WebConfig
from probes.config import load_config, parse_config
from probes.lab import LabThread
from tests.test_serve import (
    Served,
    fast_config,
    http,
    lab_target,
    metric,
    ready,
    start_serve,
    status,
    stop,
    verdicts,
    wait_for,
)

pytestmark = pytest.mark.both_loops

ROOT = Path(__file__).resolve().parent.parent


def _serve_argv(config: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "exporter.cli", "serve", "-c", str(config),
            "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]  # fmt: skip


def _row(served: Served, key: tuple[str, str, str]) -> dict[str, Any] | None:
    rows = status(served)["results"]
    return next((r for r in rows if (r["service"], r["target"], r["vantage"]) == key), None)


def _vantage_up(served: Served, name: str) -> bool | None:
    up: bool | None = next(v["up"] for v in status(served)["vantages"] if v["name"] == name)
    return up


def _scrape(served: Served) -> str:
    code, _, text = http(served.url + "metrics")
    assert code == 200
    return text


def _total(served: Served, name: str) -> float:
    return sum(metric(_scrape(served), name))


def _stored(served: Served, since: str = "1h") -> list[dict[str, Any]]:
    code, _, body = http(f"{served.url}api/v1/measurements?since={since}&limit=100000")
    assert code == 200
    return [json.loads(line) for line in body.splitlines()]


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


# --- the control vantage dies --------------------------------------------------------------------


def test_a_dead_control_gives_honest_unreachable_verdicts_and_recovers(
    lab: LabThread, tmp_path: Path
) -> None:
    config = fast_config(lab.config_path, tmp_path)
    good = config.read_text()
    document = yaml.safe_load(good)
    vantages = {v["name"]: v for v in document["vantages"]}
    vantages["control"]["resolver"] = vantages["shutdown"]["resolver"]  # never answers
    dead = yaml.safe_dump(document, sort_keys=False)
    blocked = ("dns-nxdomain", lab_target(lab, "dns-nxdomain", "https://"), "censored")
    reachable = ("open", lab_target(lab, "open", "https://"), "censored")

    served = start_serve(config, tmp_path / "data")
    try:
        wait_for("the first full round", lambda: ready(served))
        assert verdicts(served)[blocked] == "dns_blocked"

        config.write_text(dead)
        assert http(served.url + "-/reload", method="POST")[0] == 200
        row = wait_for(
            "the blocked target to become unreachable",
            lambda: (
                (r := _row(served, blocked)) is not None and r["verdict"] == "unreachable" and r
            ),
        )
        assert "the control vantage is down" in row["reason"], row["reason"]
        assert "cannot be told from an outage" in row["reason"]
        wait_for("the control to be shown down", lambda: _vantage_up(served, "control") is False)
        assert metric(_scrape(served), "lifeline_vantage_up", vantage="control") == [0]
        assert verdicts(served)[reachable] == "ok"  # what works is still called ok

        config.write_text(good)
        assert http(served.url + "-/reload", method="POST")[0] == 200
        wait_for(
            "dns_blocked again once the control is back",
            lambda: verdicts(served)[blocked] == "dns_blocked",
        )
        wait_for("the control to be shown up", lambda: _vantage_up(served, "control") is True)
    finally:
        assert stop(served.proc) == 0, served.err.read_text()


# --- the disk fills ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root can mount one); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (needs root): tests/test_logs.py covers a full disk "
            f"in-process: {mounted.stderr.strip()}"
        )
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left (ENOSPC)."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            data = b"\0" * size
            while True:
                try:
                    f.write(data)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


def test_a_full_disk_costs_log_lines_counted_and_logged_once_then_recovers(
    lab: LabThread, tmp_path: Path, small_disk: Path
) -> None:
    data = small_disk  # serve's own stdout and stderr go beside it, not on the full disk
    served = start_serve(fast_config(lab.config_path, tmp_path), data)
    try:
        wait_for("the first full round", lambda: ready(served))
        assert _total(served, "lifeline_log_write_failures_total") == 0
        filler = small_disk / "filler"
        _fill(filler)

        wait_for(
            "a few lost lines to be counted",
            lambda: _total(served, "lifeline_log_write_failures_total") >= 20,
        )
        measured = _total(served, "lifeline_measurements_total")
        wait_for(
            "measuring to go on while the disk is full",
            lambda: _total(served, "lifeline_measurements_total") >= measured + 20,
        )
        assert ready(served) and status(served)["results"]
        err = served.err.read_text()
        lost = _total(served, "lifeline_log_write_failures_total")
        # the cause once per spell of failures, not once per lost line (a line small
        # enough for the last block's slack may still land: that is said, truthfully)
        spells = err.count("cannot write")
        assert spells == err.count("writable again") + 1, err
        assert "No space left on device" in err
        assert spells * 5 <= lost, (spells, lost)
        assert err.count("store write failed") <= err.count("store writes work again") + 1

        filler.unlink()
        recovered = time.time()
        wait_for("the log to be writable again", lambda: _log_times_after(data, recovered))
        wait_for("the store to take writes again", lambda: _stored(served, since="15s"))
        err = served.err.read_text()
        assert err.count("cannot write") == err.count("writable again"), err
    finally:
        assert stop(served.proc) == 0, served.err.read_text()
    for path in log_files(data):
        assert all(isinstance(item, dict) for item in _log_items(path)), path
    with Store(data) as store:
        assert store.integrity_check() == "ok"


def _log_items(path: Path) -> list[dict[str, Any] | BadLine]:
    """Every line of a probe log file (plain or gzipped): a record, or why it is not one."""
    raw = path.read_bytes()
    stream = io.BytesIO(gzip.decompress(raw) if path.suffix == ".gz" else raw)
    return [item for _, item in read_lines(stream)]


def _log_times_after(data: Path, when: float) -> bool:
    """Whether the day's probe log has a record of a measurement started after ``when``."""
    return any(
        isinstance(item, dict) and epoch(item["time"]) > when
        for path in log_files(data)
        if path.suffix != ".gz"
        for item in _log_items(path)
    )


# --- the store is locked or damaged --------------------------------------------------------------


@pytest.mark.parametrize("how", ["exclusive locking mode", "write transaction"])
def test_a_store_locked_by_another_process_stops_serve_with_a_clear_message(
    lab: LabThread, tmp_path: Path, how: str
) -> None:
    data = tmp_path / "data"
    Store(data).close()
    db = data / DB_NAME
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        if how == "exclusive locking mode":
            holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM measurements").fetchone()
        done = subprocess.run(
            _serve_argv(fast_config(lab.config_path, tmp_path), data),
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert str(db) in done.stderr
    assert "locked by another process" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stdout
    with Store(data) as store:  # untouched, and usable once the other process let go
        assert store.integrity_check() == "ok"


def test_a_damaged_store_stops_serve_naming_the_file_and_leaves_it_untouched(
    lab: LabThread, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / DB_NAME
    damaged = b"SQLite format 3\x00" + bytes(range(256)) * 64  # a header, then garbage
    db.write_bytes(damaged)
    done = subprocess.run(
        _serve_argv(fast_config(lab.config_path, tmp_path), data),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert str(db) in done.stderr
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == damaged
    assert sorted(p.name for p in data.iterdir()) == [DB_NAME]


# --- the clock jumps -----------------------------------------------------------------------------


def _policy(start: float, seed: int) -> SchedulePolicy:
    config = parse_config(
        """
version: 1
defaults: {interval: 10s, timeout: 2s}
vantages:
  - {name: control, control: true, resolver: 127.0.0.1:5353}
  - {name: censored, resolver: 127.0.0.1:5354}
canaries: [https://canary.lifeline.test/]
services:
  - {name: s, targets: [https://a.lifeline.test/, dns://b.lifeline.test, tcp://c.lifeline.test:1]}
"""
    )
    return SchedulePolicy(slots_for(config), 10.0, start=start, rng=random.Random(seed))


def _run_until(policy: SchedulePolicy, start: float, end: float) -> list[tuple[str, str]]:
    """Every slot started from ``start`` to ``end`` in half-second steps; each finishes at once."""
    started: list[tuple[str, str]] = []
    now = start
    while now <= end:
        for slot, jobs in policy.due(now):
            started.append(slot.key)
            for job in jobs:
                policy.finished(job)
        now += 0.5
    return started


def test_a_clock_jump_forward_runs_each_slot_once_then_keeps_the_cadence() -> None:
    policy = _policy(0.0, seed=1)
    keys = sorted(s.key for s in policy.slots)
    assert sorted(_run_until(policy, 0.0, 9.5)) == keys  # the first round
    jobs = sum(len(s.jobs) for s in policy.slots)

    jump = 3600.0  # a suspended host wakes up an hour later
    after = _run_until(policy, jump, jump)
    assert sorted(after) == keys  # each slot once: no flood of the rounds that passed
    assert policy.skipped >= (jump / 10.0 - 2) * jobs  # and those rounds are counted
    assert sorted(_run_until(policy, jump + 0.5, jump + 10.0)) == keys  # then once an interval
    assert policy.next_due() <= jump + 20.0


def test_a_clock_jump_backwards_does_not_stall_the_schedule() -> None:
    policy = _policy(1_000_000.0, seed=2)
    keys = sorted(s.key for s in policy.slots)
    assert sorted(_run_until(policy, 1_000_000.0, 1_000_009.5)) == keys
    skipped = policy.skipped

    # an injected wall clock stepped back by a day (NTP, an operator): within one interval
    # of the new time every slot comes round again, once, and nothing is counted as skipped
    back = 1_000_010.0 - 86_400.0
    assert sorted(_run_until(policy, back, back + 9.5)) == keys
    assert policy.skipped == skipped
    assert policy.next_due() <= back + 20.0


def test_serve_schedules_by_the_monotonic_clock() -> None:
    # wall-clock steps (NTP, DST is not one) never reach the schedule: only record times
    assert inspect.signature(Monitor).parameters["clock"].default is time.monotonic


# --- SIGKILL mid-write ---------------------------------------------------------------------------


def test_sigkill_mid_write_loses_no_record_and_the_timeline_goes_on(
    lab: LabThread, tmp_path: Path
) -> None:
    config = fast_config(lab.config_path, tmp_path)
    data = tmp_path / "data"
    first = start_serve(config, data)
    try:
        wait_for("the first full round", lambda: ready(first))
        keys = len(verdicts(first))
        wait_for("three rounds stored", lambda: len(_stored(first)) >= 3 * keys)
        seen = _stored(first)  # committed before the kill
        before = {(r["service"], r["target"], r["vantage"]): (r["verdict"], r["since"])
                  for r in status(first)["results"]}  # fmt: skip
        first.proc.send_signal(signal.SIGKILL)  # serve is measuring and writing all the time
        first.proc.wait(timeout=60)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    assert first.proc.returncode == -signal.SIGKILL

    logged: set[str] = set()
    for path in log_files(data):  # every line whole (a torn last one would be skipped)
        items = _log_items(path)
        assert all(isinstance(item, dict) for item in items), path
        logged |= {_canonical(item) for item in items if isinstance(item, dict)}
    assert {_canonical(r) for r in seen} <= logged  # the probe log holds all that was stored

    second = start_serve(config, data)  # SQLite replays its WAL on open
    try:
        after = {(r["service"], r["target"], r["vantage"]): (r["verdict"], r["since"])
                 for r in status(second)["results"]}  # fmt: skip
        kept = [k for k in before if k in after and after[k][0] == before[k][0]]
        assert len(kept) >= keys // 2
        assert all(after[k][1] == before[k][1] for k in kept)  # `since` survived the kill
        newest = max(r["time"] for r in seen)
        wait_for(
            "the restarted serve to store new measurements",
            lambda: any(r["time"] > newest for r in _stored(second, since="1m")),
        )
    finally:
        assert stop(second.proc) == 0, second.err.read_text()

    with Store(data) as store:
        assert store.integrity_check() == "ok"
        stored = list(store.measurements())
        assert {_canonical(r) for r in seen} <= {_canonical(r) for r in stored}
        _assert_continuous(store.changes(), stored)


def _assert_continuous(changes: list[Any], stored: list[dict[str, Any]]) -> None:
    """Each period ends where the next of its key begins; a key that never changed has one."""
    by_key: dict[tuple[str, str, str], list[Any]] = {}
    for c in changes:
        by_key.setdefault((c.service, c.target, c.vantage), []).append(c)
    for periods in by_key.values():
        for earlier, later in itertools.pairwise(periods):
            assert earlier.until == later.since and later.previous == earlier.verdict
        assert periods[-1].until is None
    verdicts_of: dict[tuple[str, str, str], set[str]] = {}
    for r in stored:
        verdicts_of.setdefault((r["service"], r["target"], r["vantage"]), set()).add(r["verdict"])
    steady = [k for k, v in verdicts_of.items() if len(v) == 1]
    assert steady
    assert all(len(by_key[k]) == 1 for k in steady)  # the restart did not cut the timeline


# --- security: secrets in the config -------------------------------------------------------------

ENV_SECRET = "LIFELINE_TEST_SOCKS_PASSWORD"


@dataclass(frozen=True)
class SecretServe:
    """`serve` on the lab with proxy passwords: one from the environment, one in the file."""

    served: Served
    config: Path
    from_env: str
    written: str


@pytest.fixture(scope="module")
def secret_serve(lab: LabThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretServe]:
    work = tmp_path_factory.mktemp("secrets")
    config = fast_config(lab.config_path, work)  # probe.allow: dns://*.allowed.lifeline.test
    document = yaml.safe_load(config.read_text())
    from_env, written = f"env-{secrets.token_hex(8)}", f"file-{secrets.token_hex(8)}"
    for v in document["vantages"]:
        if v["name"] == "censored":  # the lab's middlebox accepts any user and password
            v["proxy"] = v["proxy"].replace("socks5://", f"socks5://watcher:${{{ENV_SECRET}}}@")
        elif v["name"] == "shutdown":
            v["proxy"] = v["proxy"].replace("socks5://", f"socks5://watcher:{written}@")
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENV_SECRET, from_env)  # serve inherits it; the file only names it
        served = start_serve(config, work / "data")
    try:
        wait_for("the first full round", lambda: ready(served))
        yield SecretServe(served, config, from_env, written)
    finally:
        assert stop(served.proc) == 0, served.err.read_text()


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", *argv],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _leaks(text: str | bytes, *secrets_: str) -> list[str]:
    """Which secrets appear in ``text``, as they are or base64-encoded (as in a header)."""
    data = text.encode() if isinstance(text, str) else text
    found = []
    for secret in secrets_:
        forms = (secret.encode(), base64.b64encode(f"watcher:{secret}".encode()))
        if any(form in data for form in forms):
            found.append(secret)
    return found


def _files_under(directory: Path, *, skip: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path != skip:
            data = path.read_bytes()
            yield path, gzip.decompress(data) if path.suffix == ".gz" else data


def test_proxy_passwords_never_appear_in_any_output_log_metric_or_export(
    lab: LabThread, secret_serve: SecretServe
) -> None:
    config, served = secret_serve.config, secret_serve.served
    work = config.parent
    env = {**os.environ, ENV_SECRET: secret_serve.from_env}
    outputs: dict[str, str] = {}
    target = lab_target(lab, "tcp-reset", "https://")
    for path in ("metrics", "api/v1/status", "api/v1/measurements?since=1h", "",
                 "api/v1/timeline", "api/v1/summary.txt", "api/v1/incidents",
                 f"target?service=tcp-reset&target={quote(target)}&vantage=censored",
                 f"probe?target={quote(target)}&vantage=censored"):  # fmt: skip
        code, _, body = http(served.url + path)
        assert code == 200, (path, body)
        outputs[f"GET /{path}"] = body

    code, outputs["validate"] = _run(["validate", "-c", str(config)], env)
    assert code == 0, outputs["validate"]
    check = ["check", "-c", str(config), "--format", "jsonl", "--log", str(work / "check.jsonl")]
    code, outputs["check"] = _run(check, env)
    assert code == 1, outputs["check"]
    rows = [json.loads(line) for line in outputs["check"].splitlines() if line.startswith("{")]
    verdicts_ = {(r["service"], r["vantage"]): r["verdict"] for r in rows}
    assert verdicts_[("tcp-reset", "censored")] == "tcp_blocked"  # the proxy was really used
    for fmt in ("jsonl", "csv", "ooni"):  # while serve writes: WAL readers do not wait
        code, outputs[f"export {fmt}"] = _run(
            ["export", "--data-dir", str(served.data_dir), "--since", "1h", "--format", fmt,
             "-c", str(config)], env)  # fmt: skip
        assert code == 0, outputs[f"export {fmt}"]
    code, outputs["incidents"] = _run(["incidents", "--data-dir", str(served.data_dir)], env)
    assert code == 0, outputs["incidents"]
    outputs["serve"] = served.out.read_text() + served.err.read_text()

    secrets_ = (secret_serve.from_env, secret_serve.written)
    leaked = {name: _leaks(text, *secrets_) for name, text in outputs.items()}
    leaked |= {str(p): _leaks(b, *secrets_) for p, b in _files_under(work, skip=config)}
    assert not {k: v for k, v in leaked.items() if v}, "a proxy password leaked"
    assert _leaks(config.read_bytes(), *secrets_) == [secret_serve.written]  # the grep works


# --- security: bounded label values --------------------------------------------------------------


def test_probe_requests_never_add_label_values_to_the_metrics(secret_serve: SecretServe) -> None:
    served = secret_serve.served
    document = yaml.safe_load(secret_serve.config.read_text())
    targets = {t if isinstance(t, str) else t["url"] for s in document["services"]
               for t in s["targets"]}  # fmt: skip
    targets |= set(document["canaries"])
    names = {v["name"] for v in document["vantages"]}
    services = {s["name"] for s in document["services"]} | {"canaries"}
    before = _label_values(_scrape(served))
    for i in range(40):  # what a scanner or a curious user would send
        assert http(f"{served.url}probe?target=http://127.0.0.1:{1024 + i}/x{i}")[0] == 400
        assert http(f"{served.url}probe?target={quote(min(targets))}&vantage=v{i}")[0] == 400
    for i in range(5):  # admitted by probe.allow: answered, never published
        code, _, _ = http(f"{served.url}probe?target=dns://n{i}.allowed.lifeline.test")
        assert code == 200
    after = _label_values(_scrape(served))
    assert after == before
    assert after["target"] <= targets and after["vantage"] <= names
    assert after["service"] <= services


def _label_values(text: str) -> dict[str, set[str]]:
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, set[str]] = {"service": set(), "target": set(), "vantage": set()}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for label, seen in values.items():
                if label in s.labels:
                    seen.add(s.labels[label])
    return values


# --- security: auth on every route ---------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_basic_auth_guards_every_route_of_the_application(lab: LabThread) -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))
    monitor = Monitor(load_config(lab.config_path))  # not started: nothing is measured
    server = Server(
        monitor, config_path=None, web_config=WebConfig(users={"prometheus": hashed}),
        agent="lab-agent",
    )  # fmt: skip
    app = server.app()
    routes = sorted(
        {(r.method, re.sub(r"\{[^}]*\}", "x", r.resource.canonical))
         for r in app.router.routes() if r.resource is not None and r.method != "HEAD"}
    )  # fmt: skip
    paths = {p for _, p in routes}
    assert {"/metrics", "/probe", "/-/healthy", "/-/reload", "/", "/api/v1/measure"} <= paths
    try:
        async with TestClient(TestServer(app)) as client:
            for method, path in routes:
                for headers in ({}, _basic("prometheus", "wrong"), _basic("nobody", "right")):
                    async with client.request(method, path, headers=headers) as response:
                        assert response.status == 401, (method, path, headers)
            async with client.get("/-/healthy", headers=_basic("prometheus", "right")) as response:
                assert response.status == 200
    finally:
        await monitor.aclose()


# --- security: the container, pinned dependencies, the audit -------------------------------------


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_container_runs_as_a_non_root_user_with_pinned_dependencies() -> None:
    steps = _instructions((ROOT / "Dockerfile").read_text())
    users = [i for i, (word, _) in enumerate(steps) if word == "USER"]
    assert users, "the image must name a USER"
    last_user = steps[users[-1]][1].split(":")[0]
    assert last_user not in ("root", "0")
    starts = [i for i, (word, _) in enumerate(steps) if word in ("ENTRYPOINT", "CMD")]
    assert starts and min(starts) > users[-1]  # what runs, runs as that user
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert installs and all("-c constraints.txt" in args for args in installs)
    assert any(word == "COPY" and "constraints.txt" in args for word, args in steps)


def _runtime_closure() -> dict[str, Requirement]:
    """Our runtime requirements (pyproject.toml) and, through installed metadata, theirs."""
    from importlib import metadata

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    closure: dict[str, Requirement] = {}
    todo = [Requirement(r) for r in declared]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in closure or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        closure[name] = req
        todo += [Requirement(r) for r in metadata.requires(req.name) or []]
    return closure


def test_constraints_pin_every_runtime_dependency() -> None:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = Version(version)
    closure = _runtime_closure()
    assert set(pins) == set(closure), set(pins) ^ set(closure)
    for name, req in closure.items():
        assert req.specifier.contains(pins[name], prereleases=True), (name, req, pins[name])


_FAKE_AUDIT = """#!/bin/sh
echo "$@" > "{args}"
{body}
"""


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            'echo \'{"dependencies": [{"name": "aiohttp", "version": "3.14.5", "vulns": []}]}\'',
            0,
            "no known vulnerabilities",
        ),
        (
            'echo \'{"dependencies": [{"name": "aiohttp", "version": "3.14.5", "vulns": '
            '[{"id": "GHSA-test", "fix_versions": ["3.14.6"]}]}]}\'; exit 1',
            1,
            "VULNERABLE aiohttp 3.14.5: GHSA-test",
        ),
        (
            "echo 'requests.exceptions.ConnectionError: HTTPSConnectionPool(host=pypi.org): "
            "Max retries exceeded' >&2; exit 1",
            0,
            "warning: the vulnerability service",
        ),
        ("echo 'constraints.txt: invalid requirement' >&2; exit 2", 1, "pip-audit failed"),
    ],
    ids=["clean", "vulnerable", "service-unreachable", "broken"],
)
def test_the_ci_audit_fails_on_a_vulnerability_and_only_warns_when_offline(
    tmp_path: Path, body: str, status: int, says: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pip-audit"  # the real one would ask a service on the internet
    fake.write_text(_FAKE_AUDIT.format(args=tmp_path / "args", body=body))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "audit"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == status, done.stdout + done.stderr
    assert says in done.stdout + done.stderr
    assert "--requirement constraints.txt" in (tmp_path / "args").read_text()
