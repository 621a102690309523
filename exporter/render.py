"""How results look to a person (table) and to a program (json, jsonl)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import IO, Any

from probes.records import Result, Verdict

__all__ = ["CHECK_SCHEMA", "render_json", "render_jsonl", "render_table", "use_color"]

CHECK_SCHEMA = "lifeline.check/1"

# ANSI colours by verdict; colour is never the only signal (the verdict is in words).
_COLORS: dict[Verdict, str] = {
    Verdict.OK: "32",  # green
    Verdict.THROTTLED: "33",  # yellow
    Verdict.ANOMALY: "33",
    Verdict.SERVICE_DOWN: "35",  # magenta: an outage, not censorship
    Verdict.VANTAGE_DOWN: "35",
    Verdict.UNREACHABLE: "37",
    Verdict.ERROR: "37",
}
_BLOCKED = "31;1"  # bold red for every *_blocked


def use_color(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(verdict: Verdict, color: bool) -> str:
    if not color:
        return verdict.value
    code = _COLORS.get(verdict, _BLOCKED)
    return f"\x1b[{code}m{verdict.value}\x1b[0m"


def _sorted(results: Iterable[Result]) -> list[Result]:
    return sorted(
        results, key=lambda r: (r.measurement.service, r.measurement.target, r.measurement.vantage)
    )


def render_table(
    results: Sequence[Result], *, color: bool = False, width: int | None = None
) -> str:
    """A table for a person: service, target, vantage, verdict, and the reason."""
    rows = [
        (r.measurement.service, r.measurement.target, r.measurement.vantage, r.verdict, r.reason)
        for r in _sorted(results)
    ]
    head = ("SERVICE", "TARGET", "VANTAGE", "VERDICT")
    widths = [max([len(head[i])] + [len(str(row[i])) for row in rows]) for i in range(4)]
    total = width or shutil.get_terminal_size((160, 24)).columns
    reason_w = max(30, total - sum(widths) - 8)
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  REASON"]
    for service, target, vantage, verdict, reason in rows:
        cells = [service.ljust(widths[0]), target.ljust(widths[1]), vantage.ljust(widths[2])]
        painted = _paint(verdict, color) + " " * (widths[3] - len(verdict.value))
        short = reason if len(reason) <= reason_w else reason[: reason_w - 1] + "…"
        lines.append("  ".join([*cells, painted]) + "  " + short)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines.append("")
    lines.append(f"{len(results)} measurements: {summary or 'none'}")
    return "\n".join(lines) + "\n"


def result_dicts(results: Iterable[Result]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in _sorted(results)]


def render_json(results: Sequence[Result]) -> str:
    return json.dumps({"schema": CHECK_SCHEMA, "results": result_dicts(results)}, indent=2) + "\n"


def render_jsonl(results: Sequence[Result]) -> str:
    return "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in result_dicts(results))
