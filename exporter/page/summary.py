"""The text summary (``/api/v1/summary.txt``): a snapshot a responder pastes into a chat."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from exporter.page.view import (
    Status,
    VantageInfo,
    abs_utc,
    ago,
    build_board,
    is_problem,
    look,
    worst,
)
from probes.records import Verdict

__all__ = ["summary_text"]


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def plain(value: str, limit: int = 80) -> str:
    """Text safe to paste into a chat: one line, no control or bidi characters, bounded."""
    text = " ".join(_CONTROL_CHARS.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_text(status: Status | Mapping[str, Any], *, now: datetime) -> str:
    """A timestamped snapshot a responder pastes into a chat; problems first, worst first.

    One line per (service, vantage) that is not ok; a vantage where every
    service is down is said once. Example line:
    ``twitter: dns_blocked at ir-mci (IR) since 00:10 UTC (1h20m), 2/3 targets``.
    """
    now = now.astimezone(UTC)
    board = build_board(status)
    as_of = board.time or now
    lines: list[str] = []
    whole_down: set[str] = set()
    for v in board.vantages:
        heads = [worst(cs) for (s, vn), cs in board.cells.items() if vn == v.name]
        if len(heads) > 1 and all(w.verdict == Verdict.VANTAGE_DOWN for w in heads):
            whole_down.add(v.name)
            first = min((w.since for w in heads if w.since), default=None)
            lines.append(
                f"{plain(v.name)}{_where(v)}: vantage_down for all services{_since(first, now)}"
            )
    problems: list[tuple[int, str]] = []
    ok = 0
    for (service, vantage), cells in board.cells.items():
        if vantage in whole_down:
            continue
        w = worst(cells)
        if not is_problem(w.verdict):
            ok += 1
            continue
        n = sum(1 for c in cells if c.verdict == w.verdict)
        share = f", {n}/{len(cells)} targets" if len(cells) > 1 else ""
        info = next((v for v in board.vantages if v.name == vantage), VantageInfo(vantage))
        text = (
            f"{plain(service)}: {plain(w.verdict)} at {plain(vantage)}{_where(info)}"
            f"{_since(w.since, now)}{share}"
        )
        problems.append((-look(w.verdict).rank, text))
    lines.extend(t for _, t in sorted(problems))
    cells_n = len(board.cells)
    head = (
        f"lifeline status {as_of.strftime('%Y-%m-%d %H:%M')} UTC — "
        f"{cells_n - ok} of {cells_n} service x vantage not ok"
    )
    tail = f"everything else ok ({ok})" if lines else f"all ok ({ok})"
    return "\n".join([head, *lines, tail]) + "\n"


def _where(v: VantageInfo) -> str:
    return f" ({plain(v.country, 8)})" if v.country else ""


def _since(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    return f" since {abs_utc(since, now)} ({ago((now - since).total_seconds())})"
