"""The measurement store: every result, and the timeline of verdict changes.

One SQLite file, ``<dir>/lifeline.db``, in WAL mode so that readers (export,
the status page) never wait for the writer and a crash never leaves a half
written round: each :meth:`Store.add` is one transaction.

Tables:

- ``measurements``: one row per result, the ``Result.to_dict()`` record kept
  whole as JSON (nothing a researcher may want later is thrown away), plus the
  columns we filter on (time, service, target, vantage, verdict).
- ``changes``: the incident timeline. One row per period during which a
  (service, target, vantage) had one verdict: when it began (``since``), when
  it ended (``until``, NULL while current), what it replaced.
- ``latest``: the last verdict and measurement time of each key (``current()``).
- ``schema_version``: which migrations ran. A store is migrated forward in
  place, never dropped; a store written by a newer lifeline is refused.

A file that is not a readable lifeline store raises :class:`StoreError`
naming the file; we never delete or recreate it, because it holds history.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.defaults import DEFAULT_RETENTION_S
from probes.records import Result, record_json
from probes.timefmt import parse_rfc3339

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "Latest",
    "Store",
    "StoreError",
    "VerdictChange",
    "parse_time",
]

log = logging.getLogger("lifeline.store")

DB_NAME = "lifeline.db"

#: How long a writer waits for another connection's lock before giving up.
_BUSY_TIMEOUT_MS = 10_000
#: Pruning runs from :meth:`Store.add` at most this often.
_PRUNE_EVERY_S = 3600.0
#: Records put to an :class:`AsyncStore` are written in one transaction every this
#: many seconds...
STORE_FLUSH_S = 0.5
#: ... or as soon as this many are waiting.
STORE_BATCH = 256

# Migration N (1-based) brings a store from version N-1 to N. Append only:
# a released migration is never edited, so every old store can be brought
# forward step by step.
_MIGRATIONS: tuple[str, ...] = (
    # 1: measurements and the verdict timeline, keyed by RFC 3339 text.
    """
    CREATE TABLE measurements (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        service TEXT NOT NULL,
        target TEXT NOT NULL,
        vantage TEXT NOT NULL,
        verdict TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX measurements_time ON measurements(time);
    CREATE INDEX measurements_service ON measurements(service, time);
    CREATE INDEX measurements_vantage ON measurements(vantage, time);
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        target TEXT NOT NULL,
        vantage TEXT NOT NULL,
        verdict TEXT NOT NULL,
        previous TEXT,
        since TEXT NOT NULL,
        until TEXT,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX changes_key ON changes(service, target, vantage, until);
    """,
    # 2: epoch seconds beside the text times (RFC 3339 strings with different
    # offsets or precisions do not sort as text), and a `latest` table so that
    # current() does not scan the measurements.
    """
    ALTER TABLE measurements ADD COLUMN t REAL;
    UPDATE measurements SET t = (julianday(time) - 2440587.5) * 86400.0;
    DROP INDEX measurements_time;
    DROP INDEX measurements_service;
    DROP INDEX measurements_vantage;
    CREATE INDEX measurements_t ON measurements(t);
    CREATE INDEX measurements_service_t ON measurements(service, t);
    CREATE INDEX measurements_vantage_t ON measurements(vantage, t);
    ALTER TABLE changes ADD COLUMN since_t REAL;
    ALTER TABLE changes ADD COLUMN until_t REAL;
    UPDATE changes SET since_t = (julianday(since) - 2440587.5) * 86400.0,
                       until_t = (julianday(until) - 2440587.5) * 86400.0;
    CREATE INDEX changes_since ON changes(since_t);
    CREATE TABLE latest (
        service TEXT NOT NULL,
        target TEXT NOT NULL,
        vantage TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        since TEXT NOT NULL,
        time TEXT NOT NULL,
        PRIMARY KEY (service, target, vantage)
    );
    INSERT INTO latest (service, target, vantage, verdict, reason, since, time)
        SELECT c.service, c.target, c.vantage, c.verdict, c.reason, c.since,
               COALESCE((SELECT m.time FROM measurements m
                         WHERE m.service = c.service AND m.target = c.target
                           AND m.vantage = c.vantage
                         ORDER BY m.t DESC, m.id DESC LIMIT 1), c.since)
        FROM changes c WHERE c.until IS NULL;
    """,
)

#: The version this code writes.
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(Exception):
    """The store cannot be used as it is (corrupt, foreign or too new); says which file."""


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """One period of the incident timeline: a verdict that began, and when it ended."""

    service: str
    target: str
    vantage: str
    verdict: str  # the verdict that began
    previous: str | None  # the verdict it replaced (None for the first)
    since: str  # RFC 3339 UTC, when it began
    until: str | None  # when it ended (None while current)
    reason: str


@dataclass(frozen=True, slots=True)
class Latest:
    """The current verdict of one (service, target, vantage): a row of ``latest``."""

    service: str
    target: str
    vantage: str
    verdict: str
    reason: str
    since: str  # RFC 3339 UTC, when the verdict began
    time: str  # RFC 3339 UTC, the latest measurement that carries it


def _fields(row: Latest) -> tuple[str, ...]:
    return (row.service, row.target, row.vantage, row.verdict, row.reason, row.since, row.time)


#: Epoch seconds of an RFC 3339 time (a time without offset is UTC): probes.timefmt's.
parse_time = parse_rfc3339


class Store:
    """SQLite (WAL) at <dir>/lifeline.db: measurements + verdict timeline.

    Thread-confined (SQLite connections are): use it from one thread, or
    through :class:`AsyncStore` from an event loop.
    """

    def __init__(self, directory: str | Path, *, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.path = Path(directory) / DB_NAME
        self.retention_s = retention_s
        self._last_prune = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    # --- opening and migrating ------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._check_readable(db)
            db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a crash of the process loses nothing committed;
            # only a power cut may lose the last transactions, never corrupt.
            db.execute("PRAGMA synchronous = NORMAL")
            self._migrate(db)
            db.execute("SELECT count(*) FROM latest").fetchone()
        except sqlite3.OperationalError as exc:
            db.close()
            raise self._unusable(exc) from exc
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(
                f"{self.path}: not a readable lifeline store ({exc}). The file was left "
                "untouched: restore it from a backup, or move it aside to start a new store."
            ) from exc
        except StoreError:
            db.close()
            raise
        return db

    def _unusable(self, exc: sqlite3.OperationalError) -> StoreError:
        """The StoreError for an operational failure: a lock held elsewhere, or the file system."""
        if _is_locked(exc):
            return StoreError(
                f"{self.path}: the store is locked by another process (another lifeline on "
                "this data directory, or a tool holding a write transaction); nothing was "
                "changed. Stop that process, or give this one its own data directory."
            )
        return StoreError(f"{self.path}: cannot use the store: {exc}")

    def check_writable(self) -> None:
        """Raise StoreError now if a write cannot start (another process holds the lock).

        A writer that keeps its lock past the busy timeout would make every later
        write fail: `serve` asks at start, while refusing to start is still possible,
        rather than measure for hours and store nothing. Readers (export) need not.
        """
        try:
            with _transaction(self._db):
                pass
        except sqlite3.OperationalError as exc:
            raise self._unusable(exc) from exc

    def _check_readable(self, db: sqlite3.Connection) -> None:
        """Fail now, with the file's name, if it is not an SQLite store of ours.

        Reading the schema catches a file that is not SQLite, a damaged header
        or a truncated file. A full check (:meth:`integrity_check`) reads the
        whole file, which is minutes for a month of history, so it is not run
        on every open: damage met later raises StoreError from the call.
        """
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if names and "schema_version" not in names:
            raise StoreError(
                f"{self.path}: an SQLite database, but not a lifeline store "
                f"(tables: {', '.join(sorted(names))}); refusing to touch it"
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {current} was written by a newer "
                f"lifeline (this one knows up to {SCHEMA_VERSION}); upgrade lifeline"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            log.info("migrating store %s to schema version %d", self.path, version)
            with _transaction(db):
                for statement in _statements(_MIGRATIONS[version - 1]):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0])

    # --- writing ---------------------------------------------------------

    def add(self, results: Sequence[Result]) -> list[VerdictChange]:
        """Store each result; returns the verdict changes they began (one transaction)."""
        return self.add_records([r.to_dict() for r in results])

    def add_records(self, records: Iterable[dict[str, Any]]) -> list[VerdictChange]:
        """Store ``Result.to_dict()`` records as they are (e.g. read back from probe logs).

        Each record is stored whole; the timeline is advanced from its
        service, target, vantage, verdict, reason and time. One transaction.
        """
        began: list[VerdictChange] = []
        with self._errors(), _transaction(self._db):
            for record in records:
                change = self._add_one(record)
                if change is not None:
                    began.append(change)
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            self.prune()
        return began

    def _add_one(self, record: dict[str, Any]) -> VerdictChange | None:
        try:
            key = (str(record["service"]), str(record["target"]), str(record["vantage"]))
            when, verdict = str(record["time"]), str(record["verdict"])
            reason = str(record.get("reason", ""))
            t = parse_time(when)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a measurement record: {type(exc).__name__}: {exc}") from exc
        self._db.execute(
            "INSERT INTO measurements (time, t, service, target, vantage, verdict, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (when, t, *key, verdict, _dumps(record)),
        )
        open_row = self._db.execute(
            "SELECT id, verdict, since FROM changes "
            "WHERE service = ? AND target = ? AND vantage = ? AND until IS NULL",
            key,
        ).fetchone()
        change: VerdictChange | None = None
        since = when if open_row is None else str(open_row[2])
        if open_row is None or open_row[1] != verdict:
            previous = None if open_row is None else str(open_row[1])
            if open_row is not None:
                self._db.execute(
                    "UPDATE changes SET until = ?, until_t = ? WHERE id = ?",
                    (when, t, open_row[0]),
                )
            self._db.execute(
                "INSERT INTO changes (service, target, vantage, verdict, previous, since, since_t, "
                "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, verdict, previous, when, t, reason),
            )
            since = when
            change = VerdictChange(*key, verdict, previous, when, None, reason)
        self._db.execute(
            "INSERT INTO latest (service, target, vantage, verdict, reason, since, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service, target, vantage) DO UPDATE SET "
            "verdict = excluded.verdict, reason = excluded.reason, since = excluded.since, "
            "time = excluded.time",
            (*key, verdict, reason, since, when),
        )
        return change

    def prune(self, now: float | None = None) -> int:
        """Delete measurements, and ended periods, older than the retention; returns rows removed.

        Periods still current are kept however old they are: an incident that
        began 40 days ago and goes on is still news.
        """
        self._last_prune = time.monotonic()
        cutoff = (time.time() if now is None else now) - self.retention_s
        with self._errors(), _transaction(self._db):
            removed = self._db.execute("DELETE FROM measurements WHERE t < ?", (cutoff,)).rowcount
            removed += self._db.execute(
                "DELETE FROM changes WHERE until_t IS NOT NULL AND until_t < ?", (cutoff,)
            ).rowcount
        if removed:
            log.info(
                "pruned %d rows older than %.0f days from %s",
                removed,
                self.retention_s / 86400,
                self.path,
            )
        return removed

    # --- reading ---------------------------------------------------------

    def current(self) -> list[dict[str, Any]]:
        """The current verdict of every (service, target, vantage), with when it began."""
        names = ("service", "target", "vantage", "verdict", "reason", "since", "time")
        return [dict(zip(names, _fields(row), strict=True)) for row in self.latest()]

    def latest(self) -> list[Latest]:
        """Like :meth:`current`, as typed rows."""
        with self._errors():
            rows = self._db.execute(
                "SELECT service, target, vantage, verdict, reason, since, time FROM latest "
                "ORDER BY service, target, vantage"
            ).fetchall()
        return [Latest(*row) for row in rows]

    def measurements(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        services: Sequence[str] = (),
        vantages: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``Result.to_dict()`` records in time order, read from a cursor as they are consumed."""
        for text in self.measurement_lines(
            since=since, until=until, services=services, vantages=vantages, limit=limit
        ):
            record: dict[str, Any] = json.loads(text)
            yield record

    def results(self, **filters: Any) -> Iterator[Result]:
        """Like :meth:`measurements`, each record decoded once to a typed :class:`Result`."""
        for text in self.measurement_lines(**filters):
            yield Result.from_dict(json.loads(text))

    def measurement_lines(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        services: Sequence[str] = (),
        vantages: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[str]:
        """Like :meth:`measurements`, but each record as its stored JSON text (no re-encoding).

        ``since`` is inclusive, ``until`` exclusive.
        """
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("t >= ?")
            params.append(parse_time(since))
        if until is not None:
            where.append("t < ?")
            params.append(parse_time(until))
        for column, values in (("service", services), ("vantage", vantages)):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        sql = "SELECT record FROM measurements"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._errors():
            cursor = self._db.execute(sql, params)
            try:
                while rows := cursor.fetchmany(256):
                    for (text,) in rows:
                        yield str(text)
            finally:
                cursor.close()

    def changes(
        self, *, since: str | None = None, service: str | None = None, vantage: str | None = None
    ) -> list[VerdictChange]:
        """Periods of the timeline, oldest first; with ``since``, those not ended before it."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("(until_t IS NULL OR until_t >= ?)")
            params.append(parse_time(since))
        if service is not None:
            where.append("service = ?")
            params.append(service)
        if vantage is not None:
            where.append("vantage = ?")
            params.append(vantage)
        sql = (
            "SELECT service, target, vantage, verdict, previous, since, until, reason FROM changes"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY since_t, id"
        with self._errors():
            rows = self._db.execute(sql, params).fetchall()
        return [VerdictChange(*row) for row in rows]

    def integrity_check(self) -> str:
        """SQLite's full integrity check: "ok", or the first problem found."""
        with self._errors():
            row = self._db.execute("PRAGMA integrity_check(1)").fetchone()
        return str(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _errors(self) -> _ErrorContext:
        return _ErrorContext(self.path)


class _ErrorContext:
    """Turns SQLite's damage reports met after opening into a StoreError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"{self.path}: the store is damaged: {exc}") from exc


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed whole, or rolled back whole.

    A failed COMMIT (disk full, I/O error) may leave the transaction open;
    it is rolled back here, or every later BEGIN would fail and the store
    would stay unwritable after the disk has room again.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (ours hold no ';' inside literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _dumps(record: dict[str, Any]) -> str:
    return record_json(record)  # made once by serve for the log and the store
