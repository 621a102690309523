"""A response beside the control's: OONI's http-diff and the content comparison.

The rules the classifier's ``anomaly`` verdict and its CDN rule use, and the
comparison the OONI export reports, kept once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from probes.defaults import BODY_PROPORTION, TITLE_WORD_MIN
from probes.reasons import quoted, size_text
from probes.records import HTTPStage

__all__ = [
    "COMMON_HEADERS",
    "HTTPComparison",
    "body_proportion",
    "content_difference",
    "http_diff",
    "http_similarity",
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


@dataclass(frozen=True, slots=True)
class HTTPComparison:
    """A response beside the control's, by OONI's http-diff rules (what the classifier uses)."""

    body_proportion: float | None  # smaller body length over larger; None when unknown
    body_length_match: bool  # proportion above 0.7; unknown lengths never match
    status_code_match: bool  # a status differs only when the control's is 2xx
    headers_match: bool  # an uncommon header (not in the common list) in common
    title_match: bool  # the same title words of 5+ letters (else the same title)


def http_similarity(http: HTTPStage, control_http: HTTPStage) -> HTTPComparison:
    """How ``http`` compares with the control's response: the anomaly rule's own comparison."""
    proportion = body_proportion(http.body_length, control_http.body_length)
    return HTTPComparison(
        body_proportion=proportion,
        body_length_match=proportion is not None and proportion > BODY_PROPORTION,
        status_code_match=not status_differs(http, control_http),
        headers_match=bool(uncommon_headers(http) & uncommon_headers(control_http)),
        title_match=titles_match(http.title, control_http.title),
    )


def http_diff(obs: HTTPStage, ctl: HTTPStage) -> str | None:
    """OONI's http-diff: None when the status matches and body, title or headers match.

    A status difference is ignored when the control's status is not 2xx.
    """
    same = http_similarity(obs, ctl)
    status_match, body_match = same.status_code_match, same.body_length_match
    title_match, headers_match = same.title_match, same.headers_match
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


def body_proportion(a: int | None, b: int | None) -> float | None:
    """Smaller body length over larger (1.0 for two empty bodies); None when unknown."""
    if a is None or b is None or a < 0 or b < 0:
        return None
    if a == b:
        return 1.0
    return min(a, b) / max(a, b)


def uncommon_headers(http: HTTPStage) -> frozenset[str]:
    return frozenset(k.lower() for k in http.headers) - COMMON_HEADERS
