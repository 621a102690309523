"""The accuracy summary: OONI's blocking against lifeline's verdict (docs/accuracy.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .mapping import Imported
from .read import Skipped

#: OONI's blocking values, as the confusion table's rows are named.
_ROWS = ("false", "dns", "tcp_ip", "http-failure", "http-diff", "null")


#: lifeline's verdicts that say what OONI's (blocking, accessible) says, for the agreement count.
_AGREES: dict[tuple[str, bool | None], frozenset[str]] = {
    ("false", True): frozenset({"ok", "throttled"}),
    ("false", False): frozenset({"service_down"}),  # not blocked and not accessible: down
    ("false", None): frozenset({"ok", "throttled", "service_down"}),
    ("dns", False): frozenset({"dns_blocked"}),
    ("tcp_ip", False): frozenset({"tcp_blocked"}),
    ("http-failure", False): frozenset({"http_blocked", "tls_blocked"}),
    ("http-diff", False): frozenset({"http_blocked", "anomaly"}),
    ("null", None): frozenset({"error", "unreachable", "service_down", "vantage_down"}),
}


def agrees(ooni: dict[str, Any], verdict: str) -> bool:
    """Whether lifeline's verdict says what OONI's blocking / accessible say (docs/accuracy.md)."""
    label = _ooni_label(ooni.get("blocking"))
    accessible = ooni.get("accessible")
    wanted = _AGREES.get((label, accessible if isinstance(accessible, bool) else None))
    if wanted is None:
        wanted = _AGREES.get((label, False), frozenset())
    return verdict in wanted


def _ooni_label(value: Any) -> str:
    if value is False:
        return "false"
    if value is True:
        return "true"
    if value is None:
        return "null"
    return str(value)


def summary_markdown(items: Sequence[Imported | Skipped], *, root: str | None = None) -> str:
    """The confusion table (OONI's blocking vs lifeline's verdict) and one row per measurement."""
    imported = [i for i in items if isinstance(i, Imported)]
    skipped = [i for i in items if isinstance(i, Skipped)]
    counts: Counter[tuple[str, str]] = Counter(
        (_ooni_label(i.record["ooni"]["blocking"]), i.verdict) for i in imported
    )
    verdicts = sorted({v for _, v in counts}, key=_verdict_order)
    rows = list(_ROWS) + sorted({r for r, _ in counts} - set(_ROWS))
    lines = [
        f"{len(imported)} measurements imported, {len(skipped)} files or lines skipped.",
        "",
        "| OONI blocking \\ lifeline | " + " | ".join(verdicts) + " | total |",
        "|---|" + "---:|" * (len(verdicts) + 1),
    ]
    for row in rows:
        cells = [counts.get((row, v), 0) for v in verdicts]
        lines.append(
            f"| {row} | " + " | ".join(str(c) if c else "·" for c in cells) + f" | {sum(cells)} |"
        )
    agreed = [i for i in imported if agrees(i.record["ooni"], i.verdict)]
    lines += [
        "",
        f"lifeline says what OONI says on {len(agreed)} of {len(imported)} measurements "
        "(docs/accuracy.md: which verdicts agree with which OONI values); "
        "the disagreements are marked **differs** below.",
        "",
        "| file | OONI blocking / accessible | lifeline | | reason |",
        "|---|---|---|---|---|",
    ]
    for i in imported:
        name = _short(i.source, root)
        reason = str(i.record["reason"]).replace("|", "\\|")
        ooni = i.record["ooni"]
        seen = f"{_ooni_label(ooni['blocking'])} / {_ooni_label(ooni['accessible']).lower()}"
        mark = "" if i in agreed else "**differs**"
        lines.append(f"| `{name}` | {seen} | {i.verdict} | {mark} | {reason} |")
    for s in skipped:
        why = s.why.replace("|", "\\|")
        lines.append(f"| `{_short(s.source, root)}` | | skipped | | {why} |")
    return "\n".join(lines) + "\n"


def _short(source: str, root: str | None) -> str:
    if root and source.startswith(root):
        return source[len(root) :].lstrip("/")
    return source


def _verdict_order(verdict: str) -> int:
    from probes.verdicts import Verdict

    names = [v.value for v in Verdict]
    return names.index(verdict) if verdict in names else len(names)
