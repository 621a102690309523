"""RFC 3339 times, written one way: UTC, ``Z``, microseconds (the records' ``time``).

Every time a record or an API answer carries is written by :func:`rfc3339`:
``2026-01-01T00:00:00.250000Z``, the precision ``blank_measurement`` has
always dated measurements with and which the JSON Schema's ``time`` pattern
accepts. ``timespec="seconds"`` is for the few places whose whole-second form
is part of what users and tests already read (the status page's bands, the
CLI's resolved ``--since``/``--until``); it still goes through this one writer.
Displays for people (``14:05 UTC``) are not record times and do not use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

__all__ = ["parse_rfc3339", "rfc3339"]


def rfc3339(
    moment: float | datetime, *, timespec: Literal["microseconds", "seconds"] = "microseconds"
) -> str:
    """``moment`` (epoch seconds or a datetime; a naive one is UTC) as RFC 3339 UTC text."""
    if isinstance(moment, datetime):
        dt = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(moment, UTC)
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of RFC 3339 text (``Z`` or an offset; a time without one is UTC).

    A space may stand for the ``T``, as RFC 3339 allows. Raises ValueError otherwise.
    """
    dt = datetime.fromisoformat(text.strip().replace(" ", "T"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
