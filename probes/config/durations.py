"""Durations as written in a config or on a command line: ``"90s"``, ``"1h30m"``, ``250ms``."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")
_PLAIN_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\Z")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("w", "d", "h", "m", "s", "ms")


def parse_duration(value: object) -> float:
    """Seconds in a duration: ``"60s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"30d"``, ``"2w"``.

    Plain numbers (and numeric strings) are seconds. Units go from largest to
    smallest, each at most once, as in Prometheus, so ``"5m5m"`` is a typo
    rather than ten minutes. Raises ValueError with a sentence saying why.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_text(value.strip())
    else:
        kind = type(value).__name__
        raise ValueError(f"a duration must be text like '60s' or a number, not {kind}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration: it must be a finite, non-negative time")
    return seconds


def _duration_text(text: str) -> float:
    if _PLAIN_NUMBER.match(text):
        return float(text)
    bad = ValueError(
        f"{text!r} is not a duration: write a number of seconds or units like "
        "'250ms', '60s', '5m', '1h30m', '30d', '2w'"
    )
    if not text:
        raise bad
    position, total, last_rank = 0, 0.0, -1
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise bad
        rank = _UNIT_ORDER.index(match.group(2))
        if rank <= last_rank:
            raise ValueError(
                f"{text!r} is not a duration: units go from largest to smallest, once each"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position, last_rank = match.end(), rank
    return total
