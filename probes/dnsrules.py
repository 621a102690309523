"""DNS answers that say something without a failure: names the control says do not exist,
answers made only of private or reserved addresses.

Rules of :mod:`probes.classify` (4b and the incomplete-record case), kept here so that
module stays one page of rules; each returns (verdict, reason) or None.
"""

from __future__ import annotations

from probes.observe import Case, addresses_of, all_bogon, says_no_such_name
from probes.reasons import listing, reached_text
from probes.records import DNSStage, Verdict
from probes.stages import STAGES

__all__ = ["invented_answers", "unconnected_bogons"]


def invented_answers(case: Case) -> tuple[Verdict, str] | None:
    """Addresses for a name that the control says does not exist (NXDOMAIN).

    A resolver that answers for a non-existent name invents the answer: an ISP
    sending typos to its search page (NXDOMAIN hijacking), or a censor pointing
    the name at a server of its own. It is never consistent with the control.
    Private or reserved addresses are the censor's mark (CONTRACT §2: a bogon
    the control does not see is evidence) -> ``dns_blocked``; a public one may
    be either -> ``anomaly``. A control that *failed* to resolve (SERVFAIL,
    timeout) says nothing about the name and is not this rule.
    """
    ctl = case.control
    if ctl is None or not says_no_such_name(ctl.record(DNSStage)):
        return None
    dns = case.obs.record(DNSStage)
    if dns is None or dns.skipped or not dns.ok:
        return None
    mine = addresses_of(dns)
    if not mine:
        return None
    answered = f"DNS answered {listing(mine)} for a name the control says does not exist (NXDOMAIN)"
    if all_bogon(mine):
        return (
            Verdict.DNS_BLOCKED,
            f"{answered}: private or reserved addresses invented by the resolver.",
        )
    return (
        Verdict.ANOMALY,
        f"{answered}: invented answers ({reached_text(case.obs)} there), from NXDOMAIN "
        "hijacking or a censor pointing the name at a server of its own.",
    )


def unconnected_bogons(case: Case) -> tuple[Verdict, str] | None:
    """A record that stops right after DNS answers made only of private or reserved
    addresses, where the control resolved the name to public ones.

    A measurer that will not connect to such an answer (OONI Probe does not dial
    loopback) leaves nothing after DNS; the answers still tell: they are the
    resolver's tampering -> ``dns_blocked``. (Where the control got such answers
    too, its record is as incomplete, and no incomplete control is compared with.)
    """
    dns = case.obs.record(DNSStage)
    if dns is None or not dns.ok or dns.skipped or not all_bogon(addresses_of(dns)):
        return None
    if any(name in case.obs.stages for name in STAGES.names if name != "dns"):
        return None  # it went on past DNS: not this case
    ctl = case.control.record(DNSStage) if case.control is not None else None
    if ctl is None or not ctl.ok or not ctl.addresses or all_bogon(ctl.addresses):
        return None
    return (
        Verdict.DNS_BLOCKED,
        f"DNS answered only {listing(addresses_of(dns))}, private or reserved addresses, "
        f"while the control resolved it to {listing(ctl.addresses)}; nothing was connected "
        "to them.",
    )
