"""Rule 5 at the HTTP stage: which HTTP failures are a censor's, and which are not.

The classifier (:mod:`probes.classify`) calls :func:`http_failure` when the first
stage that failed where the control's succeeded is HTTP. Only a censor's
signature there is ``http_blocked`` (CONTRACT §2: a reset, a timeout or an EOF
after the request); reaching a redirect's target is DNS, TCP and TLS again, so
their failures name those stages' verdicts; ``unknown_failure`` is lifeline's
own (``error``); any other failure is ``anomaly``.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from probes.failures import UNKNOWN_PREFIX, Failure
from probes.observe import Break, Case, is_bogon, redirect_step
from probes.reasons import capitalised, control_did, what_failed
from probes.records import HTTPStage, Verdict
from probes.stages import STAGES

__all__ = ["http_failure"]


#: What a censor does to an HTTP exchange it will not let through (CONTRACT §2).
_CENSOR_HTTP_FAILURES = frozenset({Failure.CONNECTION_RESET, Failure.TIMEOUT, Failure.EOF})

_REDIRECT_STEP_SENTENCES = {
    "dns": "DNS for the redirect target {host} failed with {failure}",
    "tcp": "TCP connect to the redirect target {host} failed with {failure}",
    "tls": "the TLS handshake with the redirect target {host} failed with {failure}",
}


def http_failure(case: Case, brk: Break) -> tuple[Verdict, str]:
    """The HTTP stage failed where the control's got its response.

    Only a censor's signature there is ``http_blocked``: a reset, a timeout or
    an EOF (on the stage's connection or after the request). Reaching a
    redirect's target is DNS, TCP and TLS again: their failures name those
    stages' verdicts. A redirect to a private address that lifeline refused to
    follow is a filter's redirect to its block page. ``unknown_failure`` is a
    failure lifeline has no name for (its own decode error, a bug) -> ``error``;
    anything else (a protocol error, a redirect loop or a bad Location) is not
    clearly blocking -> ``anomaly``.
    """
    http = case.obs.record(HTTPStage)
    ctl_did = control_did(case, brk)
    step = redirect_step(http) if http is not None else None
    if step is not None:
        stage, url = step
        host = urlsplit(url).hostname or url
        said = _REDIRECT_STEP_SENTENCES[stage].format(host=host, failure=brk.failure)
        return (STAGES[stage].verdict, f"{capitalised(said)} (after {_hops(http)}) {ctl_did}.")
    private = _private_redirect(case, http)
    if private is not None:
        return (
            Verdict.HTTP_BLOCKED,
            f"The response redirected to {private}, a private or reserved address the "
            f"control was not sent to (a filter's block page), {ctl_did}.",
        )
    said = capitalised(what_failed(case.obs, brk))
    if brk.failure in _CENSOR_HTTP_FAILURES:
        hung = _unattributed_redirect(http)
        if hung is not None:
            said = (
                f"HTTP failed with {brk.failure} reaching the redirect target {hung} "
                f"(after {_hops(http)}) before the request was sent; the record does not "
                "say whether its DNS, TCP or TLS step hung,"
            )
        return Verdict.HTTP_BLOCKED, f"{said} {ctl_did}."
    if brk.failure.startswith(UNKNOWN_PREFIX.rstrip(": ")):
        return (
            Verdict.ERROR,
            f"{said}, a failure lifeline has no name for (its own, most likely), "
            f"{ctl_did}, so the measurement cannot be judged.",
        )
    return (
        Verdict.ANOMALY,
        f"{said} {ctl_did}; that is not a censor's signature (a reset, timeout or EOF).",
    )


def _unattributed_redirect(http: HTTPStage | None) -> str | None:
    """The redirect target's host when the stage failed before its request was written."""
    if http is None or http.ok or http.request_sent or not http.redirects:
        return None
    last = http.redirects[-1]
    try:
        return urlsplit(urljoin(last.url, last.location or "")).hostname
    except ValueError:
        return None


def _hops(http: HTTPStage | None) -> str:
    n = len(http.redirects) if http is not None else 0
    return "1 redirect" if n == 1 else f"{n} redirects"


def _private_redirect(case: Case, http: HTTPStage | None) -> str | None:
    """The private address a refused redirect led to, when the control was not sent there."""
    if http is None or http.failure != Failure.HTTP_BAD_REDIRECT or not http.redirects:
        return None
    location = http.redirects[-1].location
    try:
        host = urlsplit(urljoin(http.redirects[-1].url, location or "")).hostname
    except ValueError:
        return None
    if host is None or not is_bogon(host):
        return None
    ctl_http = case.control.record(HTTPStage) if case.control is not None else None
    for hop in ctl_http.redirects if ctl_http is not None else []:
        try:
            if urlsplit(urljoin(hop.url, hop.location or "")).hostname == host:
                return None
        except ValueError:
            continue
    return host
