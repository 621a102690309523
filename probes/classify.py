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
4b. the control says the name does not exist (NXDOMAIN) but this vantage got
   addresses and got through: invented answers -> ``dns_blocked`` when they
   are private or reserved addresses, else ``anomaly`` (never ``ok``).
5. the first stage that fails where the control's succeeded names the
   ``*_blocked`` verdict, except that DNS answers which differ from the
   control's *and* do not serve the host are ``dns_blocked`` (the CDN rule).
   At HTTP only a censor's signature (reset, timeout, EOF) is ``http_blocked``;
   a failure reaching a redirect's target names that step's verdict (its DNS,
   TCP or TLS); ``unknown_failure`` is ours -> ``error``; any other failure ->
   ``anomaly``.
6. ``throttled``: a throughput target far slower than at the control.
7. ``anomaly``: the response differs from the control's (OONI's http-diff) or
   its status is unexpected while the control's is fine.
8. no usable control and a failure -> ``unreachable``.
9. otherwise ``ok``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from probes.compare import content_difference, http_diff
from probes.dnsrules import invented_answers, unconnected_bogons
from probes.dnswindow import injected_pair, reply_text
from probes.failures import Failure
from probes.fingerprints import FingerprintSet, normalize_address
from probes.httpfail import http_failure
from probes.observe import (
    CERT_FAILURES,
    MIN_SAMPLE_S,
    Case,
    addresses_of,
    all_answers,
    all_bogon,
    answers_differ,
    break_of,
    clean_failure,
    incomplete,
    is_bogon,
    local_limitation,
    stage_label,
    stage_order,
)
from probes.reasons import (
    capitalised,
    cert_names,
    control_did,
    control_status_clause,
    listing,
    percent_text,
    rate_text,
    reached_text,
    status_text,
    vs_control_answers,
    what_failed,
)
from probes.records import DNSStage, HTTPStage, Measurement, TCPStage, TLSStage, Verdict
from probes.stages import STAGES

__all__ = ["AGENT_UNREACHABLE", "Judgement", "classify"]

#: Prefix of ``Measurement.error`` when the vantage's remote agent did not answer
#: (probes/remote.py): no observation was made, and the vantage is down.
AGENT_UNREACHABLE = "agent_unreachable"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict and the one human sentence that explains it."""

    verdict: Verdict
    reason: str


# --- vocabulary ----------------------------------------------------------------


#: Failures definite enough for "every vantage sees it, so it is down" without a
#: control: a name that does not exist, or a server that refuses. Timeouts,
#: resets and proxy errors are left out: they are both what censors do and what
#: a dead vantage produces, and peers' canaries are not known here.
_CONSENSUS_FAILURES = frozenset(
    {Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER, Failure.CONNECTION_REFUSED}
)


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
) -> Case:
    usable, why = _usable_control(control, control_canaries, is_control)
    return Case(
        obs=obs,
        brk=break_of(obs),
        control=usable,
        ctl_brk=break_of(usable) if usable is not None else None,
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
        return None, f"the control measurement could not be made ({clean_failure(control.error)})"
    if incomplete(control) is not None:
        return None, "the control measurement is incomplete"
    brk = break_of(control)
    if brk is not None and brk.stage != "status" and _canaries_down(control_canaries):
        return None, "the control vantage is down (every canary failed there)"
    local = local_limitation(control)
    if local is not None:
        return None, f"the control vantage could not measure it ({local})"
    return control, ""


# --- 1. vantage_down -------------------------------------------------------------


def _agent_down(case: Case) -> Judgement | None:
    """The vantage's agent did not answer: the vantage is down, whatever the target.

    Its canaries fail the same way, so this is the canary rule seen from the
    hub; naming the agent tells the responder where to look.
    """
    error = case.obs.error
    if error is None or not error.startswith(AGENT_UNREACHABLE + ":"):
        return None
    detail = clean_failure(error.removeprefix(AGENT_UNREACHABLE + ":").strip())
    return Judgement(
        Verdict.VANTAGE_DOWN,
        f"The remote agent of this vantage did not answer ({detail}), "
        "so the vantage is down: nothing was measured there.",
    )


def _vantage_down(case: Case) -> Judgement | None:
    """Every canary failed and this target failed too: the vantage's network is down."""
    reached = case.obs.error is None and (case.brk is None or case.brk.stage == "status")
    if reached or not _canaries_down(case.canaries):
        return None
    measured = (c for c in case.canaries if c.error is None)
    failed = [b for b in map(break_of, measured) if b is not None]
    which = "The only canary" if len(failed) == 1 else f"All {len(failed)} canaries"
    return Judgement(
        Verdict.VANTAGE_DOWN,
        f"{which} failed from this vantage too (first {failed[0].short()}), "
        "so the vantage or its network is down.",
    )


def _canaries_down(canaries: Sequence[Measurement]) -> bool:
    """True when at least one canary told us something and none reached its server.

    A canary that could not be measured (``error``), or failed only for a limit of
    the vantage itself (an address family it cannot use), says nothing either way.
    """
    informative = [c for c in canaries if c.error is None and local_limitation(c) is None]
    if not informative:
        return False
    for canary in informative:
        brk = break_of(canary)
        if brk is None or brk.stage == "status":
            return False
    return True


# --- 2. fingerprints --------------------------------------------------------------


def _dns_fingerprint(case: Case) -> Judgement | None:
    """A known injected answer is DNS blocking, unless the control gets it too."""
    dns = case.obs.record(DNSStage)
    if dns is None or dns.skipped:
        return None
    seen_by_control = (
        addresses_of(case.control.record(DNSStage)) if case.control is not None else set()
    )
    for address in all_answers(dns):
        name = case.fingerprints.match_dns([address])
        if name is not None and normalize_address(address) not in seen_by_control:
            return Judgement(
                Verdict.DNS_BLOCKED,
                f"DNS answered a known injected address, {name}{vs_control_answers(case)}.",
            )
    return None


def _dns_injection(case: Case) -> Judgement | None:
    """Two different replies to one query, the first forged: on-path DNS injection.

    It decides without a control (the pair is the evidence), unless the control
    resolved the name to the very addresses of the first reply: then the first
    was the site's own answer.
    """
    dns = case.obs.record(DNSStage)
    if dns is None or dns.skipped:
        return None
    seen_by_control = (
        addresses_of(case.control.record(DNSStage)) if case.control is not None else set()
    )
    for query in dns.queries:
        real = injected_pair(query)
        first = {normalize_address(a.value) for a in query.answers if a.rtype == query.qtype}
        if real is None or (first and first <= seen_by_control):
            continue
        forged, true = reply_text(query.rcode, query.answers), reply_text(real.rcode, real.answers)
        return Judgement(
            Verdict.DNS_BLOCKED,
            f"DNS injection: the {query.qtype} question got a forged reply ({forged}) first "
            f"and the real one ({true}) {real.after_s:.3f} s later{vs_control_answers(case)}.",
        )
    return None


def _http_fingerprint(case: Case) -> Judgement | None:
    """A known block page, censor header, redirect to a block page, or HTTP 451."""
    http = case.obs.record(HTTPStage)
    if http is None:
        return None
    ctl_http = case.control.record(HTTPStage) if case.control is not None else None
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
                f"{control_status_clause(case)}.",
            )
    return None


# --- 3. error ---------------------------------------------------------------------


def _measurement_error(case: Case) -> Judgement | None:
    """The measurement itself could not be made, or stopped without saying why."""
    if case.obs.error is not None:
        return Judgement(
            Verdict.ERROR, f"The measurement could not be made: {clean_failure(case.obs.error)}."
        )
    missing = incomplete(case.obs)
    if missing is not None:
        unconnected = unconnected_bogons(case)
        if unconnected is not None:
            return Judgement(*unconnected)
        return Judgement(
            Verdict.ERROR,
            f"The measurement stopped before its {stage_label(missing)} stage without "
            "recording a failure, so it cannot be judged.",
        )
    return None


def _family_unavailable(case: Case) -> Judgement | None:
    """It failed only because this vantage cannot use an address family: nothing was sent.

    A vantage bound to an IPv4 address meeting an IPv6-only service (or bound to
    IPv6 with an IPv4 resolver) measures nothing there; calling that blocking
    would file a local limit as censorship.
    """
    local = local_limitation(case.obs)
    if local is None:
        return None
    return Judgement(
        Verdict.ERROR,
        f"The measurement could not be made from this vantage: {local}; that is a limit "
        "of the vantage, not blocking.",
    )


# --- 4. service_down ----------------------------------------------------------------


def _shared_failure(case: Case) -> Judgement | None:
    """A failure the control shares (at the same or an earlier stage) is an outage."""
    brk = case.brk
    if brk is None:
        return None
    if case.is_control:
        return Judgement(
            Verdict.SERVICE_DOWN,
            f"It fails from the control vantage itself ({what_failed(case.obs, brk)}), "
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


def _every_vantage_fails(case: Case) -> Judgement | None:
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
    if any(p.error is not None or break_of(p) != brk for p in peers.values()):
        return None
    if brk.failure == Failure.CONNECTION_REFUSED:
        everyone = [case.obs, *peers.values()]
        tcps = [m.record(TCPStage) for m in everyone]
        if any(tcp is None or tcp.via_proxy for tcp in tcps):
            return None
    return Judgement(
        Verdict.SERVICE_DOWN,
        f"It fails the same way ({brk.short()}) from all {len(peers) + 1} vantages, and "
        f"{case.why_no_control}, so this looks like an outage, not blocking.",
    )


# --- 4b. invented answers ---------------------------------------------------------


def _invented_answers(case: Case) -> Judgement | None:
    """4b: addresses for a name the control says does not exist (probes/dnsrules.py)."""
    found = invented_answers(case)
    return None if found is None else Judgement(*found)


# --- 5. first failing stage, and the CDN rule ---------------------------------------


def _first_failing_stage(case: Case) -> Judgement | None:
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
            f"DNS answered {listing(addresses_of(case.obs.record(DNSStage)))} instead of the "
            f"control's {listing(addresses_of(case.control.record(DNSStage)))}, and {evidence}.",
        )
    brk = case.brk
    if brk is None or brk.stage == "status":
        return None
    if brk.stage == "http":
        return Judgement(*http_failure(case, brk))
    verdict = STAGES[brk.stage].verdict
    return Judgement(
        verdict, f"{capitalised(what_failed(case.obs, brk))} {control_did(case, brk)}."
    )


def _not_served(case: Case) -> str | None:
    """Why this vantage's differing DNS answers do not serve the host, or None.

    None when the answers overlap the control's, or when there is positive
    evidence that they serve the host (a certificate valid for the name, or
    the same page as the control's): CDNs answer per region.
    """
    obs, ctl = case.obs, case.control
    if ctl is None or not answers_differ(obs.record(DNSStage), ctl.record(DNSStage)):
        return None
    tcp, tls = obs.record(TCPStage), obs.record(TLSStage)
    if tls is not None and tls.ok:
        return None
    if tcp is not None and not tcp.ok and _control_passed(case, "tcp"):
        return f"nothing answers there (TCP {clean_failure(tcp.failure)})"
    if tls is not None and not tls.ok and tls.failure in CERT_FAILURES:
        if _control_passed(case, "tls"):
            return f"the server there is not the host ({tls.failure}{cert_names(case)})"
    responses = _responses(case)
    if responses is not None:
        difference = content_difference(*responses)
        if difference is None:
            return None
        return f"the page there differs from the control's ({difference})"
    if all_bogon(addresses_of(obs.record(DNSStage))) and not any(
        map(is_bogon, addresses_of(ctl.record(DNSStage)))
    ):
        return "they are private or reserved addresses the control does not see"
    return None


def _control_passed(case: Case, stage: str) -> bool:
    """The control got past ``stage`` (it ran it and did not fail there or before)."""
    ctl = case.control
    if ctl is None or stage not in ctl.stages:
        return False
    return case.ctl_brk is None or case.ctl_brk.index > stage_order(stage)


def _responses(case: Case) -> tuple[HTTPStage, HTTPStage] | None:
    """(this vantage's, the control's) responses when both arrived and the control's is healthy."""
    ctl = case.control
    arrived = case.brk is None or case.brk.stage == "status"
    if ctl is None or not arrived or case.ctl_brk is not None:
        return None
    mine, theirs = case.obs.record(HTTPStage), ctl.record(HTTPStage)
    if mine is None or theirs is None:
        return None
    return mine, theirs


# --- 6. throttled ---------------------------------------------------------------------


def _throttled(case: Case) -> Judgement | None:
    """A throughput target whose sample is below ``throttle_ratio`` of the control's.

    Noise guard: the sample must have lasted at least ``MIN_SAMPLE_S`` or been
    cut by the deadline (``body_truncated``); a short burst says nothing.
    """
    rates = _throughput_pair(case)
    if rates is None:
        return None
    here, there = rates
    http = case.obs.record(HTTPStage)
    if http is None or not here < case.throttle_ratio * there or not _long_enough(http):
        return None
    return Judgement(
        Verdict.THROTTLED,
        f"Throughput was {rate_text(here)}, {percent_text(here / there)} of the control's "
        f"{rate_text(there)} (below the {percent_text(case.throttle_ratio)} threshold).",
    )


def _throughput_pair(case: Case) -> tuple[float, float] | None:
    """(this vantage's, the control's) throughput in bytes/s when both can be compared."""
    ctl = case.control
    if not case.obs.throughput or ctl is None or case.brk is not None or case.ctl_brk is not None:
        return None
    here_http, there_http = case.obs.record(HTTPStage), ctl.record(HTTPStage)
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
    return http.transfer_s is not None and http.transfer_s >= MIN_SAMPLE_S


# --- 7. anomaly -------------------------------------------------------------------------


def _anomaly(case: Case) -> Judgement | None:
    """Differs from a healthy control in a way that is not clearly blocking."""
    ctl = case.control
    if ctl is None or case.ctl_brk is not None:
        return None
    brk = case.brk
    if brk is not None and brk.stage == "status":
        return Judgement(
            Verdict.ANOMALY,
            f"{capitalised(what_failed(case.obs, brk))}, "
            f"while the control got {status_text(ctl.record(HTTPStage))}.",
        )
    mine, theirs = case.obs.record(HTTPStage), ctl.record(HTTPStage)
    if brk is not None or mine is None or theirs is None:
        return None
    diff = http_diff(mine, theirs)
    if diff is None:
        return None
    return Judgement(Verdict.ANOMALY, f"The response differs from the control's: {diff}.")


# --- 8. unreachable ---------------------------------------------------------------------


def _no_control_failure(case: Case) -> Judgement | None:
    """A failure with nothing to compare it with cannot be told from an outage."""
    brk = case.brk
    if case.control is not None or case.is_control or brk is None or brk.stage == "status":
        return None
    return Judgement(
        Verdict.UNREACHABLE,
        f"{capitalised(what_failed(case.obs, brk))}, and {case.why_no_control}, "
        "so blocking cannot be told from an outage.",
    )


# --- 9. ok -------------------------------------------------------------------------------


def _ok(case: Case) -> Judgement:
    """Reachable; the reason says what it was compared with and any caveat."""
    seen = reached_text(case.obs)
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


def _note(case: Case) -> str:
    """A caveat for an ok verdict: differing DNS answers served, or a too-short sample."""
    ctl = case.control
    if ctl is not None and answers_differ(case.obs.record(DNSStage), ctl.record(DNSStage)):
        if case.obs.record(TLSStage) is not None:
            how = "TLS is valid for the name"
        elif case.obs.record(HTTPStage) is not None:
            how = "the page is the same"
        else:
            how = "differing answers alone are not blocking (CDNs answer per region)"
        return f"; its DNS answers differ from the control's, but {how}"
    rates = _throughput_pair(case)
    http = case.obs.record(HTTPStage)
    if rates is not None and http is not None and rates[0] < case.throttle_ratio * rates[1]:
        return (
            f"; throughput {rate_text(rates[0])} vs the control's {rate_text(rates[1])}, "
            f"but the sample was too short to judge"
        )
    return ""


_RULES: tuple[Callable[[Case], Judgement | None], ...] = (
    _agent_down,
    _vantage_down,
    _dns_fingerprint,
    _dns_injection,
    _http_fingerprint,
    _measurement_error,
    _family_unavailable,
    _shared_failure,
    _invented_answers,
    _first_failing_stage,
    _throttled,
    _anomaly,
    _no_control_failure,
)


# --- observations ---------------------------------------------------------------------------


# --- sentences ---------------------------------------------------------------------------
