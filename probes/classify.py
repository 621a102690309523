"""The verdict of one measurement: a pure function of observations (CONTRACT §2).

``classify`` reads this vantage's measurement, the control's measurement of the
same target, both vantages' canaries and other vantages' measurements of the
target, and names exactly one :class:`~probes.records.Verdict` with a one-sentence
reason a responder can act on. It does no I/O and keeps no state, so a stored
log can be re-classified later with today's rules.

The rules run top to bottom in the order of the contract; the first that
applies decides:

1. ``vantage_down``: every canary of this vantage failed, and so did this target;
   or the vantage's remote agent did not answer (nothing was observed there).
2. fingerprints: a known injected DNS answer -> ``dns_blocked``; a known block
   page, censor header, redirect to a block page or HTTP 451 ->
   ``http_blocked``. They decide without a control (unless the control sees
   the very same thing, which makes it the site's answer, not a censor's).
3. the measurement itself could not be made -> ``error``.
4. a failure the control shares -> ``service_down`` (same or earlier stage at
   the control; an unexpected status at both). Without a control, only a
   failure that every vantage shares in the same definite way (see
   :func:`_every_vantage_fails`) is an outage.
5. the first stage that fails where the control's succeeded names the
   ``*_blocked`` verdict, except that DNS answers which differ from the
   control's *and* do not serve the host are ``dns_blocked`` (the CDN rule).
6. ``throttled``: a throughput target far slower than at the control.
7. ``anomaly``: the response differs from the control's (OONI's http-diff) or
   its status is unexpected while the control's is fine.
8. no usable control and a failure -> ``unreachable``.
9. otherwise ``ok``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from probes.failures import Failure
from probes.fingerprints import FingerprintSet, normalize_address
from probes.records import DNSStage, HTTPStage, Measurement, Verdict

__all__ = ["AGENT_UNREACHABLE", "HTTPComparison", "Judgement", "classify", "http_similarity"]

#: Prefix of ``Measurement.error`` when the vantage's remote agent did not answer
#: (probes/remote.py): no observation was made, and the vantage is down.
AGENT_UNREACHABLE = "agent_unreachable"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict and the one human sentence that explains it."""

    verdict: Verdict
    reason: str


# --- vocabulary ----------------------------------------------------------------

#: Stages in measuring order; "status" is the response arriving with a status
#: outside expectations (the server was reached, so it is not a stage failure).
_ORDER = ("dns", "tcp", "tls", "http", "status")
_LABEL = {"dns": "DNS", "tcp": "TCP", "tls": "TLS", "http": "HTTP", "status": "HTTP status"}
_LAST_STAGE = {"https": "http", "http": "http", "tls": "tls", "tcp": "tcp", "dns": "dns"}

#: TLS failures that say "this server is not the host" rather than "interrupted".
_CERT_FAILURES = frozenset(
    {Failure.SSL_INVALID_HOSTNAME, Failure.SSL_UNKNOWN_AUTHORITY, Failure.SSL_INVALID_CERTIFICATE}
)

#: Failures definite enough for "every vantage sees it, so it is down" without a
#: control: a name that does not exist, or a server that refuses. Timeouts,
#: resets and proxy errors are left out: they are both what censors do and what
#: a dead vantage produces, and peers' canaries are not known here.
_CONSENSUS_FAILURES = frozenset(
    {Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER, Failure.CONNECTION_REFUSED}
)

#: OONI's similarity thresholds (Web Connectivity): body length proportion and
#: the minimum length of a title word that must appear in both titles.
_BODY_PROPORTION = 0.7
_TITLE_WORD_MIN = 5

#: A throughput sample shorter than this (and not cut by the deadline) is noise:
#: a connection's slow start alone can make it look throttled.
_MIN_SAMPLE_S = 0.5

#: Headers nearly every server sends: sharing them says nothing (after OONI).
_COMMON_HEADERS = frozenset(
    {
        "accept-ranges", "age", "cache-control", "connection", "content-encoding",
        "content-language", "content-length", "content-type", "date", "etag", "expires",
        "keep-alive", "last-modified", "location", "p3p", "pragma", "server",
        "set-cookie", "strict-transport-security", "transfer-encoding", "vary", "via",
        "x-content-type-options", "x-frame-options", "x-powered-by", "x-xss-protection",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Break:
    """Where a measurement stopped working: the stage and its failure string."""

    stage: str  # one of _ORDER
    failure: str

    @property
    def index(self) -> int:
        return _ORDER.index(self.stage)

    def short(self) -> str:
        if self.stage == "status":
            return self.failure
        return f"{self.failure} at {_LABEL[self.stage]}"


@dataclass(frozen=True, slots=True)
class _Case:
    """Everything one classification looks at, prepared once."""

    obs: Measurement
    brk: _Break | None
    control: Measurement | None  # usable control measurement, else None
    ctl_brk: _Break | None
    why_no_control: str  # clause used when control is None
    canaries: Sequence[Measurement]
    peers: Sequence[Measurement]
    fingerprints: FingerprintSet
    throttle_ratio: float
    is_control: bool


# --- entry point ----------------------------------------------------------------


def classify(
    obs: Measurement,
    *,
    control: Measurement | None,
    canaries: Sequence[Measurement],
    fingerprints: FingerprintSet,
    throttle_ratio: float,
    is_control: bool = False,
    control_canaries: Sequence[Measurement] = (),
    peers: Sequence[Measurement] = (),
) -> Judgement:
    """Judge ``obs`` (CONTRACT §2); pure, total, never does I/O.

    ``control`` is the control vantage's measurement of the same target (None
    without a control); ``canaries`` and ``control_canaries`` are the two
    vantages' canaries of the same round (empty means unknown, never down);
    ``is_control`` says ``obs`` is the control's own measurement: a failure
    there is ``service_down``. ``peers`` are other vantages' measurements of
    the target, used only without a control (see :func:`_every_vantage_fails`).

    Two readings of "down" keep real events honest: a vantage is
    ``vantage_down`` only when its canaries fail *and* this target fails too
    (during national shutdowns domestic services stay reachable), and a control
    whose canaries fail is discarded only when its own measurement of the target
    failed as well (a control that reached the target is still a good control).
    """
    case = _prepare(
        obs,
        control=None if is_control else control,
        control_canaries=() if is_control else control_canaries,
        canaries=canaries,
        peers=peers,
        fingerprints=fingerprints,
        throttle_ratio=throttle_ratio,
        is_control=is_control,
    )
    for rule in _RULES:
        judgement = rule(case)
        if judgement is not None:
            return judgement
    return _ok(case)


def _prepare(
    obs: Measurement,
    *,
    control: Measurement | None,
    control_canaries: Sequence[Measurement],
    canaries: Sequence[Measurement],
    peers: Sequence[Measurement],
    fingerprints: FingerprintSet,
    throttle_ratio: float,
    is_control: bool,
) -> _Case:
    usable, why = _usable_control(control, control_canaries, is_control)
    return _Case(
        obs=obs,
        brk=_breakpoint(obs),
        control=usable,
        ctl_brk=_breakpoint(usable) if usable is not None else None,
        why_no_control=why,
        canaries=tuple(canaries),
        peers=tuple(peers),
        fingerprints=fingerprints,
        throttle_ratio=throttle_ratio,
        is_control=is_control,
    )


def _usable_control(
    control: Measurement | None, control_canaries: Sequence[Measurement], is_control: bool
) -> tuple[Measurement | None, str]:
    """The control measurement if it can be compared with, else None and why not."""
    if is_control:
        return None, "this is the control vantage itself"
    if control is None:
        return None, "there is no control measurement"
    if control.error is not None:
        return None, f"the control measurement could not be made ({_clean(control.error)})"
    if _incomplete(control) is not None:
        return None, "the control measurement is incomplete"
    brk = _breakpoint(control)
    if brk is not None and brk.stage != "status" and _canaries_down(control_canaries):
        return None, "the control vantage is down (every canary failed there)"
    return control, ""


# --- 1. vantage_down -------------------------------------------------------------


def _agent_down(case: _Case) -> Judgement | None:
    """The vantage's agent did not answer: the vantage is down, whatever the target.

    Its canaries fail the same way, so this is the canary rule seen from the
    hub; naming the agent tells the responder where to look.
    """
    error = case.obs.error
    if error is None or not error.startswith(AGENT_UNREACHABLE + ":"):
        return None
    detail = _clean(error.removeprefix(AGENT_UNREACHABLE + ":").strip())
    return Judgement(
        Verdict.VANTAGE_DOWN,
        f"The remote agent of this vantage did not answer ({detail}), "
        "so the vantage is down: nothing was measured there.",
    )


def _vantage_down(case: _Case) -> Judgement | None:
    """Every canary failed and this target failed too: the vantage's network is down."""
    reached = case.obs.error is None and (case.brk is None or case.brk.stage == "status")
    if reached or not _canaries_down(case.canaries):
        return None
    measured = (c for c in case.canaries if c.error is None)
    failed = [b for b in map(_breakpoint, measured) if b is not None]
    which = "The only canary" if len(failed) == 1 else f"All {len(failed)} canaries"
    return Judgement(
        Verdict.VANTAGE_DOWN,
        f"{which} failed from this vantage too (first {failed[0].short()}), "
        "so the vantage or its network is down.",
    )


def _canaries_down(canaries: Sequence[Measurement]) -> bool:
    """True when at least one canary told us something and none reached its server.

    A canary that could not be measured (``error``) says nothing either way.
    """
    informative = [c for c in canaries if c.error is None]
    if not informative:
        return False
    for canary in informative:
        brk = _breakpoint(canary)
        if brk is None or brk.stage == "status":
            return False
    return True


# --- 2. fingerprints --------------------------------------------------------------


def _dns_fingerprint(case: _Case) -> Judgement | None:
    """A known injected answer is DNS blocking, unless the control gets it too."""
    dns = case.obs.dns
    if dns is None or dns.skipped:
        return None
    seen_by_control = _addresses(case.control.dns) if case.control is not None else set()
    for address in _all_answers(dns):
        name = case.fingerprints.match_dns([address])
        if name is not None and normalize_address(address) not in seen_by_control:
            return Judgement(
                Verdict.DNS_BLOCKED,
                f"DNS answered a known injected address, {name}{_vs_control_answers(case)}.",
            )
    return None


def _http_fingerprint(case: _Case) -> Judgement | None:
    """A known block page, censor header, redirect to a block page, or HTTP 451."""
    http = case.obs.http
    if http is None:
        return None
    ctl_http = case.control.http if case.control is not None else None
    name = case.fingerprints.match_http(http)
    if name is not None and (ctl_http is None or case.fingerprints.match_http(ctl_http) != name):
        return Judgement(
            Verdict.HTTP_BLOCKED, f"The response carries a known censorship fingerprint: {name}."
        )
    if http.status == 451 and (ctl_http is None or ctl_http.status != 451):
        if case.fingerprints.false_positive(http) is None:
            return Judgement(
                Verdict.HTTP_BLOCKED,
                "The server answered HTTP 451 Unavailable For Legal Reasons"
                f"{_control_status_clause(case)}.",
            )
    return None


# --- 3. error ---------------------------------------------------------------------


def _measurement_error(case: _Case) -> Judgement | None:
    """The measurement itself could not be made, or stopped without saying why."""
    if case.obs.error is not None:
        return Judgement(
            Verdict.ERROR, f"The measurement could not be made: {_clean(case.obs.error)}."
        )
    missing = _incomplete(case.obs)
    if missing is not None:
        return Judgement(
            Verdict.ERROR,
            f"The measurement stopped before its {_LABEL[missing]} stage without "
            "recording a failure, so it cannot be judged.",
        )
    return None


# --- 4. service_down ----------------------------------------------------------------


def _shared_failure(case: _Case) -> Judgement | None:
    """A failure the control shares (at the same or an earlier stage) is an outage."""
    brk = case.brk
    if brk is None:
        return None
    if case.is_control:
        return Judgement(
            Verdict.SERVICE_DOWN,
            f"It fails from the control vantage itself ({_what_failed(case.obs, brk)}), "
            "so the service is down, not blocked.",
        )
    if case.control is None:
        return _every_vantage_fails(case)
    ctl_brk = case.ctl_brk
    if ctl_brk is None or ctl_brk.index > brk.index:
        return None
    return Judgement(
        Verdict.SERVICE_DOWN,
        f"It fails from the control as well ({brk.short()} here, {ctl_brk.short()} at the "
        "control), so the service is down, not blocked.",
    )


def _every_vantage_fails(case: _Case) -> Judgement | None:
    """Without a control: an outage only when every vantage fails in the same definite way.

    Deliberately conservative: it needs this vantage and at least two others
    to fail at the same stage with the same failure, and that failure must be
    one a censor rarely imitates and a dead vantage does not produce
    (NXDOMAIN, no answer, or a refused connection made directly, not through a
    proxy). Two in-country vantages behind one censor can still agree, so the
    rule never applies with fewer than three vantages; the lab's no-control
    catalogue (two vantages) therefore keeps its ``unreachable`` verdicts.
    """
    brk = case.brk
    if brk is None or brk.failure not in _CONSENSUS_FAILURES:
        return None
    peers = {
        p.vantage: p
        for p in case.peers
        if p.vantage != case.obs.vantage and p.target == case.obs.target
    }
    if len(peers) < 2:
        return None
    if any(p.error is not None or _breakpoint(p) != brk for p in peers.values()):
        return None
    if brk.failure == Failure.CONNECTION_REFUSED:
        everyone = [case.obs, *peers.values()]
        if any(m.tcp is None or m.tcp.via_proxy for m in everyone):
            return None
    return Judgement(
        Verdict.SERVICE_DOWN,
        f"It fails the same way ({brk.short()}) from all {len(peers) + 1} vantages, and "
        f"{case.why_no_control}, so this looks like an outage, not blocking.",
    )


# --- 5. first failing stage, and the CDN rule ---------------------------------------


def _first_failing_stage(case: _Case) -> Judgement | None:
    """Blocking at the first stage that fails where the control's succeeded.

    Checked first: DNS answers that differ from the control's and do not serve
    the host are the root cause even when the failure surfaces at TCP, TLS or
    in the content (see :func:`_not_served`).
    """
    if case.control is None:
        return None
    evidence = _not_served(case)
    if evidence is not None:
        return Judgement(
            Verdict.DNS_BLOCKED,
            f"DNS answered {_list(_addresses(case.obs.dns))} instead of the control's "
            f"{_list(_addresses(case.control.dns))}, and {evidence}.",
        )
    brk = case.brk
    if brk is None or brk.stage == "status":
        return None
    verdict = {
        "dns": Verdict.DNS_BLOCKED,
        "tcp": Verdict.TCP_BLOCKED,
        "tls": Verdict.TLS_BLOCKED,
        "http": Verdict.HTTP_BLOCKED,
    }[brk.stage]
    return Judgement(verdict, f"{_cap(_what_failed(case.obs, brk))} {_control_did(case, brk)}.")


def _not_served(case: _Case) -> str | None:
    """Why this vantage's differing DNS answers do not serve the host, or None.

    None when the answers overlap the control's, or when there is positive
    evidence that they serve the host (a certificate valid for the name, or
    the same page as the control's): CDNs answer per region.
    """
    obs, ctl = case.obs, case.control
    if ctl is None or not _answers_differ(obs.dns, ctl.dns):
        return None
    if obs.tls is not None and obs.tls.ok:
        return None
    if obs.tcp is not None and not obs.tcp.ok and _control_passed(case, "tcp"):
        return f"nothing answers there (TCP {_clean(obs.tcp.failure)})"
    tls = obs.tls
    if tls is not None and not tls.ok and tls.failure in _CERT_FAILURES:
        if _control_passed(case, "tls"):
            return f"the server there is not the host ({tls.failure}{_cert_names(case)})"
    responses = _responses(case)
    if responses is not None:
        difference = _content_difference(*responses)
        if difference is None:
            return None
        return f"the page there differs from the control's ({difference})"
    if _all_bogon(_addresses(obs.dns)) and not any(map(_is_bogon, _addresses(ctl.dns))):
        return "they are private or reserved addresses the control does not see"
    return None


def _control_passed(case: _Case, stage: str) -> bool:
    """The control got past ``stage`` (it ran it and did not fail there or before)."""
    ctl = case.control
    if ctl is None or getattr(ctl, stage) is None:
        return False
    return case.ctl_brk is None or case.ctl_brk.index > _ORDER.index(stage)


def _responses(case: _Case) -> tuple[HTTPStage, HTTPStage] | None:
    """(this vantage's, the control's) responses when both arrived and the control's is healthy."""
    ctl = case.control
    arrived = case.brk is None or case.brk.stage == "status"
    if ctl is None or not arrived or case.ctl_brk is not None:
        return None
    if case.obs.http is None or ctl.http is None:
        return None
    return case.obs.http, ctl.http


def _content_difference(obs: HTTPStage, ctl: HTTPStage) -> str | None:
    """How the page differs in a way that says "another server", or None.

    Title differs, body length proportion below 0.7, or (control 2xx) status
    differs. Unknown body lengths are no evidence either way.
    """
    parts = []
    if _status_differs(obs, ctl):
        parts.append(f"status {obs.status} vs {ctl.status}")
    if not _titles_match(obs.title, ctl.title):
        parts.append(f"title {_quote(obs.title)} vs {_quote(ctl.title)}")
    proportion = _proportion(obs.body_length, ctl.body_length)
    if proportion is not None and proportion < _BODY_PROPORTION:
        parts.append(f"body {_bytes(obs.body_length)} vs {_bytes(ctl.body_length)}")
    return ", ".join(parts) or None


# --- 6. throttled ---------------------------------------------------------------------


def _throttled(case: _Case) -> Judgement | None:
    """A throughput target whose sample is below ``throttle_ratio`` of the control's.

    Noise guard: the sample must have lasted at least ``_MIN_SAMPLE_S`` or been
    cut by the deadline (``body_truncated``); a short burst says nothing.
    """
    rates = _throughput_pair(case)
    if rates is None:
        return None
    here, there = rates
    http = case.obs.http
    if http is None or not here < case.throttle_ratio * there or not _long_enough(http):
        return None
    return Judgement(
        Verdict.THROTTLED,
        f"Throughput was {_rate(here)}, {_percent(here / there)} of the control's "
        f"{_rate(there)} (below the {_percent(case.throttle_ratio)} threshold).",
    )


def _throughput_pair(case: _Case) -> tuple[float, float] | None:
    """(this vantage's, the control's) throughput in bytes/s when both can be compared."""
    ctl = case.control
    if not case.obs.throughput or ctl is None or case.brk is not None or case.ctl_brk is not None:
        return None
    here_http, there_http = case.obs.http, ctl.http
    if here_http is None or there_http is None:
        return None
    here, there = here_http.throughput_bps, there_http.throughput_bps
    if here is None or there is None or not math.isfinite(here) or not math.isfinite(there):
        return None
    if here < 0 or there <= 0:
        return None
    return here, there


def _long_enough(http: HTTPStage) -> bool:
    if http.body_truncated:
        return True
    return http.transfer_s is not None and http.transfer_s >= _MIN_SAMPLE_S


# --- 7. anomaly -------------------------------------------------------------------------


def _anomaly(case: _Case) -> Judgement | None:
    """Differs from a healthy control in a way that is not clearly blocking."""
    ctl = case.control
    if ctl is None or case.ctl_brk is not None:
        return None
    brk = case.brk
    if brk is not None and brk.stage == "status":
        return Judgement(
            Verdict.ANOMALY,
            f"{_cap(_what_failed(case.obs, brk))}, while the control got {_status_text(ctl.http)}.",
        )
    if brk is not None or case.obs.http is None or ctl.http is None:
        return None
    diff = _http_diff(case.obs.http, ctl.http)
    if diff is None:
        return None
    return Judgement(Verdict.ANOMALY, f"The response differs from the control's: {diff}.")


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
    proportion = _proportion(http.body_length, control_http.body_length)
    return HTTPComparison(
        body_proportion=proportion,
        body_length_match=proportion is not None and proportion > _BODY_PROPORTION,
        status_code_match=not _status_differs(http, control_http),
        headers_match=bool(_uncommon_headers(http) & _uncommon_headers(control_http)),
        title_match=_titles_match(http.title, control_http.title),
    )


def _http_diff(obs: HTTPStage, ctl: HTTPStage) -> str | None:
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
        parts.append(f"title {_quote(obs.title)} vs {_quote(ctl.title)}")
    if not body_match:
        parts.append(f"body {_bytes(obs.body_length)} vs {_bytes(ctl.body_length)}")
    if not headers_match:
        parts.append("no uncommon header in common")
    return ", ".join(parts)


# --- 8. unreachable ---------------------------------------------------------------------


def _no_control_failure(case: _Case) -> Judgement | None:
    """A failure with nothing to compare it with cannot be told from an outage."""
    brk = case.brk
    if case.control is not None or case.is_control or brk is None or brk.stage == "status":
        return None
    return Judgement(
        Verdict.UNREACHABLE,
        f"{_cap(_what_failed(case.obs, brk))}, and {case.why_no_control}, "
        "so blocking cannot be told from an outage.",
    )


# --- 9. ok -------------------------------------------------------------------------------


def _ok(case: _Case) -> Judgement:
    """Reachable; the reason says what it was compared with and any caveat."""
    seen = _reached_text(case.obs)
    if case.control is None:
        return Judgement(
            Verdict.OK,
            f"Reachable ({seen}); {case.why_no_control}, so there is nothing to compare with.",
        )
    if case.ctl_brk is not None:
        return Judgement(
            Verdict.OK,
            f"Reachable ({seen}), although the control fails ({case.ctl_brk.short()}).",
        )
    return Judgement(
        Verdict.OK, f"Reachable and consistent with the control ({seen}){_note(case)}."
    )


def _note(case: _Case) -> str:
    """A caveat for an ok verdict: differing DNS answers served, or a too-short sample."""
    ctl = case.control
    if ctl is not None and _answers_differ(case.obs.dns, ctl.dns):
        if case.obs.tls is not None:
            how = "TLS is valid for the name"
        elif case.obs.http is not None:
            how = "the page is the same"
        else:
            how = "differing answers alone are not blocking (CDNs answer per region)"
        return f"; its DNS answers differ from the control's, but {how}"
    rates = _throughput_pair(case)
    http = case.obs.http
    if rates is not None and http is not None and rates[0] < case.throttle_ratio * rates[1]:
        return (
            f"; throughput {_rate(rates[0])} vs the control's {_rate(rates[1])}, "
            f"but the sample was too short to judge"
        )
    return ""


_RULES: tuple[Callable[[_Case], Judgement | None], ...] = (
    _agent_down,
    _vantage_down,
    _dns_fingerprint,
    _http_fingerprint,
    _measurement_error,
    _shared_failure,
    _first_failing_stage,
    _throttled,
    _anomaly,
    _no_control_failure,
)


# --- observations ---------------------------------------------------------------------------


def _breakpoint(m: Measurement) -> _Break | None:
    """The first stage that failed, or an unexpected status, or None when it all worked.

    For a throughput target, an HTTP timeout after the status and some body
    arrived is a throughput sample (the budget ran out mid-body), not a failure.
    """
    for stage in ("dns", "tcp", "tls", "http"):
        rec = getattr(m, stage)
        if rec is None or rec.ok:
            continue
        if stage == "http" and _is_throughput_sample(m, rec):
            continue
        return _Break(stage, _clean(rec.failure))
    http = m.http
    if http is not None and http.status is not None and not _status_expected(m, http.status):
        return _Break("status", f"status {http.status}")
    return None


def _is_throughput_sample(m: Measurement, http: HTTPStage) -> bool:
    return (
        m.throughput
        and http.failure == Failure.TIMEOUT
        and http.status is not None
        and (http.body_length or 0) > 0
    )


def _incomplete(m: Measurement) -> str | None:
    """The last stage of the target's scheme when it is missing although nothing failed."""
    try:
        scheme = urlsplit(m.target).scheme.lower()
    except ValueError:
        return None
    last = _LAST_STAGE.get(scheme)
    if last is None or getattr(m, last) is not None:
        return None
    if any(rec is not None and not rec.ok for rec in m.stages().values()):
        return None
    return last


def _status_expected(m: Measurement, status: int) -> bool:
    """Inside the target's ``expect_status``; without one, anything below 400."""
    if m.expect_status:
        return status in m.expect_status
    return status < 400


def _status_differs(obs: HTTPStage, ctl: HTTPStage) -> bool:
    """Statuses differ, counted only when the control's is 2xx (as OONI does)."""
    if ctl.status is None or not 200 <= ctl.status < 300:
        return False
    return obs.status != ctl.status


def _titles_match(a: str | None, b: str | None) -> bool:
    """Every title word of 5+ letters appears in both titles (OONI's title match)."""
    wa, wb = _title_words(a), _title_words(b)
    if wa or wb:
        return wa == wb
    return " ".join((a or "").split()).casefold() == " ".join((b or "").split()).casefold()


def _title_words(title: str | None) -> frozenset[str]:
    words = re.findall(r"\w+", (title or "").casefold())
    return frozenset(w for w in words if len(w) >= _TITLE_WORD_MIN)


def _proportion(a: int | None, b: int | None) -> float | None:
    """Smaller body length over larger (1.0 for two empty bodies); None when unknown."""
    if a is None or b is None or a < 0 or b < 0:
        return None
    if a == b:
        return 1.0
    return min(a, b) / max(a, b)


def _uncommon_headers(http: HTTPStage) -> frozenset[str]:
    return frozenset(k.lower() for k in http.headers) - _COMMON_HEADERS


def _addresses(dns: DNSStage | None) -> set[str]:
    if dns is None or not dns.ok:
        return set()
    return {normalize_address(a) for a in dns.addresses}


def _all_answers(dns: DNSStage) -> list[str]:
    """Every address the resolver gave, from the stage and from each query's answers."""
    out = list(dns.addresses)
    for query in dns.queries:
        out += [a.value for a in query.answers if a.rtype in ("A", "AAAA")]
    return out


def _answers_differ(obs: DNSStage | None, ctl: DNSStage | None) -> bool:
    """Both resolved (by DNS, not from an IP literal) and share no address."""
    if obs is None or ctl is None or obs.skipped or ctl.skipped:
        return False
    mine, theirs = _addresses(obs), _addresses(ctl)
    return bool(mine) and bool(theirs) and not mine & theirs


def _is_bogon(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _all_bogon(addresses: Iterable[str]) -> bool:
    listed = list(addresses)
    return bool(listed) and all(map(_is_bogon, listed))


# --- sentences ---------------------------------------------------------------------------


def _what_failed(m: Measurement, brk: _Break) -> str:
    """'TCP connect to 127.0.0.10:443 failed with connection_reset' and the like."""
    if brk.stage == "dns":
        return f"DNS failed with {brk.failure}"
    if brk.stage == "tcp":
        return f"TCP connect{_tcp_target(m)} failed with {brk.failure}"
    if brk.stage == "tls":
        sni = m.tls.server_name if m.tls is not None and m.tls.server_name else None
        return f"the TLS handshake{f' (SNI {sni})' if sni else ''} failed with {brk.failure}"
    if brk.stage == "http":
        sent = m.http is not None and m.http.request_sent
        return f"HTTP failed with {brk.failure}{' after the request was sent' if sent else ''}"
    return f"the response had {brk.failure}, not {_expected_text(m)}"


def _expected_text(m: Measurement) -> str:
    if not m.expect_status:
        return "a status below 400"
    if len(m.expect_status) == 1:
        return f"the expected {m.expect_status[0]}"
    return "one of the expected " + ", ".join(map(str, m.expect_status))


def _tcp_target(m: Measurement) -> str:
    tcp = m.tcp
    if tcp is None or not tcp.attempts:
        return ""
    last = tcp.attempts[-1]
    host = f"[{last.address}]" if ":" in last.address else last.address
    more = f" (and {len(tcp.attempts) - 1} other addresses)" if len(tcp.attempts) > 1 else ""
    return f" to {host}:{last.port}{more}"


def _control_did(case: _Case, brk: _Break) -> str:
    """The control's success at the stage that failed here."""
    ctl = case.control
    if ctl is None:
        return ""
    if brk.stage == "dns":
        return f"while the control resolved it to {_list(_addresses(ctl.dns))}"
    if brk.stage == "tcp":
        return "while the control connected"
    if brk.stage == "tls":
        return "while the control completed it"
    return f"while the control got {_status_text(ctl.http)}"


def _vs_control_answers(case: _Case) -> str:
    if case.control is None:
        return ""
    theirs = _addresses(case.control.dns)
    return f", while the control resolved it to {_list(theirs)}" if theirs else ""


def _control_status_clause(case: _Case) -> str:
    if case.control is None or case.control.http is None:
        return ""
    return f", while the control got {_status_text(case.control.http)}"


def _cert_names(case: _Case) -> str:
    tls = case.obs.tls
    cert = tls.certificate if tls is not None else None
    if cert is None:
        return ""
    names = list(dict.fromkeys([*cert.san, *([cert.subject_cn] if cert.subject_cn else [])]))
    if not names:
        return ""
    return f", certificate for {_list(names)}"


def _status_text(http: HTTPStage | None) -> str:
    if http is None or http.status is None:
        return "a response"
    return f"status {http.status}"


def _reached_text(m: Measurement) -> str:
    http = m.http
    if http is not None and http.status is not None:
        return f"status {http.status}"
    for stage in ("tls", "tcp", "dns"):
        if getattr(m, stage) is not None:
            return f"{_LABEL[stage]} worked"
    return "nothing failed"


def _list(items: Iterable[str], limit: int = 3) -> str:
    values = sorted(items)
    if not values:
        return "nothing"
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _quote(title: str | None) -> str:
    if title is None:
        return "(none)"
    text = " ".join(title.split())
    return '"' + (text[:57] + "..." if len(text) > 60 else text) + '"'


def _bytes(n: int | None) -> str:
    return "unknown" if n is None else f"{n} bytes"


def _rate(bps: float) -> str:
    for unit, size in (("MiB/s", 1024.0**2), ("KiB/s", 1024.0)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps:.0f} B/s"


def _percent(fraction: float) -> str:
    """A share as a person writes it; a tiny one must not print as 0%."""
    pct = fraction * 100
    if not math.isfinite(pct) or pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 0.01:
        return f"{pct:.2g}%"
    return "under 0.01%"


def _clean(text: str | None) -> str:
    """A failure or error string fit for one sentence: one line, bounded."""
    flat = " ".join((text or "").split()) or "unknown_failure: no detail"
    return flat[:157] + "..." if len(flat) > 160 else flat


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]
