"""The JSONL probe log: whole lines, rotation, gzip, and a full disk that does not stop anything."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.logs import (
    BadLine,
    ProbeLog,
    append_results,
    log_files,
    read_lines,
    read_records,
)
from probes.failures import Failure
from probes.records import Result, Verdict
from tests.test_store import T0, result, variety

DAY = 86400.0


class FakeClock:
    """A clock the test moves by hand (for rotation at midnight)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _records(n: int, start: float = T0) -> list[dict[str, object]]:
    verdicts = [Verdict.OK, Verdict.DNS_BLOCKED, Verdict.TCP_BLOCKED]
    out = []
    for i in range(n):
        v = verdicts[i % 3]
        extra = {"tcp_failure": Failure.CONNECTION_RESET} if v is Verdict.TCP_BLOCKED else {}
        out.append(result(v, start + i, vantage=f"v{i % 4}", **extra).to_dict())
    return out


def _same_size_records(n: int, start: float = T0) -> list[dict[str, object]]:
    """Records of one size, so once one does not fit, none after it does either."""
    return [result(Verdict.OK, start + i, vantage=f"v{i % 4}").to_dict() for i in range(n)]


def _read_dir(directory: Path) -> list[dict[str, object]]:
    return [rec for path in log_files(directory) for rec in read_records(path)]


def test_round_trip_through_the_log_is_lossless(tmp_path: Path) -> None:
    results = variety(T0)
    with ProbeLog(tmp_path, clock=FakeClock(T0)) as log:
        assert all(log.write(r.to_dict()) for r in results)
    (path,) = tmp_path.iterdir()
    assert path.name == "lifeline-2026-01-01.jsonl"
    back = list(read_records(path))
    assert back == [r.to_dict() for r in results]
    assert [Result.from_dict(d).to_dict() for d in back] == back
    assert path.read_bytes().count(b"\n") == len(results)


def test_rotation_by_size_keeps_every_line_whole_and_gzips_old_parts(tmp_path: Path) -> None:
    records = _records(60)
    with ProbeLog(tmp_path, max_bytes=20_000, clock=FakeClock(T0)) as log:
        for rec in records:
            assert log.write(rec)
    names = [p.name for p in log_files(tmp_path)]
    assert len(names) > 3
    assert names[-1] == "lifeline-2026-01-01.jsonl"
    assert names[0] == "lifeline-2026-01-01.1.jsonl.gz"
    assert all(n.endswith(".jsonl.gz") for n in names[:-1])
    for path in log_files(tmp_path)[:-1]:
        with gzip.open(path, "rb") as stream:
            data = stream.read()
        assert data.endswith(b"\n")
        assert len(data) <= 20_000
    assert _read_dir(tmp_path) == records


def test_rotation_at_midnight_utc(tmp_path: Path) -> None:
    clock = FakeClock(T0 + DAY - 2)
    records = _records(4)
    with ProbeLog(tmp_path, clock=clock) as log:
        log.write(records[0])
        log.write(records[1])
        clock.now = T0 + DAY + 1
        log.write(records[2])
        log.write(records[3])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lifeline-2026-01-01.jsonl.gz", "lifeline-2026-01-02.jsonl"]
    assert list(read_records(tmp_path / names[0])) == records[:2]
    assert list(read_records(tmp_path / names[1])) == records[2:]


def test_without_gzip_rotated_files_stay_plain(tmp_path: Path) -> None:
    records = _records(30)
    with ProbeLog(
        tmp_path, max_bytes=15_000, gzip_rotated=False, fsync="always", clock=FakeClock(T0)
    ) as log:
        for rec in records:
            log.write(rec)
    assert not list(tmp_path.glob("*.gz"))
    assert _read_dir(tmp_path) == records


def test_bad_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        ProbeLog(tmp_path, fsync="sometimes")


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_new_line(tmp_path: Path) -> None:
    records = _records(3)
    clock = FakeClock(T0)
    with ProbeLog(tmp_path, clock=clock) as log:
        log.write(records[0])
    path = tmp_path / "lifeline-2026-01-01.jsonl"
    with open(path, "ab") as f:  # what a crash in the middle of a write can leave
        f.write(json.dumps(records[1]).encode()[:100])
    assert list(read_records(path)) == records[:1]

    with ProbeLog(tmp_path, clock=clock) as log:  # a restarted writer
        log.write(records[2])
    with open(path, "rb") as stream:
        items = list(read_lines(stream))
    assert items[0] == (1, records[0])
    assert isinstance(items[1][1], BadLine) and items[1][0] == 2  # reported, not fatal
    assert items[2] == (3, records[2])
    assert list(read_records(path)) == [records[0], records[2]]


def test_a_restart_the_same_day_never_overwrites_a_gzipped_file(tmp_path: Path) -> None:
    records = _records(4)
    clock = FakeClock(T0)
    with ProbeLog(tmp_path, clock=clock) as log:
        log.write(records[0])
        clock.now = T0 + DAY
        log.write(records[1])  # closes and gzips day 1
    clock.now = T0  # a clock stepped back: day 1 is written again
    with ProbeLog(tmp_path, clock=clock) as log:
        log.write(records[2])
        clock.now = T0 + DAY
        log.write(records[3])
    assert sorted(rec["time"] for rec in _read_dir(tmp_path)) == sorted(r["time"] for r in records)  # type: ignore[type-var]


# --- a full or unwritable disk ---------------------------------------------------------------


def test_full_disk_loses_lines_counts_them_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    target = tmp_path / "lifeline-2026-01-01.jsonl"
    target.symlink_to("/dev/full")  # every write: ENOSPC
    records = _records(8)
    caplog.set_level(logging.INFO, logger="lifeline.logs")
    log = ProbeLog(tmp_path, clock=clock)
    try:
        assert [log.write(r) for r in records[:5]] == [False] * 5
        assert log.lost_writes == 5
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "No space left on device" in errors[0].getMessage()

        target.unlink()  # space again
        assert all(log.write(r) for r in records[5:])
        assert log.lost_writes == 5
        recovered = [r for r in caplog.records if "writable again" in r.getMessage()]
        assert len(recovered) == 1
    finally:
        log.close()
    assert list(read_records(target)) == records[5:]


_FSIZE_WRITER = """
import json, logging, resource, signal, sys
sys.path.insert(0, {root!r})
from exporter.logs import ProbeLog
from tests.test_logs import FakeClock, _same_size_records
from tests.test_store import T0

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, hard))
log = ProbeLog({dir!r}, clock=FakeClock(T0), fsync="always")
records = _same_size_records(40)
first = [log.write(r) for r in records[:30]]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the operator made room
second = [log.write(r) for r in records[30:]]
log.close()
print(json.dumps({{"first": first, "second": second, "lost": log.lost_writes}}))
"""


def test_file_size_limit_in_a_real_process(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    limit = 50_000  # a few records fit, the rest hit EFBIG, one of them half-way
    script = _FSIZE_WRITER.format(root=root, dir=str(tmp_path), limit=limit)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    first, second = report["first"], report["second"]
    written = first.count(True)
    assert 0 < written < 30, report
    assert first == [True] * written + [False] * (30 - written), report
    assert second == [True] * 10, report
    assert report["lost"] == 30 - written
    assert done.stderr.count("ERROR lifeline.logs") == 1, done.stderr
    assert done.stderr.count("writable again") == 1, done.stderr

    path = tmp_path / "lifeline-2026-01-01.jsonl"
    with open(path, "rb") as stream:
        items = list(read_lines(stream))
    assert all(isinstance(rec, dict) for _, rec in items)  # no torn line anywhere
    expected = _same_size_records(40)
    assert [rec for _, rec in items] == expected[:written] + expected[30:]


def test_append_results_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "check.jsonl"
    first, second = variety(T0)[:3], variety(T0 + 60)[:2]
    append_results(path, first)
    with open(path, "ab") as f:
        f.write(b'{"torn": ')  # a crashed earlier writer
    append_results(path, second)
    assert list(read_records(path)) == [r.to_dict() for r in first + second]


def test_append_results_raises_naming_the_file_when_it_cannot_write() -> None:
    with pytest.raises(OSError) as info:
        append_results("/dev/full", [result(Verdict.OK, T0)])
    assert info.value.filename == "/dev/full"


def test_log_files_order_parts_before_the_days_file(tmp_path: Path) -> None:
    for name in (
        "lifeline-2026-01-02.jsonl",
        "lifeline-2026-01-01.jsonl.gz",
        "lifeline-2026-01-02.10.jsonl.gz",
        "lifeline-2026-01-02.2.jsonl.gz",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in log_files(tmp_path)] == [
        "lifeline-2026-01-01.jsonl.gz",
        "lifeline-2026-01-02.2.jsonl.gz",
        "lifeline-2026-01-02.10.jsonl.gz",
        "lifeline-2026-01-02.jsonl",
    ]
    assert os.path.exists(tmp_path / "notes.txt")


def test_leftovers_of_a_crashed_run_are_gzipped_once(tmp_path: Path) -> None:
    old = _records(2, start=T0 - DAY)
    stale = tmp_path / "lifeline-2025-12-31.jsonl"  # closed, but the crash came before gzip
    stale.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in old))
    (tmp_path / "lifeline-2025-12-31.1.jsonl.gz.tmp").write_bytes(b"\x1f\x8b half")
    new = _records(1)
    with ProbeLog(tmp_path, clock=FakeClock(T0)) as log:
        log.write(new[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lifeline-2025-12-31.jsonl.gz",
        "lifeline-2026-01-01.jsonl",
    ]
    assert _read_dir(tmp_path) == old + new


def test_a_record_encoded_once_is_written_as_any_other(tmp_path: Path) -> None:
    """serve encodes each record once for the log and the store: the same bytes as before."""
    from exporter.logs import encode_line
    from probes.records import EncodedRecord, record_json

    plain = {"schema": "x", "service": "s", "target": "https://ä.test/", "reason": 'a "quote"',
             "n": [1, 2.5, None, True]}  # fmt: skip
    encoded = EncodedRecord(plain)
    assert encoded == plain
    assert encode_line(encoded) == encode_line(dict(plain))
    assert record_json(encoded) == record_json(dict(plain))
    assert json.loads(encode_line(encoded)) == plain
