"""The JSONL probe log: every result as one line, for people with grep and jq.

Files live in one directory: ``lifeline-YYYY-MM-DD.jsonl`` is the file of
that UTC day being written. When it would grow past ``max_bytes`` it is
renamed ``lifeline-YYYY-MM-DD.N.jsonl`` (N = 1, 2, ... in order) and a new
one begins; at midnight UTC the day's file is closed. Closed files are
gzipped (``.jsonl.gz``) when ``gzip_rotated`` is set, in a background thread
so that the writer (the event loop) does not wait for it.

A line is written whole: the encoded line goes to the kernel in one
``os.write`` on an ``O_APPEND`` descriptor (a second one only after a short
write, to learn why the disk refused the rest), so concurrent writers never
interleave and a crash leaves at most a torn last line. A write that lands
only partly (disk full) is cut back off the file. Readers skip a torn last
line anyway (:func:`read_records`).

A probe log must never stop the measurements: on a full or unwritable disk
:meth:`ProbeLog.write` returns False, counts the loss in ``lost_writes``,
logs the cause once (not once per line), and logs again when writing works.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from exporter import events
from probes.records import Result, record_json

__all__ = [
    "FSYNC_POLICIES",
    "BadLine",
    "ProbeLog",
    "append_results",
    "encode_line",
    "log_files",
    "read_lines",
    "read_records",
]

log = logging.getLogger("lifeline.logs")

FSYNC_POLICIES = ("always", "rotate", "never")
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_NAME = re.compile(r"^lifeline-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl(\.gz)?$")


def encode_line(record: dict[str, Any]) -> bytes:
    """One record as one JSON line (UTF-8, compact, newline-terminated)."""
    return (record_json(record) + "\n").encode()


def _write_whole(fd: int, data: bytes) -> None:
    """Append ``data`` in one write; if only part of it landed, cut that part off again.

    A short write (the disk's last free block took part of the line) is
    followed by one for the rest: on a full disk that one fails, and its
    error names the real cause (ENOSPC, EFBIG) for the operator. Raises
    OSError when the line could not be written whole.
    """
    size_before = os.fstat(fd).st_size
    rest = memoryview(data)
    try:
        while rest:
            written = os.write(fd, rest)
            if written == 0:  # not seen for regular files; but never loop on it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            rest = rest[written:]
    except OSError:
        _cut_back(fd, size_before)
        raise


def _cut_back(fd: int, size: int) -> None:
    """Remove a partial line; harmless if nothing was written."""
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
    except OSError:
        pass  # the reader still skips a torn line; the next write starts a new line


def _ends_mid_line(fd: int) -> bool:
    """True if the file's last byte is not a newline (a torn line from a crash)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class _Open:
    """The file being written: its descriptor, day and size."""

    fd: int
    day: str
    size: int
    path: Path


class ProbeLog:
    """Append-only JSONL probe log in <dir>/, rotated by size and day.

    Never raises on disk errors: counts lost writes. ``clock`` (epoch seconds)
    picks the day; tests pass a fake one.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 64 << 20,
        gzip_rotated: bool = True,
        fsync: str = "rotate",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.gzip_rotated = gzip_rotated
        self.fsync = fsync
        self.clock = clock
        self.lost_writes = 0
        self._file: _Open | None = None
        self._failing = False
        self._torn = False  # the open file ends mid-line: start the next write with "\n"
        self._closed = False
        self._swept = False  # leftovers of an earlier run are gzipped once, at the first open
        self._gzippers: list[threading.Thread] = []

    # --- writing ---------------------------------------------------------

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record as one line; False when the write was lost (disk full, unwritable)."""
        if self._closed:
            raise ValueError("write to a closed ProbeLog")
        data = encode_line(record)
        try:
            current = self._file_for(len(data))
            if self._torn:
                _write_whole(current.fd, b"\n")
                current.size += 1
                self._torn = False
            _write_whole(current.fd, data)
            current.size += len(data)
            if self.fsync == "always":
                os.fsync(current.fd)
        except OSError as exc:
            self._lost(exc)
            self._drop_file()
            return False
        if self._failing:
            self._failing = False
            events.probe_log_recovered(str(self.directory), self.lost_writes)
        return True

    def _lost(self, exc: OSError) -> None:
        self.lost_writes += 1
        if not self._failing:
            self._failing = True
            events.probe_log_fault(str(self.directory), str(exc.strerror or exc))

    def _drop_file(self) -> None:
        """Forget the open file after a failed write: the next write opens it afresh
        (the disk may have been remounted, the file deleted or replaced meanwhile)."""
        current, self._file = self._file, None
        if current is not None:
            try:
                os.close(current.fd)
            except OSError:
                pass

    def _file_for(self, incoming: int) -> _Open:
        """The file this line goes to, rotating first by day or by size."""
        day = _day(self.clock())
        current = self._file
        if current is not None and current.day != day:
            self._close_file(rotate_to=None)
            current = None
        if current is not None and current.size > 0 and current.size + incoming > self.max_bytes:
            self._close_file(rotate_to=self._next_part(current.day))
            current = None
        if current is None:
            current = self._open_file(day)
        return current

    def _open_file(self, day: str) -> _Open:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"lifeline-{day}.jsonl"
        fd = os.open(path, _OPEN_FLAGS, 0o644)
        try:
            self._torn = _ends_mid_line(fd)
            size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._file = _Open(fd, day, size, path)
        if not self._swept:
            self._swept = True
            self._compress_leftovers(keep=path)
        return self._file

    def _next_part(self, day: str) -> Path:
        taken = {
            int(m.group(2))
            for p in self.directory.iterdir()
            if (m := _NAME.match(p.name)) and m.group(1) == day and m.group(2)
        }
        n = max(taken, default=0) + 1
        return self.directory / f"lifeline-{day}.{n}.jsonl"

    def _close_file(self, *, rotate_to: Path | None) -> None:
        """Close the open file (fsync per policy); rename it for a size rotation; gzip it."""
        current, self._file = self._file, None
        if current is None:
            return
        try:
            if self.fsync in ("always", "rotate"):
                os.fsync(current.fd)
        finally:
            os.close(current.fd)
        path = current.path
        if rotate_to is not None:
            os.replace(path, rotate_to)
            path = rotate_to
        if self.gzip_rotated:
            # compressing 64 MiB takes a while: not on the caller's (event loop) thread
            worker = threading.Thread(
                target=self._gzip_quietly, args=(path,), name="lifeline-log-gzip", daemon=True
            )
            self._gzippers = [t for t in self._gzippers if t.is_alive()] + [worker]
            worker.start()

    def _gzip_quietly(self, path: Path) -> None:
        try:
            self._gzip_closed(path)
        except OSError as exc:  # the lines are safe in the plain file; retried next start
            log.warning("could not gzip rotated probe log %s: %s", path, exc)

    def _gzip_closed(self, path: Path) -> None:
        """Gzip a closed file, never over an existing .gz (a day's file reopened later)."""
        if path.with_name(path.name + ".gz").exists():
            m = _NAME.match(path.name)
            if m is None:
                return
            renamed = self._next_part(m.group(1))
            os.replace(path, renamed)
            path = renamed
        _gzip(path, fsync=self.fsync != "never")

    def _compress_leftovers(self, *, keep: Path) -> None:
        """Gzip closed files a crash left uncompressed; drop partial .gz files."""
        if not self.gzip_rotated:
            return
        for p in self.directory.iterdir():
            if p.name.startswith("lifeline-") and p.name.endswith(".gz.tmp"):
                p.unlink(missing_ok=True)
            elif p != keep and (m := _NAME.match(p.name)) and not m.group(3):
                try:
                    self._gzip_closed(p)
                except OSError as exc:
                    log.warning("could not gzip rotated probe log %s: %s", p, exc)

    def close(self) -> None:
        """Wait for pending gzips, flush (per the fsync policy) and close.

        The day's file stays uncompressed (a later run appends to it).
        """
        if self._closed:
            return
        self._closed = True
        for worker in self._gzippers:
            worker.join()
        self._gzippers = []
        current, self._file = self._file, None
        if current is not None:
            try:
                if self.fsync != "never":
                    os.fsync(current.fd)
            except OSError as exc:
                log.warning("probe log %s: fsync on close failed: %s", current.path, exc)
            finally:
                os.close(current.fd)

    def __enter__(self) -> ProbeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gzip(path: Path, *, fsync: bool) -> Path:
    """Compress ``path`` to ``path.gz`` atomically (tmp + rename), then remove it."""
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
            if fsync:
                raw.flush()
                os.fsync(raw.fileno())
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    path.unlink()
    return target


def append_results(path: str | Path, results: Sequence[Result]) -> None:
    """Append results to one JSONL file (``check --log FILE``), each line written whole.

    Raises OSError naming the file if it cannot be written; lines written
    before the error stay whole.
    """
    fd = os.open(path, _OPEN_FLAGS, 0o644)
    try:
        if _ends_mid_line(fd):
            _write_whole(fd, b"\n")
        for result in results:
            _write_whole(fd, encode_line(result.to_dict()))
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot append to probe log: {exc.strerror or exc}", str(path)
        ) from exc
    finally:
        os.close(fd)


# --- reading -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a JSON object: where it is and why."""

    lineno: int
    error: str


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """(line number, record or BadLine) for each non-empty line of a JSONL stream.

    A last line without its newline that does not parse is a torn write from
    a crash and is skipped silently; anywhere else a bad line is reported.
    """
    lineno = 0
    for raw in stream:
        lineno += 1
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            if not raw.endswith(b"\n"):
                return  # torn last line
            yield lineno, BadLine(lineno, f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield lineno, BadLine(lineno, f"not a JSON object but {type(value).__name__}")
            continue
        yield lineno, value


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of one log file (plain or .gz), skipping bad and torn lines."""
    with _open_bytes(Path(path)) as stream:
        for _, item in read_lines(stream):
            if isinstance(item, dict):
                yield item


def log_files(directory: str | Path) -> list[Path]:
    """A directory's log files in writing order: by day, numbered parts, then the day's file."""

    def key(p: Path) -> tuple[str, float]:
        m = _NAME.match(p.name)
        assert m is not None
        return m.group(1), float(m.group(2)) if m.group(2) else float("inf")

    files: Iterable[Path] = (p for p in Path(directory).iterdir() if _NAME.match(p.name))
    return sorted(files, key=key)
