"""The page's view model: verdict looks, times, and the status document grouped for display.

Plain data and pure functions of the status document; nothing here writes HTML
(the templates do, with every value autoescaped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from probes import timefmt
from probes.records import Verdict

DEFAULT_HOURS = 24.0
MAX_HOURS = 31 * 24.0
DEFAULT_POLL_S = 5.0
RECENT_CHANGES = 30  # rows of the "recent changes" list
DRILL_MEASUREMENTS = 10  # measurements shown on the drill-down page
TREND_WINDOW = timedelta(hours=1)  # "is it getting worse": now against this long ago


class ChangeRow(Protocol):
    """One period of a verdict (``exporter.store.VerdictChange`` has this shape)."""

    @property
    def service(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def previous(self) -> str | None: ...
    @property
    def since(self) -> str: ...
    @property
    def until(self) -> str | None: ...
    @property
    def reason(self) -> str: ...


# --- verdicts: how each one looks (the single table the page and page.js use) ----


@dataclass(frozen=True, slots=True)
class Look:
    label: str  # the verdict in words
    mark: str  # a glyph, so colour is never the only signal
    rank: int  # higher is worse: a cell shows its worst target
    meaning: str


LOOKS: dict[str, Look] = {
    Verdict.DNS_BLOCKED: Look(
        "DNS blocked", "✕", 9, "DNS lies or stays silent while the control resolves"
    ),
    Verdict.TCP_BLOCKED: Look("TCP blocked", "✕", 9, "connections fail; the control connects"),
    Verdict.TLS_BLOCKED: Look(
        "TLS blocked", "✕", 9, "TLS handshake cut (SNI filtering); the control completes it"
    ),
    Verdict.HTTP_BLOCKED: Look(
        "HTTP blocked", "✕", 9, "block page, HTTP 451 or a cut after the request"
    ),
    Verdict.THROTTLED: Look("Throttled", "≈", 7, "arrives, far slower than at the control"),
    Verdict.VANTAGE_DOWN: Look(
        "Vantage down", "▼", 6, "every canary fails too: a shutdown or a dead vantage"
    ),
    Verdict.SERVICE_DOWN: Look(
        "Service down", "▽", 5, "fails from the control as well: an outage, not censorship"
    ),
    Verdict.UNREACHABLE: Look("Unreachable", "!", 4, "fails, and there is no control to tell why"),
    Verdict.ANOMALY: Look("Anomaly", "?", 3, "differs from the control, not clearly blocking"),
    Verdict.ERROR: Look("Error", "!", 2, "the measurement itself could not be made"),
    Verdict.OK: Look("OK", "✓", 0, "reachable and consistent with the control"),
}
_UNKNOWN_RANK = 1


def look(verdict: str) -> Look:
    """How a verdict looks; a verdict this page does not know is shown as its own name."""
    return LOOKS.get(verdict) or Look(verdict, "·", _UNKNOWN_RANK, "")


def verdict_label(verdict: str) -> str:
    """The verdict in words (``dns_blocked`` -> ``DNS blocked``)."""
    return look(verdict).label


def css(verdict: str) -> str:
    """A class name for the verdict's colour; anything unexpected gets a neutral one."""
    return "v-" + verdict if verdict in LOOKS else "v-unknown"


def is_problem(verdict: str) -> bool:
    return verdict != Verdict.OK


# --- time -------------------------------------------------------------------------


def parse_time(text: Any) -> datetime | None:
    """An aware UTC datetime from RFC 3339 text, or None when it is missing or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromtimestamp(timefmt.parse_rfc3339(text), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def rfc3339(dt: datetime) -> str:
    return timefmt.rfc3339(dt, timespec="seconds")  # whole seconds: the page's and its API's form


def ago(seconds: float) -> str:
    """A short duration a person reads at a glance: 45s, 12m, 1h20m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def abs_utc(dt: datetime, now: datetime) -> str:
    """UTC clock time, with the date only when it is not today's (UTC)."""
    dt = dt.astimezone(UTC)
    if dt.date() == now.astimezone(UTC).date():
        return dt.strftime("%H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone, or None when it is unknown or not a valid key (names come from config)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def utc_offset(dt: datetime) -> str:
    off = dt.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h:02d}:{m:02d}"


# --- the status document, grouped -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """The current verdict of one (service, target, vantage)."""

    service: str
    target: str
    vantage: str
    verdict: str
    reason: str
    since: datetime | None
    time: datetime | None
    since_text: str = ""  # as the status document wrote it: page.js compares it verbatim


@dataclass(frozen=True, slots=True)
class VantageInfo:
    name: str
    control: bool = False
    country: str | None = None
    timezone: str | None = None
    up: bool | None = None  # False when every canary of the vantage fails


@dataclass(slots=True)
class Board:
    """The status document grouped for the matrix: services x vantages, targets inside."""

    time: datetime | None
    services: list[str] = field(default_factory=list)
    vantages: list[VantageInfo] = field(default_factory=list)
    targets: dict[str, list[str]] = field(default_factory=dict)
    cells: dict[tuple[str, str], list[Cell]] = field(default_factory=dict)


def text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _cell(row: Mapping[str, Any]) -> Cell:
    return Cell(
        service=text(row.get("service")),
        target=text(row.get("target")),
        vantage=text(row.get("vantage")),
        verdict=text(row.get("verdict")) or Verdict.ERROR.value,
        reason=text(row.get("reason")),
        since=parse_time(row.get("since")),
        time=parse_time(row.get("time")),
        since_text=text(row.get("since")),
    )


@dataclass(frozen=True, slots=True)
class Status:
    """The current verdicts the page shows, typed: what ``serve`` hands it.

    ``serve`` builds it from its board (``exporter/server.py``); a ``lifeline.status/1``
    JSON document (as ``/api/v1/status`` serves it) is read with :func:`status_from_document`.
    """

    time: datetime | None
    cells: list[Cell] = field(default_factory=list)
    vantages: list[VantageInfo] = field(default_factory=list)  # control first
    ready: bool | None = None  # False while the first round of measurements runs


def make_status(
    cells: list[Cell],
    vantages: Iterable[VantageInfo],
    *,
    time: datetime | None,
    ready: bool | None,
    meta: Mapping[str, VantageInfo] | None = None,
) -> Status:
    """Vantages in the given order (control first), then any only seen in ``cells``
    (described by ``meta`` when it knows them)."""
    infos: dict[str, VantageInfo] = {}
    for v in vantages:
        infos.setdefault(v.name, v)
    for c in cells:
        if c.vantage not in infos:
            seen = (meta or {}).get(c.vantage)
            infos[c.vantage] = VantageInfo(
                c.vantage, False, seen.country if seen else None, seen.timezone if seen else None
            )
    ordered = sorted(infos.values(), key=lambda v: not v.control)  # stable: control first
    return Status(time, cells, ordered, ready)


def status_from_document(status: Mapping[str, Any]) -> Status:
    """A ``lifeline.status/1`` document as the page's :class:`Status` (nothing in it trusted)."""
    rows = [r for r in status.get("results") or [] if isinstance(r, Mapping)]
    cells = [_cell(r) for r in rows]
    vantages = []
    for item in status.get("vantages") or []:
        if isinstance(item, str):
            vantages.append(VantageInfo(item))
        elif isinstance(item, Mapping) and item.get("name"):
            vantages.append(
                VantageInfo(
                    text(item["name"]),
                    bool(item.get("control")),
                    text(item.get("country")) or None,
                    text(item.get("timezone")) or None,
                    item["up"] if isinstance(item.get("up"), bool) else None,
                )
            )
    meta = {
        text(r.get("vantage")): VantageInfo(
            text(r.get("vantage")),
            False,
            text(r.get("country")) or None,
            text(r.get("timezone")) or None,
        )
        for r in rows
    }
    ready = status.get("ready")
    return make_status(
        cells,
        vantages,
        time=parse_time(status.get("time")),
        ready=ready if isinstance(ready, bool) else None,
        meta=meta,
    )


def as_status(status: Status | Mapping[str, Any]) -> Status:
    return status if isinstance(status, Status) else status_from_document(status)


def build_board(status: Status | Mapping[str, Any]) -> Board:
    typed = as_status(status)
    board = Board(time=typed.time, vantages=typed.vantages)
    targets: dict[str, dict[str, None]] = {}
    for c in typed.cells:
        targets.setdefault(c.service, {})[c.target] = None
        board.cells.setdefault((c.service, c.vantage), []).append(c)
    board.services = sorted(targets)
    board.targets = {s: list(t) for s, t in targets.items()}
    return board


def worst(cells: Sequence[Cell]) -> Cell:
    """The cell's headline: the worst verdict; among equals, the one that began first."""
    far = datetime.max.replace(tzinfo=UTC)
    return min(cells, key=lambda c: (-look(c.verdict).rank, c.since or far))


# --- headline counts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    problems: int  # targets x vantages not ok
    total: int
    by_verdict: dict[str, int]


def count_verdicts(board: Board) -> Counts:
    by: dict[str, int] = {}
    total = 0
    for cells in board.cells.values():
        for c in cells:
            by[c.verdict] = by.get(c.verdict, 0) + 1
            total += 1
    problems = sum(n for v, n in by.items() if is_problem(v))
    return Counts(problems, total, by)


def problems_at(changes: Iterable[ChangeRow], t: datetime) -> tuple[int, int]:
    """(not ok, known): how many (target, vantage) had a verdict other than ok at instant t,
    and how many had any verdict then, by the timeline."""
    bad = known = 0
    for row in changes:
        s, u = parse_time(row.since), parse_time(row.until) if row.until else None
        if s is not None and s <= t and (u is None or t < u):
            known += 1
            bad += is_problem(row.verdict)
    return bad, known
