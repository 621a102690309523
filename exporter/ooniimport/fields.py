"""OONI's field values read as lifeline's: failures, times, endpoints, bodies, headers, names."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from probes.failures import Failure, is_known, unknown
from probes.fingerprints import normalize_address
from probes.timefmt import rfc3339

#: How much of an imported body is kept as ``body_head`` (OONI keeps the body, we the head).
BODY_HEAD_BYTES = 65_536
MAX_HEADER_VALUE = 1024
_SCAN_TITLE = 65_536
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
_TITLE = re.compile(r"<title(?:\s[^>]{0,256})?>(.*?)</title", re.IGNORECASE | re.DOTALL)

#: OONI failure strings (df-007, older probes' and the test helper's) that are
#: named differently in lifeline's vocabulary. Names lifeline shares pass as they are.
_FAILURES: dict[str, str] = {
    "dns_name_error": Failure.DNS_NXDOMAIN,  # the test helper's NXDOMAIN
    "android_dns_cache_no_data": Failure.DNS_NO_ANSWER,  # getaddrinfo's EAI_NODATA on Android
    "connection_refused_error": Failure.CONNECTION_REFUSED,
    "connection_reset_error": Failure.CONNECTION_RESET,
    "http_invalid_redirect_url": Failure.HTTP_BAD_REDIRECT,
    "http_invalid_redirect_location_host": Failure.HTTP_BAD_REDIRECT,
    "http_unexpected_redirect_url": Failure.HTTP_BAD_REDIRECT,
    "ssl_error": Failure.SSL_FAILED_HANDSHAKE,
}
#: Free text of an ``unknown_failure`` (or an older probe's message) that names a known failure.
_TEXT_FAILURES = (
    ("too many redirects", Failure.HTTP_TOO_MANY_REDIRECTS),
    ("certificate verify failed", Failure.SSL_INVALID_CERTIFICATE),
    ("no route to host", Failure.HOST_UNREACHABLE),
    ("network is unreachable", Failure.NETWORK_UNREACHABLE),
    ("connection refused", Failure.CONNECTION_REFUSED),
    ("connection reset", Failure.CONNECTION_RESET),
    ("i/o timeout", Failure.TIMEOUT),
)


def failure_of(value: Any) -> str | None:
    """lifeline's failure string for an OONI failure (None for no failure)."""
    if value is None or value is False or value == "":
        return None
    text = str(value)
    if text in _FAILURES:
        return str(_FAILURES[text])
    if is_known(text) and not text.startswith("unknown_failure"):
        return text
    low = text.lower()
    for marker, failure in _TEXT_FAILURES:
        if marker in low:
            return failure
    if low.startswith("ssl_error"):
        return Failure.SSL_FAILED_HANDSHAKE
    detail = text.removeprefix("unknown_failure").lstrip(": ").strip()
    return unknown(detail or text)


def time_of(text: Any) -> str:
    """RFC 3339 of OONI's 'YYYY-MM-DD HH:MM:SS' (UTC) or the API's ISO time."""
    if not isinstance(text, str) or not text:
        return "1970-01-01T00:00:00.000000Z"
    try:
        dt = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return "1970-01-01T00:00:00.000000Z"
    return rfc3339(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def depth_of(entry: dict[str, Any]) -> int:
    for tag in entry.get("tags") or ():
        if isinstance(tag, str) and tag.startswith("depth="):
            try:
                return int(tag[6:])
            except ValueError:
                return 0
    return 0


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def split_endpoint(text: Any) -> tuple[str, int] | None:
    if not isinstance(text, str) or not text:
        return None
    host, _, port = text.rpartition(":")
    try:
        return normalize_address(host.strip("[]")), int(port)
    except ValueError:
        return None


def duration_of(entry: dict[str, Any]) -> float:
    t0, t = entry.get("t0"), entry.get("t")
    if isinstance(t0, (int, float)) and isinstance(t, (int, float)) and t >= t0:
        return float(t - t0)
    return 0.0


def bytes_of(value: Any) -> bytes | None:
    """A body or header value: text, or OONI's {"format": "base64", "data": ...}."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return base64.b64decode(str(value.get("data") or ""), validate=False)
        except (binascii.Error, ValueError):
            return None
    return str(value).encode("utf-8", errors="surrogateescape")


def text_of(value: Any) -> str:
    raw = bytes_of(value)
    return raw.decode("utf-8", errors="replace") if raw is not None else ""


def title_of(body: str) -> str | None:
    found = _TITLE.search(body[:_SCAN_TITLE])
    if found is None:
        return None
    import html

    return " ".join(html.unescape(found.group(1)).split())[:200] or None


def header_map(raw: Any) -> dict[str, str]:
    """All headers, lower-case names (a name that is not an HTTP token is dropped)."""
    out: dict[str, str] = {}
    if not isinstance(raw, dict):
        return out
    for name, value in raw.items():
        key = str(name).strip().lower()
        if not _HEADER_NAME.match(key):
            continue
        text = text_of(value[0] if isinstance(value, list) and value else value)
        out[key] = text[:MAX_HEADER_VALUE]
    return out


def location_of(response: dict[str, Any]) -> str | None:
    headers = response.get("headers")
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if str(name).lower() == "location":
            text = text_of(value[0] if isinstance(value, list) and value else value)
            return text or None
    return None


def request_ip(r: dict[str, Any]) -> str | None:
    found = split_endpoint(r.get("address"))
    return found[0] if found else None


def host_of(url: str) -> str:
    """The URL's host as resolvers are asked for it: lower case, IDNA (punycode) labels."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def vantage_of(m: dict[str, Any]) -> str:
    cc = re.sub(r"[^a-z0-9]", "", str(m.get("probe_cc") or "zz").lower()) or "zz"
    asn = asn_of(m.get("probe_asn"))
    return f"ooni-{cc}-{asn.lower()}"


def asn_of(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"AS{value}"
    text = str(value or "AS0").strip().upper()
    if text.isdigit():
        return f"AS{text}"
    return text if re.fullmatch(r"AS\d+", text) else "AS0"


def service_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return re.sub(r"[^a-z0-9._-]", "-", host) or "ooni"
