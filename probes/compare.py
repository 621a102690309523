"""A response beside the control's: OONI's http-diff and the content comparison.

The rules the classifier's ``anomaly`` verdict and its CDN rule use, and the
comparison the OONI export reports, kept once.
"""

from __future__ import annotations

import re

from probes.defaults import BODY_PROPORTION, TITLE_WORD_MIN
from probes.reasons import quoted, size_text
from probes.records import HTTPStage

__all__ = [
    "COMMON_HEADERS",
    "bodies_match",
    "body_proportion",
    "content_difference",
    "http_diff",
    "status_differs",
    "title_words",
    "titles_match",
    "uncommon_headers",
]

#: Headers nearly every server sends: sharing them says nothing (after OONI).
COMMON_HEADERS = frozenset(
    {
        "accept-ranges", "age", "cache-control", "connection", "content-encoding",
        "content-language", "content-length", "content-type", "date", "etag", "expires",
        "keep-alive", "last-modified", "location", "p3p", "pragma", "server",
        "set-cookie", "strict-transport-security", "transfer-encoding", "vary", "via",
        "x-content-type-options", "x-frame-options", "x-powered-by", "x-xss-protection",
    }
)  # fmt: skip


def content_difference(obs: HTTPStage, ctl: HTTPStage) -> str | None:
    """How the page differs in a way that says "another server", or None.

    Title differs, body length proportion below 0.7, or (control 2xx) status
    differs. Unknown body lengths are no evidence either way.
    """
    parts = []
    if status_differs(obs, ctl):
        parts.append(f"status {obs.status} vs {ctl.status}")
    if not titles_match(obs.title, ctl.title):
        parts.append(f"title {quoted(obs.title)} vs {quoted(ctl.title)}")
    proportion = body_proportion(obs.body_length, ctl.body_length)
    if proportion is not None and proportion < BODY_PROPORTION:
        parts.append(f"body {size_text(obs.body_length)} vs {size_text(ctl.body_length)}")
    return ", ".join(parts) or None


def http_diff(obs: HTTPStage, ctl: HTTPStage) -> str | None:
    """OONI's http-diff: None when the status matches and body, title or headers match.

    A status difference is ignored when the control's status is not 2xx.
    """
    status_match = not status_differs(obs, ctl)
    body_match = bodies_match(obs.body_length, ctl.body_length)
    title_match = titles_match(obs.title, ctl.title)
    headers_match = bool(uncommon_headers(obs) & uncommon_headers(ctl))
    if status_match and (body_match or title_match or headers_match):
        return None
    parts = []
    if not status_match:
        parts.append(f"status {obs.status} vs {ctl.status}")
    if not title_match:
        parts.append(f"title {quoted(obs.title)} vs {quoted(ctl.title)}")
    if not body_match:
        parts.append(f"body {size_text(obs.body_length)} vs {size_text(ctl.body_length)}")
    if not headers_match:
        parts.append("no uncommon header in common")
    return ", ".join(parts)


def status_differs(obs: HTTPStage, ctl: HTTPStage) -> bool:
    """Statuses differ, counted only when the control's is 2xx (as OONI does)."""
    if ctl.status is None or not 200 <= ctl.status < 300:
        return False
    return obs.status != ctl.status


def titles_match(a: str | None, b: str | None) -> bool:
    """Every title word of 5+ letters appears in both titles (OONI's title match)."""
    wa, wb = title_words(a), title_words(b)
    if wa or wb:
        return wa == wb
    return " ".join((a or "").split()).casefold() == " ".join((b or "").split()).casefold()


def title_words(title: str | None) -> frozenset[str]:
    words = re.findall(r"\w+", (title or "").casefold())
    return frozenset(w for w in words if len(w) >= TITLE_WORD_MIN)


def bodies_match(a: int | None, b: int | None) -> bool:
    """Body length proportion above 0.7 (OONI); unknown lengths never match."""
    proportion = body_proportion(a, b)
    return proportion is not None and proportion > BODY_PROPORTION


def body_proportion(a: int | None, b: int | None) -> float | None:
    """Smaller body length over larger (1.0 for two empty bodies); None when unknown."""
    if a is None or b is None or a < 0 or b < 0:
        return None
    if a == b:
        return 1.0
    return min(a, b) / max(a, b)


def uncommon_headers(http: HTTPStage) -> frozenset[str]:
    return frozenset(k.lower() for k in http.headers) - COMMON_HEADERS
